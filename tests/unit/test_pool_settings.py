"""Database pool settings the benchmark tuned: no pre-ping by default, a worker pool apart from threads."""

import pytest

from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from tests.settings_env import settings_under

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), ("yes", True), ("0", False), ("no", False)]
)
def test_connections_are_not_pinged_before_use_unless_asked(value: str, on: bool) -> None:
    assert settings_under(Settings, {}).db_pool_pre_ping is False
    assert settings_under(Settings, {"DB_POOL_PRE_PING": value}).db_pool_pre_ping is on


def test_the_workers_pool_is_sized_apart_from_their_threads() -> None:
    defaults = settings_under(WorkerSettings, {})
    configured = settings_under(WorkerSettings, {"WORKER_THREADS": "256", "WORKER_DB_POOL_SIZE": "4"})

    assert defaults.worker_db_pool_size < defaults.worker_threads
    assert (configured.worker_threads, configured.worker_db_pool_size) == (256, 4)
