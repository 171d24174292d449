"""What one ``orders-applier`` applies per second, from full partition queues, on this machine.

Fills the partition queues first (stories of ``--orders`` orders, a tenth of the reports
repeated, shuffled), then starts one applier in this process and times it until the ledger holds
every distinct report: the rate is the applier's alone, not the publisher's. The time to publish
the same reports with confirms (one process, batches of 1,000) is printed beside it as the
baseline of the ingestor's side. Uses a scratch database and partition queues of its own on the
default vhost, removed at the end; prints one JSON line::

    python -m bench.applier_rate --orders 10000
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pika
import psycopg2
import sqlalchemy as sa
from psycopg2 import sql

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.migrate import upgrade
from orders_api.adapters.rabbitmq.connections import node_urls
from orders_api.adapters.rabbitmq.execution_queues import execution_queue_declarations
from orders_api.execution_feed.applier import Applier
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.base import load
from orders_testkit.execution_reports import count_stored, feed_of, publish_reports, store_orders, story_of


def main() -> None:
    """Measure and print ``{"reports", "publish_per_s", "apply_per_s", ...}`` as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    arguments = parser.parse_args()
    name = f"orders_bench_applier_{uuid.uuid4().hex[:8]}"
    server = urlsplit(load(ApplierSettings).database_url)
    database_url = urlunsplit(server._replace(path=f"/{name}"))
    settings = load(
        ApplierSettings,
        database_url=database_url,
        execution_queue_prefix=f"bench-executions.{name}",
        execution_partitions=arguments.partitions,
    )
    upgrade(database_url)
    engine = create_engine(settings, pool_size=2, application_name="orders-bench")
    try:
        result = _measure(settings, engine, arguments.orders)
    finally:
        engine.dispose()
        _drop_queues(settings)
        _drop_database(urlunsplit(server._replace(path="/postgres")), name)
    print(json.dumps(result))


def _measure(settings: ApplierSettings, engine: sa.Engine, orders: int) -> dict[str, int]:
    rng = random.Random(1)
    stored = store_orders(engine, orders, quantity=1000)
    stories = [story_of(order, rng) for order in stored]
    feed = feed_of(stories, rng, repeats=0.1)
    distinct = sum(len(story) for story in stories)
    started = time.monotonic()
    publish_reports(
        settings.rabbitmq_url, settings.execution_queue_prefix, settings.execution_partitions, feed
    )
    published_s = time.monotonic() - started
    applier = Applier(settings, engine)
    thread = threading.Thread(target=applier.run)
    ids = [order.id for order in stored]
    started = time.monotonic()
    thread.start()
    try:
        while count_stored(engine, ids) < distinct:
            time.sleep(0.05)
        applied_s = time.monotonic() - started
    finally:
        applier.stop()
        thread.join()
    return {
        "orders": orders,
        "reports": len(feed),
        "distinct_reports": distinct,
        "publish_per_s": round(len(feed) / published_s),
        "apply_per_s": round(len(feed) / applied_s),
        "apply_distinct_per_s": round(distinct / applied_s),
    }


def _drop_queues(settings: ApplierSettings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(node_urls(settings.rabbitmq_url)[0]))
    try:
        channel = connection.channel()
        for declaration in execution_queue_declarations(
            settings.execution_queue_prefix, settings.execution_partitions
        ):
            channel.queue_delete(declaration.name)
    finally:
        connection.close()


def _drop_database(maintenance_url: str, name: str) -> None:
    connection = psycopg2.connect(maintenance_url, connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


if __name__ == "__main__":
    main()
