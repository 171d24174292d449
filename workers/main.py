"""Entry point for the Dramatiq CLI: ``dramatiq-gevent workers.main -p PROCESSES -t THREADS``.

The CLI imports this module in each worker process and consumes from the global broker, so the
wiring runs here, at import, once per process; everything else stays free of import-time wiring.
"""

from workers.bootstrap import bootstrap
from workers.settings import WorkerSettings

broker = bootstrap(WorkerSettings.from_env(), metrics=True)
