"""The ceilings of the chain, measured at the API's concurrency: INSERT commits and confirmed publishes.

Each is driven by a tool that adds as little as possible of its own: ``pgbench`` (C) commits one
single-row INSERT into ``orders`` per transaction from ``connections`` clients, and
:mod:`bench.publish_rate` keeps ``connections`` persistent messages unconfirmed on one
asynchronous connection, as the API's publisher does. Each runs as a process of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.stats import percentile

#: One order row per transaction, as the API inserts it (without the advisory lock).
_INSERT_SCRIPT = """\\set quantity random(1, 1000000000)
INSERT INTO orders (id, created_at, type, side, instrument, limit_price, quantity, status, attempts,
  abandoned_claims) VALUES (gen_random_uuid(), now(), 'limit', 'buy', 'US0378331005', 101.25,
  :quantity, 'pending', 0, 0);
"""
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Seconds a ceiling's tool may overrun its duration before it is killed.
OVERRUN_S = 30.0


class CeilingError(RuntimeError):
    """A ceiling's tool failed or did not finish in time."""


@dataclass(frozen=True)
class Ceiling:
    """Operations per second and the latency of one operation, in ms."""

    connections: int
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def insert_commits(database_url: str, connections: int, duration_s: float, workdir: Path) -> Ceiling:
    """Single-row INSERT commits per second into ``orders`` from ``connections`` pgbench clients."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise CeilingError("pgbench is not installed (it comes with PostgreSQL's client programs)")
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "insert.sql"
    script.write_text(_INSERT_SCRIPT)
    for old in workdir.glob("insert_log*"):
        old.unlink()
    command = [
        pgbench,
        "--no-vacuum",
        f"--client={connections}",
        "--jobs=2",
        f"--time={max(1, round(duration_s))}",
        f"--file={script}",
        "--log",
        f"--log-prefix={workdir / 'insert_log'}",
        database_url,
    ]
    output = _run(command, duration_s, workdir)
    tps = next(float(line.split()[2]) for line in output.splitlines() if line.startswith("tps = "))
    # Each log line: client, transaction, latency in µs, script, epoch s, µs.
    latencies = sorted(
        int(line.split()[2]) / 1000
        for log in workdir.glob("insert_log*")
        for line in log.read_text().splitlines()
    )
    return Ceiling(
        connections,
        tps,
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile(latencies, 99),
        latencies[-1],
    )


def confirmed_publishes(
    rabbitmq_url: str, queue: str, window: int, duration_s: float, workdir: Path
) -> Ceiling:
    """Confirmed persistent publishes per second, ``window`` kept unconfirmed, into a placement-like queue."""
    command = [
        sys.executable,
        "-m",
        "bench.publish_rate",
        "--url",
        rabbitmq_url,
        "--queue",
        queue,
        "--window",
        str(window),
        "--duration",
        str(duration_s),
    ]
    figures = json.loads(_run(command, duration_s, workdir).strip().splitlines()[-1])
    return Ceiling(
        window, figures["rate"], figures["p50_ms"], figures["p95_ms"], figures["p99_ms"], figures["max_ms"]
    )


def _run(command: list[str], duration_s: float, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration_s + OVERRUN_S,
            check=False,
            cwd=_PROJECT_ROOT,
        )
    except subprocess.TimeoutExpired as error:
        raise CeilingError(f"{Path(command[0]).name} did not finish in time") from error
    if done.returncode != 0:
        raise CeilingError(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout
