"""The execution feed simulator's settings (``orders-exchange-feed``), each also a flag of its command.

The simulator stands in for the exchange and is no part of the service: it reads the orders'
database and logging, nothing else of the service's settings.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import Field

from orders_api.settings.base import temporary_file
from orders_api.settings.database import DatabaseUrlSettings
from orders_api.settings.logs import LoggingSettings


class FeedSettings(DatabaseUrlSettings, LoggingSettings):
    """``orders-exchange-feed``: where it listens, what it produces, and how badly it behaves."""

    feed_host: str = Field("127.0.0.1", description="Interface the simulated feed listens on.")
    feed_port: int = Field(8765, ge=0, le=65535, description="Port the simulated feed listens on.")
    #: Beside the checkout under ``make run`` (scripts/run.sh): the ingestor's resume point, in
    #: PostgreSQL, outlives a reboot and must find the log it points into.
    feed_state_dir: Path = Field(
        default_factory=partial(temporary_file, "orders-exchange-feed"),
        description="Where the simulator keeps its durable logs, one folder per orders database.",
    )
    feed_seed: int = Field(0, description="Seeds the stories and the faults.")
    feed_rate: float = Field(
        1000, ge=0, description="Reports logged per second at most; 0: as fast as possible."
    )
    feed_batch: int = Field(1, ge=1, description="Reports per frame, at most.")
    feed_fills_per_order: int | None = Field(
        None,
        ge=1,
        description="Bench mode: each order accepted, then filled in this many fills; unset: random stories.",
    )
    feed_poll_interval_s: float = Field(0.1, gt=0, description="Pause between two polls for placed orders.")
    feed_poll_limit: int = Field(
        1000, ge=1, description="Orders read per poll, and stories in progress at most."
    )
    #: Above the longest placement transaction plus the workers' clock skew.
    feed_late_commit_window_s: float = Field(
        10, ge=0, description="How far behind the poll's cursor orders committed late are looked for; 0: not."
    )
    feed_repeat_probability: float = Field(
        0.01, ge=0, le=1, description="Chance that a report is sent again, a few reports later."
    )
    feed_reorder_probability: float = Field(
        0.01, ge=0, le=1, description="Chance that a report is held back and sent after the next one."
    )
    feed_drop_every_frames: int = Field(
        1000, ge=0, description="Frames a connection lives on average before it is cut; 0: never."
    )
    feed_clean: bool = Field(False, description="No repeats, no reordering, no dropped connections.")
