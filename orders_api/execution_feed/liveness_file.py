"""Liveness files: how a long-running process without an HTTP port tells Kubernetes it is alive.

The process touches its file from the loop that does its work; the liveness probe runs the same
command with ``--check``, which exits 0 only while the file is fresh. A file rather than a port:
the process serves nothing else over HTTP, and the root filesystem is read-only but ``/tmp`` is not.
"""

from __future__ import annotations

import time
from pathlib import Path


def liveness_file_is_fresh(path: Path, max_age_s: float, *, now: float | None = None) -> bool:
    """Whether the heartbeat file exists and was touched within ``max_age_s`` seconds."""
    try:
        touched = path.stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - touched <= max_age_s
