"""``orders-applier --check``: the probe passes only while the consuming loop touches its heartbeat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orders_api.execution_feed.applier import main
from orders_api.execution_feed.liveness_file import liveness_file_is_fresh
from orders_api.settings.applier import ApplierSettings
from tests.settings_env import settings_under


def test_a_heartbeat_touched_within_the_bound_is_fresh_and_an_older_one_is_not(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    heartbeat.touch()
    touched = heartbeat.stat().st_mtime

    assert liveness_file_is_fresh(heartbeat, 60.0, now=touched + 59)
    assert not liveness_file_is_fresh(heartbeat, 60.0, now=touched + 61)


def test_a_missing_heartbeat_is_not_fresh(tmp_path: Path) -> None:
    assert not liveness_file_is_fresh(tmp_path / "never-written", 60.0)


@pytest.mark.parametrize(("age_s", "exit_code"), [(0, 0), (120, 1)])
def test_the_check_command_exits_by_the_heartbeats_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age_s: float, exit_code: int
) -> None:
    heartbeat = tmp_path / "heartbeat"
    heartbeat.touch()
    then = time.time() - age_s
    os.utime(heartbeat, (then, then))
    monkeypatch.setenv("APPLIER_HEARTBEAT_FILE", str(heartbeat))

    with pytest.raises(SystemExit) as exited:
        main(["--check", "--max-age", "60"])

    assert exited.value.code == exit_code


def test_the_settings_come_from_the_environment() -> None:
    settings = settings_under(
        ApplierSettings,
        {
            "EXECUTION_QUEUE_PREFIX": "x",
            "EXECUTION_PARTITIONS": "3",
            "APPLIER_HEARTBEAT_FILE": "run/applier.heartbeat",
        },
    )

    assert (
        settings.execution_queue_prefix,
        settings.execution_partitions,
        settings.applier_heartbeat_file,
    ) == (
        "x",
        3,
        Path("run/applier.heartbeat"),
    )
