"""Entry point for the Dramatiq CLI: ``dramatiq-gevent workers.main -p PROCESSES -t THREADS``.

The CLI imports this module in each worker process and consumes from the global broker, so the
wiring runs here, at import, once per process; everything else stays free of import-time wiring.
Logging first: the CLI has pointed the process's ``sys.stderr`` at the pipe through which its
main process writes every worker's lines, and the lines sent there are to be JSON.
"""

from orders_api.logging_setup import configure_logging
from orders_api.settings.base import load
from orders_api.settings.workers import WorkerSettings
from workers.bootstrap import bootstrap

settings = load(WorkerSettings)
configure_logging(settings)
broker = bootstrap(settings, metrics=True)
