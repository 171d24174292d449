"""Database pool settings the benchmark tuned: no pre-ping by default, a worker pool apart from threads."""

import pytest

from orders_api.config import Settings
from workers.settings import WorkerSettings

pytestmark = pytest.mark.unit


def test_connections_are_not_pinged_before_use_unless_asked() -> None:
    assert Settings.from_env({}).db_pool_pre_ping is False
    assert Settings.from_env({"DB_POOL_PRE_PING": "1"}).db_pool_pre_ping is True


def test_the_workers_pool_is_sized_apart_from_their_threads() -> None:
    defaults = WorkerSettings.from_env({})
    configured = WorkerSettings.from_env({"WORKER_THREADS": "256", "WORKER_DB_POOL_SIZE": "4"})

    assert defaults.db_pool_size < defaults.threads
    assert (configured.threads, configured.db_pool_size) == (256, 4)
