"""A 201 is on the synchronous standby, or it is not a 201: lost COMMITs under synchronous replication.

A COMMIT waits for the synchronous standby after its record is in the primary's WAL. Cut off
there, it is committed on the primary alone, and answering it ``201`` would lose the order at
the next failover. The first test holds COMMITs in that wait on a primary whose standby never
comes (``synchronous_standby_names`` names nobody) and checks that a lost reply is neither turned
into a commit (by ending the waiting backend, which PostgreSQL then leaves committed locally)
nor answered as one, whether the statement timeout or the reply deadline comes first. The
scenario streams orders through the real API and workers on a primary with a real synchronous
standby, freezes the standby (SIGSTOP) so that COMMITs wait, kills both machines (SIGKILL),
promotes the standby on the primary's port, and counts the ``201`` orders missing from it: none
may be.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import requests
import sqlalchemy as sa

from orders_api.adapters.postgres.commit_outcome import CommitOutcomeUnknownError
from orders_api.adapters.postgres.database import bound_database_waits, create_engine
from orders_api.adapters.postgres.migrate import upgrade
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.clock import utc_now
from orders_api.domain import Order, OrderType, Side
from orders_api.idempotency import IdempotentRequest
from orders_api.service_layer.claims import ClaimKeeper
from orders_api.service_layer.ordering import SubmitOrder, submit_order
from orders_api.service_layer.placement import ExchangeAnswer, place_on_exchange, record_answer
from orders_api.settings.shared import Settings
from orders_api.timeout_rules import COMMIT_OUTCOME_WAIT_S
from tests.faults.conftest import FAULT_RUN
from tests.faults.harness import FAULT_AFTER_ANSWERS, FaultRun, new_fault_run
from tests.faults.ledger import Ledger, some
from tests.faults.replication import ReplicatedPostgres, replicated_postgres
from tests.faults.servers import PrivateRabbitMQ, private_postgres
from tests.prometheus_samples import parse_samples
from tests.unit.fakes import make_order

pytestmark = pytest.mark.faults

#: The client's reply deadline in the first test: below the default statement timeout (3 s).
REPLY_TIMEOUT_S = 1.0
#: Seconds the standby stays frozen before both machines die: longer than a COMMIT's reply
#: deadline (5 s) plus the lookup's bound (8 s), so that lookups give up while it is frozen.
STANDBY_FROZEN_S = 15.0
#: Seconds each request of the scenario may take: longer than a lost COMMIT's reply deadline,
#: lookup and last attempt together, so that the client hears the API's answer.
CLIENT_TIMEOUT_S = 30.0
#: Seconds of load after the promotion: the API must accept orders on the new primary.
LOAD_AFTER_FAILOVER_S = 15.0
#: Bounds the stream; it stops :data:`LOAD_AFTER_FAILOVER_S` after the promotion.
LOAD_CAP_S = 90.0
#: The API's counter of orders answered 500 with their COMMIT's outcome unknown.
OUTCOME_UNKNOWN_METRIC = "orders_commit_outcome_unknown_total"


@pytest.fixture
def primary_alone() -> Iterator[str]:
    """A migrated database on a primary with no synchronous standby yet. Its URL."""
    with private_postgres() as server:
        database_url = f"{server.url}/lost_commits"
        upgrade(database_url)
        yield database_url


@pytest.fixture
def never_replicating(primary_alone: str) -> str:
    """A migrated database on a primary whose synchronous standby never connects: every writing
    COMMIT waits for it. Its URL."""
    _require_a_standby_that_never_comes(primary_alone)
    return primary_alone


@pytest.fixture
def bounded_waits() -> Iterator[None]:
    """Every database wait of this process bounded by :data:`REPLY_TIMEOUT_S` for the test."""
    previous = psycopg2.extensions.get_wait_callback()
    bound_database_waits(REPLY_TIMEOUT_S)
    yield
    psycopg2.extensions.set_wait_callback(previous)


def _require_a_standby_that_never_comes(database_url: str) -> None:
    _query(database_url, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    _query(database_url, "SELECT pg_reload_conf()")


@pytest.fixture
def replicated_run(
    rabbitmq_node: PrivateRabbitMQ, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[FaultRun, ReplicatedPostgres]]:
    """A scenario's run on a primary with a synchronous standby, both its own."""
    with replicated_postgres() as pair:
        run = new_fault_run(pair.primary, rabbitmq_node, tmp_path, f"faults_sync_{uuid.uuid4().hex[:6]}")
        pair.wait_until_synchronous()  # the new database is on the standby too
        request.node.stash[FAULT_RUN] = run
        yield run, pair


def _query(database_url: str, statement: str) -> list[tuple[object, ...]]:
    with closing(psycopg2.connect(database_url, connect_timeout=5)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.mark.parametrize("statement_timeout_ms", [300, 3000], ids=["statement_timeout_first", "reply_first"])
def test_a_commit_waiting_for_the_standby_is_neither_ended_nor_answered_as_committed(
    never_replicating: str, statement_timeout_ms: int
) -> None:
    database_url = never_replicating
    # Out of order on purpose (each deadline fires first in one case): built without the rules.
    settings = Settings.model_construct(
        database_url=database_url,
        db_reply_timeout_s=REPLY_TIMEOUT_S,
        statement_timeout_ms=statement_timeout_ms,
    )
    previous = psycopg2.extensions.get_wait_callback()
    bound_database_waits(REPLY_TIMEOUT_S)
    engine = create_engine(settings)
    order = make_order(order_id=uuid.uuid4(), created_at=utc_now())
    started = time.monotonic()
    try:
        with pytest.raises(CommitOutcomeUnknownError), SqlAlchemyUnitOfWork(engine) as uow:
            uow.orders.add(order)
            uow.commit()
    finally:
        engine.dispose()
        psycopg2.extensions.set_wait_callback(previous)
    assert time.monotonic() - started < REPLY_TIMEOUT_S + COMMIT_OUTCOME_WAIT_S + 8

    # Neither ended nor cancelled: the COMMIT still waits for the standby, the order unseen.
    waiting = _query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
    assert waiting == [(1,)]
    assert _query(database_url, f"SELECT count(*) FROM orders WHERE id = '{order.id}'") == [(0,)]
    # Once no standby is required, that COMMIT completes: it was waited for, never lost.
    _query(database_url, "ALTER SYSTEM SET synchronous_standby_names = ''")
    _query(database_url, "SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while _query(database_url, f"SELECT count(*) FROM orders WHERE id = '{order.id}'") != [(1,)]:
        assert time.monotonic() < deadline, "the waiting COMMIT did not complete once released"
        time.sleep(0.1)


def _store(database_url: str, order: Order) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.orders.add(order)
            uow.commit()
    finally:
        engine.dispose()


def _worker_engine(database_url: str) -> sa.Engine:
    """An engine as the workers have it: autocommit, replies bounded (with :func:`bounded_waits`).

    Its settings skip the rules: a reply deadline below the statement timeout, so that a COMMIT's
    wait for the standby is given up on first.
    """
    return create_engine(
        Settings.model_construct(database_url=database_url, db_reply_timeout_s=REPLY_TIMEOUT_S),
        autocommit=True,
    )


def _placed_on_the_primary(database_url: str, order_id: uuid.UUID) -> bool:
    return _query(database_url, f"SELECT status FROM orders WHERE id = '{order_id}'") == [("placed",)]


def _cancel_the_waits_for_the_standby(database_url: str) -> None:
    """Cancel every COMMIT waiting for the standby, as an operator clearing stuck sessions would.

    PostgreSQL then leaves each committed on the primary alone and visible there: the state in
    which a reader must not act on what it sees (a fast shutdown or a restart of the primary
    leaves it so too).
    """
    _query(database_url, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
    deadline = time.monotonic() + 10
    while _query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") != [
        (0,)
    ]:
        assert time.monotonic() < deadline, "a COMMIT still waits for the standby after its cancel"
        time.sleep(0.1)


@pytest.mark.usefixtures("bounded_waits")
def test_an_answer_recorded_only_on_the_primary_is_not_taken_for_recorded(primary_alone: str) -> None:
    """The holder's record of a placement waits for the standby, its reply lost, and is cancelled:
    committed and visible on the primary alone. The courier's copy of the answer must not be
    dropped as recorded before: a failover would lose the record, and the order stay pending."""
    database_url = primary_alone
    claimed = make_order(order_id=uuid.uuid4(), created_at=utc_now(), attempts=1)
    _store(database_url, claimed)
    _require_a_standby_that_never_comes(database_url)
    answer = ExchangeAnswer(claimed.id, claimed.attempts, placed_at=utc_now())
    engine = _worker_engine(database_url)
    try:
        with pytest.raises(sa.exc.DBAPIError):
            record_answer(answer, SqlAlchemyUnitOfWork(engine))  # the holder's record
        _cancel_the_waits_for_the_standby(database_url)
        assert _placed_on_the_primary(database_url, claimed.id)
        with pytest.raises(sa.exc.DBAPIError):
            record_answer(answer, SqlAlchemyUnitOfWork(engine))  # the courier's copy
    finally:
        engine.dispose()


@pytest.mark.usefixtures("bounded_waits")
def test_a_message_for_an_order_placed_only_on_the_primary_is_not_dropped(primary_alone: str) -> None:
    """A repeated placement message whose order reads ``placed`` on the primary alone (the record's
    wait for the standby cancelled) waits for the standby too, rather than being dropped."""
    database_url = primary_alone
    claimed = make_order(order_id=uuid.uuid4(), created_at=utc_now(), attempts=1)
    _store(database_url, claimed)
    _require_a_standby_that_never_comes(database_url)
    engine = _worker_engine(database_url)
    claims = ClaimKeeper(lambda: SqlAlchemyUnitOfWork(engine), timedelta(seconds=40))
    exchange_calls: list[Order] = []
    try:
        with pytest.raises(sa.exc.DBAPIError):
            record_answer(ExchangeAnswer(claimed.id, 1, placed_at=utc_now()), SqlAlchemyUnitOfWork(engine))
        _cancel_the_waits_for_the_standby(database_url)
        assert _placed_on_the_primary(database_url, claimed.id)
        with pytest.raises(sa.exc.DBAPIError):
            place_on_exchange(claimed.id, SqlAlchemyUnitOfWork(engine), exchange_calls.append, claims=claims)
        assert exchange_calls == []
    finally:
        engine.dispose()


@pytest.mark.usefixtures("bounded_waits")
def test_a_repeat_with_the_same_key_is_not_answered_before_the_first_commit_is_durable(
    primary_alone: str,
) -> None:
    """The first request's COMMIT waits for the standby, its reply lost (a 500 of unknown outcome),
    then its wait is cancelled: the order is on the primary alone. The retry with the same key
    must not answer ``201`` for it while a failover could still lose it."""
    database_url = primary_alone
    _require_a_standby_that_never_comes(database_url)
    engine = create_engine(
        Settings.model_construct(database_url=database_url, db_reply_timeout_s=REPLY_TIMEOUT_S)
    )
    command = SubmitOrder(
        type=OrderType.MARKET, side=Side.BUY, instrument="US0378331005", limit_price=None, quantity=1
    )
    request = IdempotentRequest(key=f"standby-{uuid.uuid4()}", fingerprint="the same request")
    placements = _NoBroker()
    try:
        with pytest.raises(CommitOutcomeUnknownError):
            submit_order(command, SqlAlchemyUnitOfWork(engine), placements, idempotency=request)
        _cancel_the_waits_for_the_standby(database_url)
        with pytest.raises((CommitOutcomeUnknownError, sa.exc.DBAPIError)):
            submit_order(command, SqlAlchemyUnitOfWork(engine), placements, idempotency=request)
    finally:
        engine.dispose()


class _NoBroker:
    """Placement requests that go nowhere: this test is about the database's answer alone."""

    def request_placement(self, order_id: uuid.UUID) -> None:
        """Accept the request; the order is never placed in this test."""


def test_no_201_is_lost_when_the_primary_dies_while_its_synchronous_standby_is_frozen(
    replicated_run: tuple[FaultRun, ReplicatedPostgres], report_ledger: list[str]
) -> None:
    run, pair = replicated_run
    with run.service(run.options()) as service:
        with run.load(service, LOAD_CAP_S, request_timeout_s=CLIENT_TIMEOUT_S) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with run.fault():
                with pair.standby.frozen():
                    time.sleep(STANDBY_FROZEN_S)
                    pair.kill_both()
                pair.promote_standby()
            load.stop_after(LOAD_AFTER_FAILOVER_S)
        run.wait_until_settled(service)
        samples = parse_samples(requests.get(f"{service.base_url}/metrics", timeout=10).text)
    ledger = run.ledger("sync standby frozen 15 s, primary + standby SIGKILL, standby promoted", service)
    report_ledger.append(ledger.row())
    counted = samples.get((OUTCOME_UNKNOWN_METRIC, frozenset()), 0.0)
    print(f"\n{ledger.row()}\n{ledger.details()}\n{OUTCOME_UNKNOWN_METRIC}: {counted:g}")

    check_failover(ledger, counted)


def check_failover(ledger: Ledger, counted: float) -> None:
    """What a failover must keep: every 201 on the new primary and placed, every 500 honest and counted."""
    assert not ledger.missing, (
        f"{len(ledger.missing)} orders answered 201 are missing on the promoted standby:"
        f" {some(ledger.missing)}"
    )
    assert not ledger.not_placed, f"orders answered 201 but not placed: {some(ledger.not_placed)}"
    assert ledger.client_errors == 0, "every order the stream sends is valid"
    assert not ledger.refused_yet_stored_unannounced, (
        f"requests answered 500 whose order exists: {some(ledger.refused_yet_stored_unannounced)}"
    )
    assert not ledger.unanswered_yet_stored, (
        f"requests given up on by the client, yet stored: {some(ledger.unanswered_yet_stored)}"
    )
    assert not ledger.unexplained, f"rows no request explains: {some(ledger.unexplained)}"
    assert counted == len(ledger.outcome_unknown), "the counter and the ERROR lines disagree"
    assert ledger.server_errors > 0, "no COMMIT waited for the frozen standby: no fault was injected"
    assert ledger.created_after_fault > 0, "no order was accepted on the promoted standby"
    assert ledger.stop_failure is None, ledger.stop_failure
