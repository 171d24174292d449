"""The benchmark's one table, and its two plots.

Every row is one measurement; its ratio compares it with the baseline measured in the same run
that bounds it, so the figures of one machine can be read without knowing the machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import Record


@dataclass(frozen=True)
class Row:
    """One line of the table; ``None`` prints as ``-``."""

    measurement: str
    connections: int | None
    rate: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int | None = None
    unique: int | None = None
    #: Cores' worth of CPU the load tool used.
    tool_cpu: float | None = None
    ratio: str = ""
    note: str = ""


_HEADERS = (
    "measurement",
    "conns",
    "rate/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "errors",
    "unique",
    "tool cpu",
    "ratio",
    "note",
)


def ratio(value: float, baseline: float, label: str) -> str:
    """``value / baseline`` to two places, with what it is relative to."""
    if not baseline or math.isnan(value) or math.isnan(baseline):
        return "-"
    return f"{value / baseline:.2f} {label}"


def table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table (also valid Markdown)."""
    cells = [list(_HEADERS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADERS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append(
            "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _cells(row: Row) -> list[str]:
    return [
        row.measurement,
        _number(row.connections, "{:d}"),
        _number(row.rate, "{:.0f}"),
        _number(row.p50_ms, "{:.1f}"),
        _number(row.p95_ms, "{:.1f}"),
        _number(row.p99_ms, "{:.1f}"),
        _number(row.max_ms, "{:.0f}"),
        _number(row.errors, "{:d}"),
        _number(row.unique, "{:d}"),
        _number(row.tool_cpu, "{:.2f}"),
        row.ratio or "-",
        row.note,
    ]


def _number(value: float | None, form: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return form.format(value)


def plot(series: dict[str, Sequence[Record]], out_dir: Path) -> list[Path]:
    """Latency over time and a latency histogram of each series; return the PNG files written.

    matplotlib comes with the ``bench`` extra; it is imported here so the rest of the package
    needs none of it.
    """
    import matplotlib  # only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    over_time, histogram = out_dir / "bench-latency-over-time.png", out_dir / "bench-latency-histogram.png"

    figure, axes = plt.subplots(figsize=(10, 5))
    for label, records in series.items():
        axes.plot(
            [record.end_ms / 1000 for record in records],
            [record.latency_ms for record in records],
            ".",
            markersize=1.5,
            alpha=0.4,
            label=label,
        )
    axes.set_xlabel("seconds into the run")
    axes.set_ylabel("latency, ms (client side)")
    axes.set_yscale("log")
    axes.set_title("POST /orders: every answer's latency over time")
    axes.legend(markerscale=8)
    figure.tight_layout()
    figure.savefig(over_time, dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(10, 5))
    for label, records in series.items():
        axes.hist([record.latency_ms for record in records], bins=100, histtype="step", label=label)
    axes.set_xlabel("latency, ms (client side)")
    axes.set_ylabel("answers")
    axes.set_title("POST /orders: latency histogram")
    axes.legend()
    figure.tight_layout()
    figure.savefig(histogram, dpi=110)
    plt.close(figure)
    return [over_time, histogram]
