"""A COMMIT whose connection is lost: the caller learns whether it happened before anyone answers.

Real PostgreSQL. A deferred constraint trigger, created for these tests only and matching one
instrument only, holds a transaction inside its COMMIT, so that the client's reply deadline
(``DB_REPLY_TIMEOUT_S``, shortened here) cuts the connection exactly there.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from orders_api.adapters.database import bound_database_waits, create_engine
from orders_api.config import Settings
from orders_api.service_layer.ordering import utc_now
from orders_api.service_layer.unit_of_work import SqlAlchemyUnitOfWork, transaction_committed
from tests.integration.checks import order_row
from tests.unit.fakes import make_order

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
    yield dataclasses.replace(settings, db_reply_timeout_s=REPLY_TIMEOUT_S)
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


@pytest.mark.usefixtures("slow_commits")
def test_a_commit_cut_off_before_it_took_effect_raises_and_leaves_nothing_stored(
    short_reply_deadline: Settings, database: psycopg2.extensions.connection
) -> None:
    engine = create_engine(short_reply_deadline)
    order = dataclasses.replace(
        make_order(order_id=uuid.uuid4(), created_at=utc_now()), instrument=SLOW_INSTRUMENT
    )
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.DBAPIError), SqlAlchemyUnitOfWork(engine) as uow:
            uow.orders.add(order)
            uow.commit()
    finally:
        engine.dispose()

    # The lost transaction's backend was ended rather than waited for, well before it would
    # have finished its COMMIT; had it been left running, the row would appear once it did.
    assert time.monotonic() - started < SLOW_COMMIT_S
    time.sleep(max(0.0, started + SLOW_COMMIT_S + 1 - time.monotonic()))
    assert order_row(database, str(order.id)) is None


def _open_transaction(settings: Settings) -> tuple[psycopg2.extensions.connection, str]:
    connection = psycopg2.connect(settings.database_url, connect_timeout=5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        row = cursor.fetchone()
    assert row is not None
    return connection, str(row[0])


def test_the_outcome_of_a_transaction_is_looked_up_once_it_is_final(settings: Settings) -> None:
    engine = create_engine(settings)
    committed_connection, committed = _open_transaction(settings)
    committed_connection.commit()
    aborted_connection, aborted = _open_transaction(settings)
    aborted_connection.rollback()
    # A transaction whose client is gone but whose backend runs on, as after a partition.
    running_connection, running = _open_transaction(settings)
    try:
        assert transaction_committed(engine, committed, wait_s=5) is True
        assert transaction_committed(engine, aborted, wait_s=5) is False
        assert transaction_committed(engine, running, wait_s=5) is False
        with pytest.raises(psycopg2.OperationalError):  # its backend was terminated
            running_connection.commit()
    finally:
        for connection in (committed_connection, aborted_connection, running_connection):
            connection.close()
        engine.dispose()
