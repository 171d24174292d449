"""Integration fixtures: the Flask app and a Dramatiq worker, wired to this run's real services."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dramatiq
import psycopg2
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask import Flask
from flask.testing import FlaskClient

from orders_api.adapters.confirmed_publisher import ConfirmedPublisher
from orders_api.config import Settings
from orders_api.entrypoints.app import create_app, db
from orders_api.service_layer.placement import Exchange
from workers.bootstrap import bootstrap, logged_exchange
from workers.settings import WorkerSettings

#: Milliseconds a queue join may take before the test fails instead of hanging.
JOIN_TIMEOUT_MS = 20_000


@pytest.fixture
def client_for() -> Iterator[Callable[[Settings], FlaskClient]]:
    """Make test clients of apps built for given settings; their connections close after the test."""
    apps: list[Flask] = []

    def make(settings: Settings) -> FlaskClient:
        app = create_app(settings, {"TESTING": True})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        publisher: ConfirmedPublisher = app.extensions["orders.publisher"]
        publisher.close()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def client(client_for: Callable[[Settings], FlaskClient], settings: Settings) -> FlaskClient:
    return client_for(settings)


@pytest.fixture
def database(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    """A plain connection for checking what was really committed, outside the code under test."""
    connection = psycopg2.connect(settings.database_url, connect_timeout=5)
    connection.autocommit = True
    yield connection
    connection.close()


StartWorker = Callable[..., RabbitmqBroker]


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[StartWorker]:
    """Start an in-process Dramatiq worker on this test's queue; stopped at the end of the test.

    Retries back off from 20 ms so that retry paths finish in a moment.
    """
    started: list[tuple[RabbitmqBroker, dramatiq.Worker]] = []

    def start(exchange: Exchange = logged_exchange, **overrides: int) -> RabbitmqBroker:
        options: dict[str, int] = {"min_backoff_ms": 20, "max_backoff_ms": 200, **overrides}
        broker = bootstrap(WorkerSettings(shared=settings, threads=4, **options), exchange)
        assert isinstance(broker, RabbitmqBroker)
        worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
        worker.start()
        started.append((broker, worker))
        return broker

    yield start
    for broker, worker in started:
        worker.stop()
        broker.close()
