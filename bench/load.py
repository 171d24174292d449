"""Drive ``POST /orders`` with wrk, a load tool in C from a process of its own, and collect what it saw.

wrk runs ``bench/orders.lua``, which makes every body unique and times every answer; wrk's own
latency histogram gives the percentiles, the per-answer records give the plots. The CPU wrk used
is measured too, so the report can show that the load tool is not what limits the rate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The wrk script, beside this module.
SCRIPT = Path(__file__).with_name("orders.lua")
#: wrk threads: one per core of the 2-core machine; each drives its share of the connections.
WRK_THREADS = 2
#: Seconds a request may take before wrk counts it as a timeout (an error in the report).
REQUEST_TIMEOUT_S = 5
#: Seconds wrk may overrun its duration (start-up, final answers) before it is killed.
OVERRUN_S = 20.0
#: Seconds between checks of ``stop_when``.
_POLL_S = 0.05


class LoadError(RuntimeError):
    """wrk could not be run, or did not finish in time."""


@dataclass(frozen=True)
class Record:
    """One answer: when it arrived (ms after wrk started), how long it took (ms), and its status."""

    end_ms: float
    latency_ms: float
    status: int


@dataclass(frozen=True)
class LoadResult:
    """What wrk measured over one run."""

    connections: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: CPU seconds wrk itself used (user + system).
    cpu_s: float
    records: tuple[Record, ...]

    @property
    def rate(self) -> float:
        """Answers per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def cpu_cores(self) -> float:
        """Cores' worth of CPU the load tool used while it ran."""
        return self.cpu_s / self.duration_s if self.duration_s else 0.0


def wrk_binary() -> str:
    """The wrk executable; ``make bench`` installs it when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: run `make bench`, which installs it (Debian package wrk)")
    return found


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    workdir: Path,
    *,
    quota_per_thread: int = 0,
    delay_ms: float = 0.0,
    stop_when: Callable[[], bool] | None = None,
) -> LoadResult:
    """Run wrk against ``url`` for ``duration_s`` with ``connections`` keep-alive connections.

    ``quota_per_thread`` makes each wrk thread stop after that many answers, ``delay_ms`` paces
    each connection, and ``stop_when`` (polled) ends the run early with SIGINT, after which wrk
    still reports. Bounded: wrk is killed :data:`OVERRUN_S` after its duration.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    records, summary = workdir / "records.txt", workdir / "summary.json"
    env = {
        **os.environ,
        "BENCH_RECORDS": str(records),
        "BENCH_SUMMARY": str(summary),
        "BENCH_QUOTA": str(quota_per_thread),
        "BENCH_DELAY_MS": str(delay_ms),
    }
    command = [
        wrk_binary(),
        "--threads",
        str(WRK_THREADS),
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{REQUEST_TIMEOUT_S}s",
        "--script",
        str(SCRIPT),
        url,
    ]
    with (workdir / "wrk.out").open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    cpu_s = _wait(process, duration_s + OVERRUN_S, stop_when)
    if process.returncode != 0 or not summary.exists():
        text = (workdir / "wrk.out").read_text(errors="replace")
        raise LoadError(f"wrk exited with status {process.returncode}: {text[-2000:]}")
    return _result(connections, json.loads(summary.read_text()), cpu_s, parse_records(records.read_text()))


def parse_records(text: str) -> tuple[Record, ...]:
    """The lines ``<end ms> <latency ms> <status>`` the wrk script writes, in order of arrival."""
    parsed = []
    for line in text.splitlines():
        end_ms, latency_ms, status = line.split()
        parsed.append(Record(float(end_ms), float(latency_ms), int(status)))
    return tuple(sorted(parsed, key=lambda record: record.end_ms))


def _wait(process: subprocess.Popen[bytes], timeout_s: float, stop_when: Callable[[], bool] | None) -> float:
    """Wait for wrk, interrupting it when ``stop_when`` says so; return the CPU seconds it used."""
    deadline = time.monotonic() + timeout_s
    interrupted = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise LoadError(f"wrk did not finish within {timeout_s:.0f} s")
        if stop_when is not None and not interrupted and stop_when():
            process.send_signal(signal.SIGINT)
            interrupted = True
        time.sleep(_POLL_S)


def _result(
    connections: int, summary: dict[str, int], cpu_s: float, records: tuple[Record, ...]
) -> LoadResult:
    errors = sum(
        summary[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        connections=connections,
        duration_s=summary["duration_us"] / 1e6,
        requests=summary["requests"],
        errors=errors,
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        cpu_s=cpu_s,
        records=records,
    )
