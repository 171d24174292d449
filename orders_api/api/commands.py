"""Operator commands, run as ``flask --app orders_api.wsgi COMMAND``: reconciliation and dead letters.

Each command translates its arguments into a service call and its result into text, as the
routes do for HTTP; what a command changes is logged by the service layer.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher
from orders_api.adapters.rabbitmq.dead_letters import RabbitDeadLetterQueue
from orders_api.api.orders import order_representation
from orders_api.api.services import OrderServices
from orders_api.service_layer.dead_letters import (
    DeadLetterNotFoundError,
    DeadLetterQueueError,
    DeadLetterReport,
    NotReplayableError,
    Replay,
    ReplayInterruptedError,
    list_dead_letters,
    replay_all_dead_letters,
    replay_dead_letter,
    show_dead_letter,
)
from orders_api.service_layer.ordering import purge_expired_idempotency_keys
from orders_api.service_layer.reconciliation import SweepInterruptedError, republish_stale_orders
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)

#: Characters of an order's last error shown in the dead-letter table.
LAST_ERROR_WIDTH = 60


def _services() -> OrderServices:
    services: OrderServices = current_app.extensions["orders"]
    return services


def _settings() -> Settings:
    settings: Settings = current_app.extensions["orders.settings"]
    return settings


def _name_connections(role: str) -> None:
    """Have the app's publisher name its connection after ``role``, not the API; before it connects."""
    publisher: ConfirmedPublisher = current_app.extensions["orders.publisher"]
    publisher.connection_role = role


# --- reconcile ---------------------------------------------------------------------------------


@click.command("reconcile")
@click.option(
    "--every",
    type=click.FloatRange(min=1.0),
    default=None,
    metavar="SECONDS",
    help="Run a pass every SECONDS until SIGTERM or SIGINT, instead of once.",
)
@with_appcontext
def reconcile_command(every: float | None) -> None:
    """Republish placement requests of pending orders untouched for RECONCILE_STALE_AFTER_S.

    Also purges expired idempotency keys. Without --every, one pass; the exit status says
    whether it completed.
    """
    _name_connections("orders-reconcile")
    if every is None:
        if not reconcile_once():
            raise click.ClickException("the reconciliation pass did not complete; see the log")
        return
    stop = threading.Event()
    with _stopped_by_signals(stop):
        logger.info(
            "reconciling every %s s (orders stale after %s s) until SIGTERM or SIGINT",
            every,
            _settings().reconcile_stale_after_s,
        )
        run_every(every, reconcile_once, stop)
    logger.info("reconciliation stopped")


def reconcile_once() -> bool:
    """One pass: republish stale pending orders, purge expired idempotency keys; return whether all went well.

    A failure is logged, not raised, so that a scheduled loop survives an outage of the
    database or the broker and tries again on its next pass.
    """
    services = _services()
    stale_after = timedelta(seconds=_settings().reconcile_stale_after_s)
    succeeded = True
    try:
        republished = republish_stale_orders(
            services.unit_of_work, services.placements, stale_after=stale_after
        )
        logger.info("reconciliation pass: republished %d stale pending orders", len(republished))
    except SweepInterruptedError as error:
        logger.error("reconciliation pass stopped after %d orders: %s", len(error.republished), error)
        succeeded = False
    except Exception:
        logger.exception("reconciliation pass failed")
        succeeded = False
    try:
        purged = purge_expired_idempotency_keys(services.unit_of_work())
        logger.info("reconciliation pass: purged %d expired idempotency keys", purged)
    except Exception:
        logger.exception("purging expired idempotency keys failed")
        succeeded = False
    return succeeded


def run_every(every_s: float, run_pass: Callable[[], object], stop: threading.Event) -> None:
    """Call ``run_pass`` now and then every ``every_s`` seconds until ``stop`` is set.

    The wait between passes ends early when ``stop`` is set; a pass under way is finished.
    """
    while not stop.is_set():
        run_pass()
        stop.wait(every_s)


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT while the block runs, instead of dying mid-pass."""

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s; stopping after the current pass", signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- dead-letters ------------------------------------------------------------------------------

dead_letters_cli = AppGroup("dead-letters", help="List, inspect and replay dead-lettered placement messages.")


def _queue() -> RabbitDeadLetterQueue:
    settings = _settings()
    return RabbitDeadLetterQueue(
        settings.rabbitmq_url, settings.placement_queue, connect_timeout_s=settings.connect_timeout_s
    )


@contextmanager
def _as_click_errors() -> Iterator[None]:
    """Turn the service layer's refusals into a one-line error and exit status 1."""
    try:
        yield
    except (DeadLetterNotFoundError, NotReplayableError, DeadLetterQueueError) as error:
        raise click.ClickException(str(error)) from error


@dead_letters_cli.command("list")
def list_command() -> None:
    """Show every dead letter with its order's status and last error; the messages stay in the queue."""
    queue = _queue()
    with _as_click_errors():
        reports = list_dead_letters(queue, _services().unit_of_work)
    if not reports:
        click.echo(f"no dead letters in {queue.name}")
        return
    headers = ("MESSAGE ID", "ORDER ID", "ACTOR", "DEAD-LETTERED AT", "RETRIES", "STATUS", "LAST ERROR")
    click.echo(_table(headers, [_row(report) for report in reports]))
    click.echo(f"{_dead_letters(len(reports))} in {queue.name}")


@dead_letters_cli.command("show")
@click.argument("message_id")
def show_command(message_id: str) -> None:
    """Print one dead letter (the whole message) and its order as JSON; the message stays in the queue."""
    with _as_click_errors():
        report = show_dead_letter(message_id, _queue(), _services().unit_of_work)
    letter = report.letter
    document = {
        "message_id": letter.message_id,
        "dead_lettered_at": letter.dead_lettered_at.isoformat() if letter.dead_lettered_at else None,
        "reason": letter.reason,
        "message": letter.message,
        "order": order_representation(report.order) if report.order is not None else None,
    }
    click.echo(json.dumps(document, indent=2, default=str))


@dead_letters_cli.command("replay")
@click.argument("message_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter in the queue.")
def replay_command(message_id: str | None, replay_all: bool) -> None:
    """Reopen a dead letter's order (or all, with --all), request its placement anew, remove the letter.

    A failed order goes back to pending and gets a fresh message with a fresh retry budget; the
    dead letter is removed once that is committed. For an order already placed the dead letter
    is just removed. A letter naming no existing order is left in the queue (exit status 1).
    """
    if (message_id is None) == (not replay_all):
        raise click.UsageError("give either a MESSAGE_ID or --all")
    _name_connections("orders-dead-letters")
    services = _services()
    queue = _queue()
    try:
        with _as_click_errors():
            if message_id is None:
                replays = replay_all_dead_letters(queue, services.unit_of_work, services.placements)
            else:
                replays = [replay_dead_letter(message_id, queue, services.unit_of_work, services.placements)]
    except ReplayInterruptedError as error:
        _echo_replays(error.done)
        raise click.ClickException(str(error)) from error
    _echo_replays(replays)
    left = [replay for replay in replays if replay.outcome is None]
    if replay_all and not replays:
        click.echo(f"no dead letters in {queue.name}")
    if left:
        raise click.ClickException(
            f"{_dead_letters(len(left))} could not be replayed and stay in {queue.name}"
        )


def _echo_replays(replays: Sequence[Replay]) -> None:
    for replay in replays:
        letter = replay.letter
        if replay.outcome is not None:
            what = replay.outcome.value
        else:
            what = f"left in the queue: {replay.left_because}"
        click.echo(f"{letter.message_id} (order {letter.order_id}): {what}")


def _row(report: DeadLetterReport) -> tuple[str, ...]:
    letter, order = report.letter, report.order
    last_error = (order.last_error or "") if order is not None else ""
    last_error = " ".join(last_error.split())
    if len(last_error) > LAST_ERROR_WIDTH:
        last_error = last_error[: LAST_ERROR_WIDTH - 1] + "…"
    return (
        letter.message_id,
        str(letter.order_id) if letter.order_id is not None else "-",
        letter.actor_name or "-",
        _timestamp(letter.dead_lettered_at),
        str(letter.retries),
        order.status.value if order is not None else "(no order)",
        last_error or "-",
    )


def _dead_letters(count: int) -> str:
    return f"{count} dead letter" if count == 1 else f"{count} dead letters"


def _timestamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, the last one unpadded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)
