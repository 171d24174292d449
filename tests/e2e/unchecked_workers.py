"""``workers.main`` with the time bounds' rules left unchecked: ``dramatiq tests.e2e.unchecked_workers``.

The production wiring, for the tests that run workers out of order on purpose: a claim lease
short enough to lapse within a test, or database waits stretched past what a lease allows. A real
start refuses those settings (:mod:`orders_api.settings.shared`); the variables are still parsed
as their fields parse them.
"""

import os

from orders_api.logging_setup import configure_logging
from orders_api.settings.workers import WorkerSettings
from orders_testkit.unchecked_settings import unchecked
from workers.bootstrap import bootstrap

settings = unchecked(WorkerSettings, os.environ)
configure_logging(settings)
broker = bootstrap(settings, metrics=True)
