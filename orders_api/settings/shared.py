"""The settings every process of the service reads, and the order their time bounds must keep.

:class:`Settings` composes the database's, the broker's and logging's pieces with the waits that
span them. Every role's class (:mod:`orders_api.settings.roles`) builds on it, and each checks,
as it validates, every rule of :mod:`orders_api.timeout_rules` whose values it holds: settings
out of order stop the start as a bad value does, one line per broken rule.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from orders_api.settings.broker import BrokerSettings
from orders_api.settings.database import DatabaseSettings
from orders_api.settings.logs import LoggingSettings
from orders_api.timeout_rules import Timing, broken_rules, constant_timings

#: Milliseconds per unit of a duration, by its name's suffix (``..._S``, ``..._MS``).
UNIT_MS = {"s": 1000, "ms": 1}


class Settings(DatabaseSettings, BrokerSettings, LoggingSettings):
    """Connection targets and the bounds on every wait the service makes."""

    connect_timeout_s: float = Field(
        2.0, gt=0, description="Longest wait to open a TCP connection to PostgreSQL or RabbitMQ."
    )
    #: Past it the order is withdrawn, never to be committed, and the answer is ``500``. Below
    #: clients' usual timeouts, so that a stuck database still gets them an answer: only the
    #: orders of a batch already running wait longer, for its outcome.
    group_commit_wait_s: float = Field(
        5.0, gt=0, description="Longest wait of a request without an Idempotency-Key for a group commit."
    )
    #: It must exceed the longest quiet period of a healthy order: the longest retry backoff
    #: (``PLACEMENT_MAX_BACKOFF_MS``) plus a claim's lease (``CLAIM_LEASE_MS``) plus a delivery's
    #: time limit (``PLACEMENT_TIME_LIMIT_MS``), and a margin (:mod:`orders_api.timeout_rules`).
    reconcile_stale_after_s: float = Field(
        900.0, gt=0, description="Age of an untouched pending order at which the sweep republishes it."
    )

    def timings(self) -> dict[str, Timing]:
        """Every duration of these settings, under its variable's name, with the code's constants."""
        durations = {
            name.upper(): Timing(name.upper(), value, UNIT_MS[unit])
            for name, value in self
            if (unit := name.rsplit("_", 1)[-1]) in UNIT_MS
        }
        return {**constant_timings(), **durations}

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> Self:
        if lines := broken_rules(self.timings()):
            raise PydanticCustomError(
                "timeouts_out_of_order",
                "{lines}",
                {"lines": "\n".join(f"timeouts out of order: {line}" for line in lines)},
            )
        return self
