"""Which settings class each role of the service reads at start, and the commands that are that role."""

from __future__ import annotations

from dataclasses import dataclass

from orders_api.settings.api import ApiSettings
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.base import SettingsBase
from orders_api.settings.feed import FeedSettings
from orders_api.settings.ingestor import IngestorSettings
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings


@dataclass(frozen=True)
class Role:
    """A kind of process, by the name the manifests give it, and the settings it validates at start."""

    name: str
    settings: type[SettingsBase]
    #: The commands that start it, for the docs.
    commands: tuple[str, ...]


ROLES = (
    Role(
        "api",
        ApiSettings,
        ("gunicorn --config python:orders_api.api.gunicorn_config orders_api.wsgi:app",),
    ),
    Role(
        "sweep",
        Settings,
        ("flask --app orders_api.wsgi reconcile", "flask --app orders_api.wsgi dead-letters"),
    ),
    Role("migrate", Settings, ("orders-db-upgrade", "orders-broker-setup")),
    Role("workers", WorkerSettings, ("orders-workers", "python -m workers.liveness")),
    Role("ingestor", IngestorSettings, ("orders-ingestor",)),
    Role("applier", ApplierSettings, ("orders-applier",)),
    Role("exchange-feed", FeedSettings, ("orders-exchange-feed",)),
)
