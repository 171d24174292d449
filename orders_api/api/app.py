"""The composition point of the API: settings, database, publisher and routes, wired once per app."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from prometheus_client import CollectorRegistry

from orders_api import request_ids
from orders_api.adapters.postgres.database import bound_database_waits, engine_options, sqlalchemy_url
from orders_api.adapters.postgres.tables import metadata
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher, queue_declarations
from orders_api.api import docs, health, metrics, orders, request_id_hooks
from orders_api.api.commands import dead_letters_cli, reconcile_command
from orders_api.api.errors import register_error_handlers
from orders_api.api.on_call_gauges import on_call_gauges
from orders_api.api.services import IntakeItem, OrderServices
from orders_api.service_layer.group_commit import GroupCommit
from orders_api.service_layer.ordering import accept_orders
from orders_api.settings.base import load
from orders_api.settings.shared import Settings

#: Largest request body accepted; an order is a few hundred bytes.
MAX_BODY_BYTES = 16 * 1024
#: Most orders one group commit stores together; a process rarely has more requests in flight.
ORDERS_PER_COMMIT = 64

db = SQLAlchemy(metadata=metadata)


def create_app(settings: Settings | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the API for ``settings`` (the environment's by default).

    Nothing connects here: the database pool and the broker connection open on first use, in
    the process that serves requests (after gunicorn has forked its workers).
    """
    settings = settings or load(Settings)
    bound_database_waits(settings.db_reply_timeout_s)
    # pika logs every failed reconnect at ERROR; the publisher reports outages once, itself.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # No static folder: the only files served are the docs page's (orders_api.api.docs).
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=sqlalchemy_url(settings.database_url).render_as_string(hide_password=False),
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.config.from_prefixed_env()
    app.config.from_mapping(overrides or {})
    db.init_app(app)
    with app.app_context():
        # Flask-SQLAlchemy builds the engine in init_app (it connects on first use). The group
        # commit's and the metrics' threads have no app context, so everything shares this one.
        engine: sa.Engine = db.engine
    registry = CollectorRegistry()
    api_metrics = metrics.ApiMetrics(registry)

    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        queue_declarations(settings.placement_queue),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=settings.confirm_timeout_s,
        observer=api_metrics,
    )
    atexit.register(publisher.close)
    placements = PlacementPublisher(publisher, settings.placement_queue)

    def unit_of_work() -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(engine, on_outcome_unknown=api_metrics.commit_outcome_unknown)

    def accept(batch: list[IntakeItem]) -> None:
        # Each order's placement message carries the id of its own request.
        with request_ids.bind_orders({item.order.id: item.request_id for item in batch if item.request_id}):
            accept_orders([item.order for item in batch], unit_of_work(), placements)

    app.extensions["orders"] = OrderServices(
        unit_of_work=unit_of_work,
        placements=placements,
        intake=GroupCommit(
            accept,
            max_batch=ORDERS_PER_COMMIT,
            wait_s=settings.group_commit_wait_s,
            on_batch=api_metrics.batch_processed,
        ),
    )
    app.extensions["orders.publisher"] = publisher
    app.extensions["orders.settings"] = settings
    request_id_hooks.init_app(app)
    app.register_blueprint(orders.blueprint)
    health.init_app(app)
    docs.init_app(app)
    register_error_handlers(app)
    metrics.init_app(app, registry, on_call_gauges(settings, engine))
    app.cli.add_command(reconcile_command)
    app.cli.add_command(dead_letters_cli)
    return app
