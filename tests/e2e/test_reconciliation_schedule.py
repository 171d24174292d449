"""The scheduled sweep as ``scripts/run.sh`` runs it: a real ``flask reconcile --every`` process.

It must republish a lost order on its own schedule and stop cleanly, between passes, on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Seconds the process has to start, run a pass and, after SIGTERM, to stop.
TIMEOUT_S = 30.0


def insert_stale_order(database_url: str) -> str:
    """A pending order untouched for two days whose placement message exists nowhere."""
    order_id = str(uuid.uuid4())
    connection = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO orders (id, created_at, type, side, instrument, quantity, status, attempts,"
                " updated_at) VALUES (%s, now(), 'market', 'buy', 'US0378331005', 1, 'pending', 0,"
                " now() - interval '2 days')",
                (order_id,),
            )
    finally:
        connection.close()
    return order_id


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while text not in log.read_text(encoding="utf-8", errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in the log:\n{log.read_text(encoding='utf-8', errors='replace')}")
        time.sleep(0.1)


def test_the_scheduled_sweep_republishes_a_lost_order_and_stops_on_sigterm(
    settings: Settings, rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    order_id = insert_stale_order(settings.database_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    env.update(
        DATABASE_URL=settings.database_url,
        RABBITMQ_URL=settings.rabbitmq_url,
        PLACEMENT_QUEUE=settings.placement_queue,
        RECONCILE_STALE_AFTER_S=str(24 * 3600),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "reconcile.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "flask"),
                "--app",
                "orders_api.wsgi",
                "reconcile",
                "--every",
                "1",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_line(log, f"order {order_id} was pending and untouched", process)
            wait_for_line(log, "reconciliation pass: purged", process)
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)

    assert status == 0, log.read_text()
    assert "received SIGTERM" in log.read_text()
    assert "reconciliation stopped" in log.read_text()
    assert [body["args"] for body in rabbit.peek_bodies(settings.placement_queue)] == [[order_id]]
