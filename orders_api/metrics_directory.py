"""The directory where prometheus_client's multiprocess mode keeps its metric files, fresh at each start.

gunicorn's web workers and Dramatiq's worker processes each write their metrics to files of their
own in one directory (``PROMETHEUS_MULTIPROC_DIR``), and a scrape adds up the files. Files left by
an earlier run of the server would be added to the new run's counts (and its dead processes'
gauges shown), so the server that owns the directory empties it when it starts, before any process
writes to it. When no directory is configured a new temporary one is made: without one,
prometheus_client falls back to per-process values and each scrape would see one process only.

No prometheus_client import here: the variable must be set before prometheus_client is first
imported in the process, because it picks its storage at import time.

The variable is prometheus_client's (and ``dramatiq_prom_db`` Dramatiq's), not one of the
service's settings (:mod:`orders_api.settings`): the libraries read it from the process
environment themselves, and a server rewrites it there for its children. So this module alone
reads and writes it, in the process environment unless told another.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

#: The variable prometheus_client reads, at import, to choose multiprocess mode and its directory.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def fresh_metrics_directory(
    names: Sequence[str], prefix: str, environ: MutableMapping[str, str] = os.environ
) -> Path:
    """Empty the metrics directory named by the first of ``names`` set in ``environ``, or make a new one.

    Every variable in ``names`` is then set to it, so the processes started with ``environ`` agree
    on it. Only metric files (``*.db``) are removed, so a directory pointed at by mistake at a
    shared place loses nothing else.
    """
    configured = next((environ[name] for name in names if environ.get(name)), None)
    if configured is None:
        directory = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for metric_file in directory.glob("*.db"):
            metric_file.unlink(missing_ok=True)
    for name in names:
        environ[name] = str(directory)
    return directory


def existing_metrics_directory(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Create the multiprocess metrics directory if one is configured and missing; empty it never.

    For processes that do not own the directory: a Flask CLI command run with the API's
    environment (a CronJob, say) would otherwise crash creating its first metric, since
    prometheus_client writes a file per process as soon as a metric exists.
    """
    configured = environ.get(MULTIPROC_DIR_VARIABLE, "")  # unset: metrics stay in this process
    if not configured:
        return None
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def multiprocess_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether prometheus_client keeps this process's metrics in files: it decides by the variable alone."""
    return MULTIPROC_DIR_VARIABLE in environ
