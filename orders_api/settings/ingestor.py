"""The ingestor's settings (``orders-ingestor``): the feed it follows and how it batches its publishes."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import Field

from orders_api.settings.base import temporary_file
from orders_api.settings.executions import ExecutionQueueSettings
from orders_api.settings.shared import Settings


class IngestorSettings(Settings, ExecutionQueueSettings):
    """``orders-ingestor`` and its probe, ``orders-ingestor --check``."""

    #: The ingestor adds ``from`` itself, from its stored resume point.
    feed_url: str = Field(
        "ws://127.0.0.1:8765/executions", description="The exchange's execution feed, without `from`."
    )
    ingest_batch: int = Field(500, ge=1, description="Most reports in one confirmed publish.")
    ingest_batch_wait_ms: float = Field(
        20, ge=0, description="Time the publisher waits for a fuller batch once a report is ready."
    )
    ingest_cursor_save_ms: float = Field(
        100, gt=0, description="Time between two stores of the resume point."
    )
    ingestor_heartbeat_file: Path = Field(
        default_factory=partial(temporary_file, "orders-ingestor.heartbeat"),
        description="Touched about every second while the publisher runs; `--check` reads it.",
    )
    ingestor_metrics_port: int = Field(
        9192, ge=0, le=65535, description="The ingestor's metrics port; 0: none."
    )
