"""Integration fixtures: the Flask app, a Dramatiq worker and direct access to this run's real services."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import dramatiq
import psycopg2
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask import Flask
from flask.testing import FlaskClient

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher, queue_declarations
from orders_api.api.app import create_app, db
from orders_api.service_layer.placement import Exchange
from orders_api.settings.shared import Settings
from tests.settings_env import workers_on
from workers.bootstrap import bootstrap, logged_exchange

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

    Retries back off from 20 ms, and claims last 2 s, so that retry and takeover paths finish
    in a moment (a worker takes over an expired claim only once it has reached the database for
    a whole lease).
    """
    started: list[tuple[RabbitmqBroker, dramatiq.Worker]] = []

    def start(exchange: Exchange = logged_exchange, **overrides: int) -> RabbitmqBroker:
        options: dict[str, int] = {
            "placement_min_backoff_ms": 20,
            "placement_max_backoff_ms": 200,
            "claim_lease_ms": 2000,
            **overrides,
        }
        broker = bootstrap(workers_on(settings, worker_threads=4, **options), exchange)
        assert isinstance(broker, RabbitmqBroker)
        worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
        worker.start()
        started.append((broker, worker))
        return broker

    yield start
    for broker, worker in started:
        worker.stop()
        broker.close()


@pytest.fixture
def exchange_outcomes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Script the stand-in's availability draws (``>= 0.9`` fails) and skip its 0.5 s sleep."""
    monkeypatch.setattr("exchange_simulator.stock_exchange.time.sleep", lambda _seconds: None)

    def script(*draws: float, then: float = 0.0) -> None:
        remaining = list(draws)
        lock = threading.Lock()

        def draw() -> float:
            with lock:
                return remaining.pop(0) if remaining else then

        monkeypatch.setattr("exchange_simulator.stock_exchange.random.random", draw)

    script()
    return script


@pytest.fixture
def placements(settings: Settings) -> Iterator[PlacementPublisher]:
    """Publish placement requests the way the API does, for orders the test controls."""
    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        queue_declarations(settings.placement_queue),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=settings.confirm_timeout_s,
    )
    yield PlacementPublisher(publisher, settings.placement_queue)
    publisher.close()


@pytest.fixture
def unit_of_work(settings: Settings) -> Iterator[Callable[[], SqlAlchemyUnitOfWork]]:
    """Units of work on an engine of the test's own, for storing orders outside the API."""
    engine = create_engine(settings, pool_size=2)
    yield lambda: SqlAlchemyUnitOfWork(engine)
    engine.dispose()
