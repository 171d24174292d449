"""Stand-in execution reports for tests and the applier's benchmark: stored orders, their stories, the queues.

Each order gets a story as the feed's contract tells it (accepted, partial fills, then a fill or a
cancel; or a rejection), with prices of 4 decimals; :func:`feed_of` then repeats and shuffles
the reports as a real feed does, and :func:`publish_reports` hands them to the partition queues
as the ingestor would (each partition's reports in feed order, several to a message, confirmed).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from exchange_simulator.feed.durable_log import the_only_log
from orders_api.adapters.postgres.repository import SqlAlchemyOrderRepository
from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher, OutgoingMessage, PublishError
from orders_api.adapters.rabbitmq.execution_messages import encode_reports
from orders_api.adapters.rabbitmq.execution_queues import (
    execution_queue_declarations,
    partition_of,
    partition_queue,
)
from orders_api.domain import Order, OrderStatus, OrderType, Side
from orders_api.executions import (
    ExecutionKind,
    ExecutionReport,
    ExecutionState,
    ExecutionStatus,
    fields_of,
    report_from_fields,
)

#: An ISIN, as orders must name their instrument.
INSTRUMENT = "US0378331005"
#: Messages handed to the broker per confirmed batch.
PUBLISH_BATCH = 1000
#: Reports per message: about what the ingestor puts in one partition's message under load.
REPORTS_PER_MESSAGE = 64
#: Times a refused batch is offered before :func:`publish_reports` gives up, and the pause between.
PUBLISH_ATTEMPTS = 5
RESEND_PAUSE_S = 0.5


def store_orders(engine: sa.Engine, count: int, *, quantity: int = 100) -> list[Order]:
    """Commit ``count`` placed buy orders (limit 100.00) and return them."""
    now = datetime.now(UTC)
    orders = [
        Order(
            id=uuid.uuid4(),
            created_at=now,
            type=OrderType.LIMIT,
            side=Side.BUY,
            instrument=INSTRUMENT,
            limit_price=Decimal("100.00"),
            quantity=quantity,
            status=OrderStatus.PLACED,
            placed_at=now,
            attempts=1,
        )
        for _ in range(count)
    ]
    with engine.begin() as connection:
        SqlAlchemyOrderRepository(connection).add_many(orders)
    return orders


def story_of(order: Order, rng: random.Random) -> list[ExecutionReport]:
    """One story the exchange could tell about ``order``, in ``seq`` order."""
    at = datetime.now(UTC)

    def report(
        seq: int, kind: ExecutionKind, quantity: int = 0, price: Decimal | None = None
    ) -> ExecutionReport:
        return ExecutionReport(uuid.uuid4().hex, order.id, seq, kind, quantity, price, at)

    if rng.random() < 0.1:
        return [report(1, ExecutionKind.REJECTED)]
    story = [report(1, ExecutionKind.ACCEPTED)]
    left = order.quantity
    while left > 0 and rng.random() < 0.7:
        part = rng.randint(1, left)
        price = Decimal(rng.randint(900_000, 1_000_000)) / Decimal(10_000)
        kind = ExecutionKind.FILL if part == left else ExecutionKind.PARTIAL_FILL
        story.append(report(len(story) + 1, kind, part, price))
        left -= part
    if left > 0:
        story.append(report(len(story) + 1, ExecutionKind.CANCELLED))
    return story


def feed_of(
    stories: Sequence[Sequence[ExecutionReport]], rng: random.Random, *, repeats: float
) -> list[ExecutionReport]:
    """Every report of ``stories``, shuffled, with about ``repeats`` of them (a fraction) sent twice."""
    reports = [report for story in stories for report in story]
    reports += rng.sample(reports, int(len(reports) * repeats))
    rng.shuffle(reports)
    return reports


def expected_state(story: Sequence[ExecutionReport]) -> ExecutionState:
    """The state a straight replay of the story leaves its order in."""
    return ExecutionState().applied_all(story)


def report_fields(report: ExecutionReport, feed_seq: int) -> dict[str, object]:
    """The report as the feed sends it and the ingestor publishes it: the feed's JSON object."""
    return {"feed_seq": feed_seq, **fields_of(report)}


def publish_reports(
    rabbitmq_url: str,
    prefix: str,
    partitions: int,
    reports: Sequence[ExecutionReport],
    *,
    extra: Sequence[OutgoingMessage] = (),
) -> int:
    """Publish ``reports`` (and ``extra`` raw messages) to the partition queues, each confirmed.

    Each partition's reports go in feed order, :data:`REPORTS_PER_MESSAGE` to a message. A batch
    the broker refuses (a quorum queue nacks while it is briefly unavailable, as on a loaded CI
    machine) is sent again, as the ingestor would; its messages the broker had taken are then
    stored twice, so the reports resent are returned (an ``extra`` message counts as the items of its
    array, or one): the applier sees at most that many more than it was given.
    """
    by_partition: dict[int, list[dict[str, object]]] = {}
    for feed_seq, report in enumerate(reports, start=1):
        partition = partition_of(report.order_id, partitions)
        by_partition.setdefault(partition, []).append(report_fields(report, feed_seq))
    chunks = [
        (partition, start, fields[start : start + REPORTS_PER_MESSAGE])
        for partition, fields in by_partition.items()
        for start in range(0, len(fields), REPORTS_PER_MESSAGE)
    ]
    messages = [
        OutgoingMessage(
            partition_queue(prefix, partition), encode_reports(chunk), f"test-{partition}-{start}"
        )
        for partition, start, chunk in chunks
    ]
    reports_in = [len(chunk) for _, _, chunk in chunks] + [_items_in(message.body) for message in extra]
    messages += extra
    publisher = ConfirmedPublisher(
        rabbitmq_url,
        execution_queue_declarations(prefix, partitions),
        connect_timeout_s=5.0,
        confirm_timeout_s=30.0,
        connection_role="orders-test-feed",
    )
    resent = 0
    try:
        for start in range(0, len(messages), PUBLISH_BATCH):
            batch = slice(start, start + PUBLISH_BATCH)
            for attempt in range(1, PUBLISH_ATTEMPTS + 1):
                try:
                    publisher.publish_all(messages[batch])
                    break
                except PublishError:
                    if attempt == PUBLISH_ATTEMPTS:
                        raise
                    resent += sum(reports_in[batch])
                    time.sleep(RESEND_PAUSE_S)
    finally:
        publisher.close()
    return resent


def _items_in(body: bytes) -> int:
    """How many reports (well-formed or not) a raw message carries, as the applier counts them."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return 1
    return len(decoded) if isinstance(decoded, list) else 1


def stored_states(engine: sa.Engine, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ExecutionState]:
    """The execution state of each of ``order_ids`` as committed."""
    query = sa.text(
        "SELECT id, filled_quantity, filled_notional, execution_status, execution_seq"
        " FROM orders WHERE id = ANY(:ids)"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"ids": list(order_ids)})
        return {
            row.id: ExecutionState(
                row.filled_quantity,
                row.filled_notional,
                None if row.execution_status is None else ExecutionStatus(row.execution_status),
                row.execution_seq,
            )
            for row in rows
        }


def stored_exec_ids(engine: sa.Engine, order_ids: Sequence[uuid.UUID]) -> list[str]:
    """Every ``exec_id`` stored for ``order_ids`` (a repeat would show as a second copy)."""
    query = sa.text("SELECT exec_id FROM executions WHERE order_id = ANY(:ids)")
    with engine.connect() as connection:
        return list(connection.execute(query, {"ids": list(order_ids)}).scalars())


def logged_reports(state_dir: Path) -> list[ExecutionReport]:
    """Every report of the feed's durable log (its adoption lines left out), as the feed numbered them."""
    reports = []
    for line in the_only_log(state_dir).read_text().splitlines():
        if '"feed_seq"' in line:
            reports.append(report_from_fields(json.loads(line)))
    return reports


def replayed_states(reports: Sequence[ExecutionReport]) -> dict[uuid.UUID, ExecutionState]:
    """Each order's state after a straight replay of its reports, in ``seq`` order."""
    stories: dict[uuid.UUID, list[ExecutionReport]] = defaultdict(list)
    for report in reports:
        stories[report.order_id].append(report)
    return {
        order_id: ExecutionState().applied_all(sorted(story, key=lambda report: report.seq))
        for order_id, story in stories.items()
    }


def count_stored(engine: sa.Engine, order_ids: Sequence[uuid.UUID]) -> int:
    """How many reports of ``order_ids`` are stored."""
    query = sa.text("SELECT count(*) FROM executions WHERE order_id = ANY(:ids)")
    with engine.connect() as connection:
        return int(connection.execute(query, {"ids": list(order_ids)}).scalar_one())
