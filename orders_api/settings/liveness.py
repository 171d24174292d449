"""The workers' heartbeat file: touched by each worker process, read by their probe.

A piece of its own, apart from :mod:`orders_api.settings.workers`, so that the probe
(``python -m workers.liveness``, run every few seconds) reads only this.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import Field

from orders_api.settings.base import SettingsBase, temporary_file


class WorkerLivenessSettings(SettingsBase):
    """Where the workers' heartbeats are (:mod:`workers.liveness`)."""

    #: Each process appends ``.<parent pid>.<pid>`` to it.
    worker_liveness_file: Path = Field(
        default_factory=partial(temporary_file, "orders-worker-alive"),
        description="The workers' heartbeat file; each worker process appends `.<parent pid>.<pid>`.",
    )
