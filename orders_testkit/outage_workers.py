"""The Dramatiq entry point of the fault suite and the benchmark: ``dramatiq orders_testkit.outage_workers``.

The production wiring (``workers.bootstrap.bootstrap``) with the exchange of
:mod:`orders_testkit.fault_exchange`: recorded when ``FAULTS_PLACEMENTS_FILE`` is set, failing
every call while the file named by ``FAULTS_EXCHANGE_OUTAGE_MARKER`` exists. Like
``workers.main``, the wiring runs at import, once in each worker process, but the settings' time
bounds are left unchecked: the scenarios shorten leases and time limits below what a real start
allows, to see them lapse.
"""

from __future__ import annotations

import os

from orders_api.logging_setup import configure_logging
from orders_api.settings.workers import WorkerSettings
from orders_testkit.fault_exchange import fault_exchange
from orders_testkit.unchecked_settings import unchecked
from workers.bootstrap import bootstrap

settings = unchecked(WorkerSettings, os.environ)
configure_logging(settings)  # as workers.main does: JSON lines, through the CLI's pipe
broker = bootstrap(settings, exchange=fault_exchange(os.environ))
