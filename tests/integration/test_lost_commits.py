"""A COMMIT whose connection is lost: the caller learns whether it happened before anyone answers.

A COMMIT still running is waited for, never ended; one that never reached its backend is ended;
the outcome is read from the orders the transaction inserted, and a lookup that cannot tell
within its bound says so (logged and counted). The synchronous standby's part is in
``tests/faults/test_synchronous_standby.py``, which needs servers of its own.

Real PostgreSQL. A deferred constraint trigger, created for these tests only and matching one
instrument only, holds a transaction inside its COMMIT, so that the client's reply deadline
(``DB_REPLY_TIMEOUT_S``, shortened here) cuts the connection exactly there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator, Sequence

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from orders_api.adapters.postgres import commit_outcome
from orders_api.adapters.postgres.commit_outcome import CommitOutcomeUnknownError, LostCommit
from orders_api.adapters.postgres.database import bound_database_waits, create_engine
from orders_api.adapters.postgres.repository import SqlAlchemyOrderRepository
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.clock import utc_now
from orders_api.domain import Order
from orders_api.settings.shared import Settings
from tests.integration.checks import order_row
from tests.unit.fakes import make_order
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

#: Orders on this instrument take this long to commit (the trigger sleeps at COMMIT).
SLOW_INSTRUMENT = "XS0000000SLO"
SLOW_COMMIT_S = 4
#: The client's reply deadline in these tests: far below the slow COMMIT.
REPLY_TIMEOUT_S = 1.0


@pytest.fixture
def short_reply_deadline(settings: Settings) -> Iterator[Settings]:
    """Settings with a 1 s reply deadline, installed for the test and the previous one restored after."""
    previous = psycopg2.extensions.get_wait_callback()
    bound_database_waits(REPLY_TIMEOUT_S)
    yield settings.model_copy(update={"db_reply_timeout_s": REPLY_TIMEOUT_S})
    psycopg2.extensions.set_wait_callback(previous)


@pytest.fixture
def slow_commits(database: psycopg2.extensions.connection) -> Iterator[None]:
    """A deferred trigger that makes the COMMIT of an order on :data:`SLOW_INSTRUMENT` sleep."""
    with database.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.instrument = '{SLOW_INSTRUMENT}' THEN PERFORM pg_sleep({SLOW_COMMIT_S}); END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER sleep_at_commit AFTER INSERT ON orders
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_at_commit();
            """
        )
    yield
    with database.cursor() as cursor:
        cursor.execute("DROP TRIGGER sleep_at_commit ON orders; DROP FUNCTION sleep_at_commit()")


def _slow_order() -> Order:
    return dataclasses.replace(
        make_order(order_id=uuid.uuid4(), created_at=utc_now()), instrument=SLOW_INSTRUMENT
    )


@pytest.mark.usefixtures("slow_commits")
def test_a_commit_cut_off_while_it_runs_is_waited_for_not_ended_and_kept(
    short_reply_deadline: Settings, database: psycopg2.extensions.connection
) -> None:
    engine = create_engine(short_reply_deadline)
    order = _slow_order()
    started = time.monotonic()
    try:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.orders.add(order)
            uow.commit()  # its reply is lost after 1 s; the lookup waits for the COMMIT to end
    finally:
        engine.dispose()

    # Ending a backend in its COMMIT could leave it committed on the primary alone (past the
    # commit record, waiting for a standby): it is waited for, and its order kept.
    assert time.monotonic() - started >= SLOW_COMMIT_S
    assert order_row(database, str(order.id)) is not None


@pytest.mark.usefixtures("slow_commits")
def test_a_commit_still_running_past_the_bound_is_unknown_counted_and_logged_not_ended(
    short_reply_deadline: Settings, database: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(short_reply_deadline)
    order = _slow_order()
    told: list[Sequence[uuid.UUID]] = []
    try:
        with (
            pytest.raises(CommitOutcomeUnknownError),
            SqlAlchemyUnitOfWork(engine, on_outcome_unknown=told.append, outcome_wait_s=1.0) as uow,
        ):
            uow.orders.add(order)
            uow.commit()
    finally:
        engine.dispose()

    assert told == [(order.id,)]
    [error] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert error.getMessage().startswith(f"COMMIT outcome unknown for orders {order.id}")
    # Not ended: the COMMIT runs on and takes effect, as a 500 "of unknown outcome" allows.
    wait_until(
        lambda: order_row(database, str(order.id)) is not None,
        timeout_s=SLOW_COMMIT_S + 2,
        what="the COMMIT left running to take effect",
    )


def _open_transaction(engine: sa.Engine) -> tuple[sa.Connection, LostCommit]:
    """A transaction that inserted one order, not committed: the commit a lookup is asked about."""
    connection = engine.connect()
    order = make_order(order_id=uuid.uuid4(), created_at=utc_now())
    SqlAlchemyOrderRepository(connection).add(order)
    xid = connection.execute(sa.text("SELECT pg_current_xact_id()::text")).scalar_one()
    pid = connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    return connection, LostCommit(pid, xid, (order.id,))


def test_the_outcome_of_a_commit_is_learnt_from_the_orders_it_inserted(settings: Settings) -> None:
    engine = create_engine(settings)
    committed_connection, committed = _open_transaction(engine)
    committed_connection.commit()
    aborted_connection, aborted = _open_transaction(engine)
    aborted_connection.rollback()
    # A transaction whose COMMIT never reached its backend, as after a partition: it is idle.
    idle_connection, never_sent = _open_transaction(engine)
    try:
        assert commit_outcome.committed(engine, committed, wait_s=5) is True
        assert commit_outcome.committed(engine, aborted, wait_s=5) is False
        assert commit_outcome.committed(engine, never_sent, wait_s=5) is False
        with pytest.raises(sa.exc.OperationalError):  # its backend was ended, so it can never commit
            idle_connection.commit()
        # A transaction id says nothing after a failover; a commit with no order cannot be told.
        with pytest.raises(CommitOutcomeUnknownError):
            commit_outcome.committed(engine, dataclasses.replace(committed, order_ids=()), wait_s=5)
    finally:
        for connection in (committed_connection, aborted_connection, idle_connection):
            connection.close()
        engine.dispose()
