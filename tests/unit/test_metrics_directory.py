"""The multiprocess metrics directory a server empties when it starts, and the variables that name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orders_api.metrics_directory import existing_metrics_directory, fresh_metrics_directory

pytestmark = pytest.mark.unit


def test_the_configured_directory_loses_its_metric_files_and_nothing_else(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old counts")
    (directory / "gauge_livesum_123.db").write_bytes(b"old gauge")
    (directory / "notes.txt").write_text("not ours")
    environ = {"dramatiq_prom_db": str(directory)}

    chosen = fresh_metrics_directory(
        ["dramatiq_prom_db", "PROMETHEUS_MULTIPROC_DIR"], prefix="x-", environ=environ
    )

    assert chosen == directory
    assert sorted(path.name for path in directory.iterdir()) == ["notes.txt"]
    assert environ == {"dramatiq_prom_db": str(directory), "PROMETHEUS_MULTIPROC_DIR": str(directory)}


def test_the_first_variable_set_wins_and_a_missing_directory_is_created(tmp_path: Path) -> None:
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "second"), "dramatiq_prom_db": ""}

    chosen = fresh_metrics_directory(
        ["dramatiq_prom_db", "PROMETHEUS_MULTIPROC_DIR"], prefix="x-", environ=environ
    )

    assert chosen == tmp_path / "second"
    assert chosen.is_dir()
    assert environ["dramatiq_prom_db"] == str(chosen)


def test_without_a_configured_directory_a_new_empty_one_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # so that mkdtemp reads TMPDIR again
    environ: dict[str, str] = {}

    chosen = fresh_metrics_directory(
        ["PROMETHEUS_MULTIPROC_DIR"], prefix="orders-api-metrics-", environ=environ
    )

    assert chosen.parent == tmp_path
    assert chosen.name.startswith("orders-api-metrics-")
    assert list(chosen.iterdir()) == []
    assert environ == {"PROMETHEUS_MULTIPROC_DIR": str(chosen)}


def test_a_process_that_does_not_own_the_directory_creates_it_if_missing_and_never_empties_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing" / "metrics"
    assert existing_metrics_directory({"PROMETHEUS_MULTIPROC_DIR": str(missing)}) == missing
    assert missing.is_dir()
    (missing / "counter_1.db").write_bytes(b"the API's counts")

    existing_metrics_directory({"PROMETHEUS_MULTIPROC_DIR": str(missing)})

    assert (missing / "counter_1.db").read_bytes() == b"the API's counts"
    assert existing_metrics_directory({}) is None
