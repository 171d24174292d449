"""The applier's settings (``orders-applier``): its heartbeat and its metrics port."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import Field

from orders_api.settings.base import temporary_file
from orders_api.settings.executions import ExecutionQueueSettings
from orders_api.settings.shared import Settings


class ApplierSettings(Settings, ExecutionQueueSettings):
    """``orders-applier`` and its probe, ``orders-applier --check``."""

    applier_heartbeat_file: Path = Field(
        default_factory=partial(temporary_file, "orders-applier.heartbeat"),
        description="Touched whenever the consuming loop goes round; `--check` reads it.",
    )
    applier_metrics_port: int = Field(
        9193, ge=0, le=65535, description="The applier's metrics port; 0: none."
    )
