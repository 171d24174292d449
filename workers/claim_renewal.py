"""Runs a worker process's :class:`~orders_api.service_layer.claims.ClaimKeeper` while its worker runs."""

from __future__ import annotations

import threading

import dramatiq

from orders_api.service_layer.claims import ClaimKeeper


class ClaimRenewal(dramatiq.Middleware):
    """Renews the process's claims from a thread (a greenlet under gevent) of its own.

    It starts when the worker boots and stops only after the worker has shut down, since the
    placements still running at shutdown hold claims until their outcomes are recorded.
    """

    def __init__(self, keeper: ClaimKeeper) -> None:
        self.keeper = keeper
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start renewing."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.keeper.keep_renewing, args=(self._stop,), name="claim-renewal", daemon=True
        )
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop renewing: no placement is running any more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.keeper.renew_every.total_seconds() + 10)
