"""Fixtures shared by every layer: a database and a RabbitMQ vhost of this run's own.

Each run creates ``orders_test_<id>`` in PostgreSQL and a vhost of the same name in RabbitMQ,
and drops both at the end, so runs never see each other's data. A missing service fails the
run loudly instead of skipping tests.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg2
import pytest
import requests
import sqlalchemy as sa
from dramatiq.common import dq_name, xq_name
from psycopg2 import sql

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.migrate import upgrade
from orders_api.adapters.rabbitmq.placement_queue import policy_name
from orders_api.adapters.rabbitmq.queue_topology import set_up_placement_queues
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import MANAGEMENT_URL, RabbitAdmin

#: The PostgreSQL server the tests use; each run gets its own database on it.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
#: The RabbitMQ server the tests use; each run gets its own vhost on it.
RABBITMQ_HOST_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


@pytest.fixture(scope="session")
def run_name() -> str:
    """A name unique to this test run, for its database and its vhost."""
    return f"orders_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def database_url(run_name: str) -> Iterator[str]:
    """A freshly migrated database of this run's own, dropped at the end."""
    url = f"{POSTGRES_URL}/{run_name}"
    try:
        upgrade(url)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {error}", pytrace=False)
    yield url
    connection = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(run_name)))
    connection.close()


@pytest.fixture(scope="session")
def rabbit(run_name: str) -> Iterator[RabbitAdmin]:
    """A vhost of this run's own, deleted with everything in it at the end."""
    admin = RabbitAdmin(run_name)
    try:
        admin.create_vhost()
    except requests.RequestException as error:
        pytest.fail(
            f"RabbitMQ's management API is not reachable at {MANAGEMENT_URL} ({error}); "
            "run scripts/ensure-services.sh",
            pytrace=False,
        )
    yield admin
    admin.delete_vhost()


@pytest.fixture(scope="session")
def rabbitmq_url(rabbit: RabbitAdmin) -> str:
    """The AMQP URL of this run's vhost."""
    return f"{RABBITMQ_HOST_URL}/{quote(rabbit.vhost, safe='')}"


@pytest.fixture
def settings(
    database_url: str, rabbitmq_url: str, rabbit: RabbitAdmin, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings for this run's database and vhost, with a placement queue of this test's own.

    The queue is named after the test, in the characters Dramatiq allows in queue names. It is
    set up as ``make migrate`` sets up the service's (``orders-broker-setup``): its policies
    put, its three quorum queues declared. They are deleted after the test, policies and all:
    each quorum queue holds file descriptors in RabbitMQ, and a run's hundreds of them
    exhausted the broker's (1,024 here), which then stopped accepting connections for seconds
    at a time.
    """
    test_name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:80]
    queue = f"order-placement.{test_name}.{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        placement_queue=queue,
        rabbitmq_management_url=MANAGEMENT_URL,
    )
    set_up_placement_queues(settings)
    yield settings
    rabbit.delete_queues_if_present(queue, dq_name(queue), xq_name(queue))
    rabbit.delete_policies_if_present(
        *(policy_name(name) for name in (queue, dq_name(queue), xq_name(queue)))
    )


@pytest.fixture
def plain_settings(database_url: str, rabbitmq_url: str) -> Settings:
    """This run's database and vhost, with no placement queue set up: for tests of the execution
    feed, which use queues of their own (a module may override it, e.g. with ``own_database_url``)."""
    return Settings(database_url=database_url, rabbitmq_url=rabbitmq_url)


@pytest.fixture
def engine(plain_settings: Settings) -> Iterator[sa.Engine]:
    """An engine on ``plain_settings``' database, disposed of after the test."""
    engine = create_engine(plain_settings, pool_size=2, application_name="orders-test")
    yield engine
    engine.dispose()


@pytest.fixture
def own_database_url(run_name: str) -> Iterator[str]:
    """A freshly migrated database of one test's own, dropped after it: for a test whose process
    reads every row of a kind (the feed simulator reports on every placed order), where the
    run's shared database holds other tests' rows."""
    name = f"{run_name}_{uuid.uuid4().hex[:8]}"
    url = f"{POSTGRES_URL}/{name}"
    upgrade(url)
    yield url
    connection = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()
