"""Every entry command refuses bad settings with one line: a bad value naming its variable
(orders_api/settings/), or time bounds out of order naming both (orders_api/timeout_rules.py).

The real commands, as the image and ``make run`` start them, in a subprocess: each must stop before
it connects anywhere, with exit status 1, one line on stderr and no traceback. ``make run`` stops
as well, before it migrates anything, instead of having its supervisor restart a refusing process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

#: The virtualenv's scripts: the one whose Python runs these tests.
BIN = Path(sys.executable).parent
#: The project root, where the commands run under ``make run``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a refused start may take: the imports, nothing more (``make run``: its checks too).
START_TIMEOUT_S = 60

#: Each role's commands, with a variable it reads set to a value that is not a number.
COMMANDS = {
    "api": (
        ["gunicorn", "--config", "python:orders_api.api.gunicorn_config", "orders_api.wsgi:app"],
        "DB_POOL_SIZE",
    ),
    "api-config-check": (
        ["gunicorn", "--config", "python:orders_api.api.gunicorn_config", "--check-config"],
        "WEB_WORKERS",
    ),
    "workers": (["orders-workers"], "WORKER_THREADS"),
    "sweep": (["flask", "--app", "orders_api.wsgi", "reconcile", "--every", "60"], "DB_POOL_SIZE"),
    "ingestor": (["orders-ingestor"], "INGEST_BATCH"),
    "ingestor-check": (["orders-ingestor", "--check"], "INGESTOR_METRICS_PORT"),
    "applier": (["orders-applier"], "EXECUTION_PARTITIONS"),
    "migrate": (["orders-db-upgrade"], "DB_POOL_SIZE"),
    "broker-setup": (["orders-broker-setup"], "PLACEMENT_DELIVERY_LIMIT"),
    "exchange-feed": (["orders-exchange-feed"], "FEED_PORT"),
}
#: The long-running roles' start commands, each of which checks the timeouts' order.
STARTS = {role: COMMANDS[role][0] for role in ("api", "workers", "sweep", "ingestor", "applier")}
#: Addresses nothing listens on: a command that went past its check would fail differently, or hang.
NOWHERE = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/orders",
    "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:9/%2F",
}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=PROJECT_ROOT,
        env={**os.environ, **NOWHERE, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("role", list(COMMANDS))
def test_a_value_that_is_not_a_number_stops_the_start_with_one_line_naming_it(role: str) -> None:
    argv, variable = COMMANDS[role]

    started = _run(argv, {variable: "lots"})

    assert started.returncode == 1, started.stderr
    assert started.stderr.startswith(f"configuration error: {variable}: Input should be a valid integer"), (
        started.stderr
    )
    assert started.stderr.endswith("(got 'lots')\n"), started.stderr
    assert started.stderr.count("\n") == 1, started.stderr
    assert "Traceback" not in started.stdout + started.stderr


def test_make_run_stops_at_once_with_the_line_naming_the_variable(tmp_path: Path) -> None:
    """``DB_POOL_SIZE=lots make run``: no migration, no supervisor restarting the API for ever."""
    started = subprocess.run(
        ["make", "--no-print-directory", "run", f"VENV={BIN.parent}"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **NOWHERE, "DB_POOL_SIZE": "lots", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )

    assert started.returncode != 0, started.stdout + started.stderr
    naming = [line for line in started.stderr.splitlines() if "DB_POOL_SIZE" in line]
    assert naming == [
        "configuration error: DB_POOL_SIZE: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    ], started.stderr
    assert "Traceback" not in started.stdout + started.stderr
    assert "orders-db-upgrade" not in started.stdout, "it migrated before checking"


@pytest.mark.parametrize("role", list(STARTS))
def test_a_statement_timeout_above_the_reply_deadline_stops_the_start_with_one_line(role: str) -> None:
    started = _run(STARTS[role], {"STATEMENT_TIMEOUT_MS": "6000"})

    assert started.returncode == 1, started.stderr
    assert started.stderr.startswith(
        "timeouts out of order: STATEMENT_TIMEOUT_MS=6000 must be below DB_REPLY_TIMEOUT_S=5 (5000 ms): "
    ), started.stderr
    assert started.stderr.count("\n") == 1, started.stderr
    assert "Traceback" not in started.stdout + started.stderr


def test_the_workers_refuse_a_lease_their_renewals_cannot_keep() -> None:
    started = _run(STARTS["workers"], {"CLAIM_LEASE_MS": "15000"})

    assert started.returncode == 1, started.stderr
    assert started.stderr.startswith(
        "timeouts out of order: CLAIM_LEASE_MS=15000 / 5 + 2 * DB_REPLY_TIMEOUT_S=5 (13000 ms) must be below "
        "CLAIM_LEASE_MS=15000 / 2 (7500 ms): "
    ), started.stderr


def test_gunicorn_refuses_a_graceful_timeout_below_a_lost_commits_lookup() -> None:
    started = _run([*STARTS["api"], "--check-config"], {"GRACEFUL_TIMEOUT_S": "20"})

    assert started.returncode == 1, started.stderr
    assert "must be below GRACEFUL_TIMEOUT_S=20 (20000 ms): " in started.stderr


def test_the_api_starts_with_the_default_settings() -> None:
    """The check is not a blanket refusal: ``gunicorn --check-config`` loads the config and the app."""
    started = _run([*STARTS["api"], "--check-config"], {})

    assert started.returncode == 0, started.stderr
