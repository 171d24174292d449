"""What an order costs: the CPU each part of the chain spends on it, against its target, from one run.

Every figure is computed from measurements of the same ``make bench`` run:

- the API's CPU per accepted order, with the workers paused (``POST /orders`` at 64 connections;
  the workers stopped with SIGSTOP so that only the API's chain runs), and the same with
  PostgreSQL's and RabbitMQ's share of that run added;
- the workers' CPU per call to the exchange while they drain a backlog with 256 orders in flight
  (:mod:`bench.placement`), and the same with PostgreSQL and RabbitMQ; one call in ten fails
  and is retried, so calls per order are counted too;
- the CPU per execution report of the ingestor, the applier, PostgreSQL and RabbitMQ at 5,000
  reports/s offered (:mod:`bench.execution_feed`; the simulator stands in for the exchange and
  is left out);
- the CPU-seconds per 1,000 orders accepted, placed and filled: the three chains' figures added
  up, each weighted by how often it runs per order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One figure against its target; ``at_most`` says which side of the target passes."""

    figure: str
    measured: float
    unit: str
    target: float | None = None
    at_most: bool = True

    @property
    def verdict(self) -> str:
        """``MET``, ``MISSED``, or ``-`` for a figure without a target."""
        if self.target is None or math.isnan(self.measured):
            return "-"
        met = self.measured <= self.target if self.at_most else self.measured >= self.target
        return "MET" if met else "MISSED"


@dataclass(frozen=True)
class OrderCost:
    """The figures :func:`targets` judges."""

    #: ``POST /orders`` at 64 connections: its rate over the bare endpoint's, its p99 and errors.
    post_of_bare: float
    post_p99_ms: float
    post_errors: int
    #: The second 64-connection run's rate over the first's.
    second_of_first: float
    #: With the workers paused: the API's own CPU per accepted order, and with PostgreSQL and RabbitMQ.
    api_ms: float
    api_chain_ms: float
    #: Draining with 256 in flight: the workers' CPU per exchange call, and with PostgreSQL and RabbitMQ.
    worker_ms_per_call: float
    worker_chain_ms_per_call: float
    calls_per_order: float
    #: Ingestor, applier, PostgreSQL and RabbitMQ per execution report, and reports per order.
    report_ms: float
    reports_per_order: float
    #: Placements per second with 512 in flight over the ideal 512 / 0.5 s.
    placements_512_of_ideal: float

    @property
    def cpu_s_per_1000_orders(self) -> float:
        """Every process's CPU for 1,000 orders accepted, placed and filled (ms per order = s per 1,000)."""
        return (
            self.api_chain_ms
            + self.worker_chain_ms_per_call * self.calls_per_order
            + self.report_ms * self.reports_per_order
        )


def targets(cost: OrderCost) -> list[Target]:
    """Each figure with its target (none for the total, which is tracked from run to run)."""
    return [
        Target("POST /orders, 64 conns, rate of bare", cost.post_of_bare, "x", 0.3, at_most=False),
        Target("POST /orders, 64 conns, p99", cost.post_p99_ms, "ms", 75),
        Target("POST /orders, 64 conns, errors", cost.post_errors, "", 0),
        Target("POST /orders, second run of the first", cost.second_of_first, "x", 0.9, at_most=False),
        Target("API CPU per accepted order, workers paused", cost.api_ms, "ms", 0.4),
        Target("  the same with PostgreSQL and RabbitMQ", cost.api_chain_ms, "ms"),
        Target("worker CPU per exchange call, 256 in flight", cost.worker_ms_per_call, "ms", 1.0),
        Target("  the same with PostgreSQL and RabbitMQ", cost.worker_chain_ms_per_call, "ms"),
        Target("  exchange calls per order", cost.calls_per_order, ""),
        Target("CPU per execution report (ingestor, applier, PG, MQ)", cost.report_ms, "ms", 0.08),
        Target("  reports per order", cost.reports_per_order, ""),
        Target(
            "placements at 512 in flight, of ideal", cost.placements_512_of_ideal, "x", 0.9, at_most=False
        ),
        Target("CPU-seconds per 1,000 orders accepted, placed, filled", cost.cpu_s_per_1000_orders, "s"),
    ]


def table(rows: list[Target]) -> str:
    """The targets as an aligned plain-text table (also valid Markdown)."""
    cells = [["cost figure", "measured", "target", "verdict"]] + [
        [
            row.figure,
            f"{row.measured:.3g} {row.unit}".strip(),
            "-" if row.target is None else f"{'≤' if row.at_most else '≥'} {row.target:g} {row.unit}".strip(),
            row.verdict,
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(4)]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
