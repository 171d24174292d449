"""The order the service's time bounds must keep, stated once, as data, and checked at every start.

Many waits are bounded by settings of their own, and several guarantees hold only while one bound
stays below another: the client-side database deadline must outlast the server's statement
timeout, a claim must be renewed before half of its lease is gone, a pod's grace period must
outlast a lost COMMIT's lookup. Each such dependency is a :class:`Rule` here, between two sums of
named values (:class:`Timing`), with the reason it exists; :func:`broken_rules` returns one line
per broken rule, naming the environment variables (or constants, or manifest fields) involved.

A process knows only some of the values (the API does not read the workers' settings), so each
rule is checked by every role's settings that hold all its values, as they validate
(:class:`orders_api.settings.shared.Settings`): the API's and the other ``orders_api`` processes'
check the database's rules, the workers' also the claims', retries' and sweep's, and
``tests/deploy/test_timeout_order.py`` checks every rule over the manifests' values and grace
periods. The table is in docs/timeouts.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from exchange_simulator.stock_exchange import PLACEMENT_LATENCY_S
from orders_api.service_layer.claims import RENEWALS_PER_LEASE

#: Seconds the lookup of a lost COMMIT's outcome (:mod:`orders_api.adapters.postgres.commit_outcome`)
#: goes on trying, at most; no attempt starts after it, and one takes at most a connection
#: (``CONNECT_TIMEOUT_S``, 2 s) and a reply (``DB_REPLY_TIMEOUT_S``, 5 s). With the lost COMMIT's
#: own reply deadline (5 s) before it, a request whose COMMIT reply was lost is answered within
#: about 20 s, gunicorn's graceful timeout, so that a pod's shutdown does not cut the lookup off
#: and leave its clients with no answer. A database away for longer gets the ambiguous ``500``.
COMMIT_OUTCOME_WAIT_S = 8.0
#: RabbitMQ's ``consumer_timeout`` (its default, which k8s/rabbitmq-cluster.yaml sets explicitly):
#: a delivery unacked for longer closes its channel. Dramatiq holds a delayed retry unacked until
#: its time comes, so every retry delay must stay below it.
RABBITMQ_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000
#: The jitter :func:`workers.placement_actor.after_claim_ms` adds, at most, to the rest of a claim.
AFTER_CLAIM_JITTER_MS = 1000


@dataclass(frozen=True)
class Timing:
    """One value a rule reads: how an operator knows it, as written there, and its unit."""

    #: The environment variable, constant or manifest field, e.g. ``STATEMENT_TIMEOUT_MS``.
    label: str
    value: float
    #: Milliseconds per unit of ``value``: 1 for ``..._MS``, 1000 for ``..._S``.
    unit_ms: int

    @property
    def ms(self) -> float:
        """The value in milliseconds."""
        return self.value * self.unit_ms

    def __str__(self) -> str:
        return f"{self.label}={self.value:.15g}"


def seconds(label: str, value: float) -> Timing:
    """A value given in seconds."""
    return Timing(label, value, 1000)


def milliseconds(label: str, value: float) -> Timing:
    """A value given in milliseconds."""
    return Timing(label, value, 1)


#: The values one process or one deployment knows, by the key the rules name them with.
Timings = Mapping[str, Timing]


@dataclass(frozen=True)
class Term:
    """One addend of a rule's side: a named value times a factor."""

    key: str
    factor: Fraction = Fraction(1)

    def ms(self, timings: Timings) -> float:
        """The term's value in milliseconds."""
        return float(timings[self.key].ms * self.factor)

    def text(self, timings: Timings) -> str:
        """The term as the complaint writes it: ``2 * DB_REPLY_TIMEOUT_S=5``, ``CLAIM_LEASE_MS=40000 / 5``."""
        value = str(timings[self.key])
        if self.factor == 1:
            return value
        if self.factor.numerator == 1:
            return f"{value} / {self.factor.denominator}"
        return f"{self.factor} * {value}"


@dataclass(frozen=True)
class Rule:
    """``shorter`` (a sum) must stay strictly below ``longer`` (a sum), for the reason ``why``."""

    name: str
    shorter: tuple[Term, ...]
    longer: tuple[Term, ...]
    why: str

    @property
    def keys(self) -> frozenset[str]:
        """Every value the rule reads."""
        return frozenset(term.key for term in (*self.shorter, *self.longer))

    def broken(self, timings: Timings) -> str | None:
        """The one-line complaint if ``timings`` break the rule, else ``None``."""
        if _total(self.shorter, timings) < _total(self.longer, timings):
            return None
        return f"{_side(self.shorter, timings)} must be below {_side(self.longer, timings)}: {self.why}"


def _total(side: Sequence[Term], timings: Timings) -> float:
    return sum(term.ms(timings) for term in side)


def _side(side: Sequence[Term], timings: Timings) -> str:
    """``A=1 + 2 * B=3 (7000 ms)``; the total is left out for one value already in milliseconds."""
    text = " + ".join(term.text(timings) for term in side)
    [first, *others] = side
    if not others and first.factor == 1 and timings[first.key].unit_ms == 1:
        return text
    return f"{text} ({_total(side, timings):.15g} ms)"


_LEASE = "CLAIM_LEASE_MS"
_REPLY = "DB_REPLY_TIMEOUT_S"
_TIME_LIMIT = "PLACEMENT_TIME_LIMIT_MS"
_MAX_BACKOFF = "PLACEMENT_MAX_BACKOFF_MS"
_CONSUMER_TIMEOUT = "RABBITMQ_CONSUMER_TIMEOUT_MS"
#: How long a request whose COMMIT was cut off may still look up its outcome
#: (:func:`orders_api.service_layer.unit_of_work.transaction_committed`): the wait, then the last
#: look, begun just before its deadline (a pooled connection; ending the lost transaction and
#: reading its status, each bounded by the reply deadline, as the connection itself is).
_COMMIT_LOOKUP = (Term("COMMIT_OUTCOME_WAIT_S"), Term("DB_POOL_TIMEOUT_S"), Term(_REPLY, Fraction(3)))

RULES: tuple[Rule, ...] = (
    Rule(
        "statement timeout below the reply deadline",
        (Term("STATEMENT_TIMEOUT_MS"),),
        (Term(_REPLY),),
        "the client's deadline must only fire when the server cannot enforce its own (frozen, cut "
        "off); below it, a slow statement loses its connection instead of a clean error",
    ),
    Rule(
        "confirm wait below the statement timeout",
        (Term("CONFIRM_TIMEOUT_S"),),
        (Term("STATEMENT_TIMEOUT_MS"),),
        "a request holds its order's creation lock and its Idempotency-Key row while it waits for "
        "the confirm; a retry with the same key and the worker waiting for the order wait on those "
        "locks within the statement timeout, and would fail while the first request still succeeds",
    ),
    Rule(
        "publish wait below the idle-in-transaction timeout",
        (Term("CONNECT_TIMEOUT_S"), Term("CONFIRM_TIMEOUT_S")),
        (Term("IDLE_IN_TRANSACTION_TIMEOUT_MS"),),
        "the order's transaction sits idle while the publisher waits for its connection, then for "
        "the confirm; PostgreSQL would end it, and the COMMIT after a confirmed publish would fail",
    ),
    Rule(
        "claim renewed before its lease runs out",
        (Term(_LEASE, Fraction(1, RENEWALS_PER_LEASE)), Term(_REPLY, Fraction(2))),
        (Term(_LEASE, Fraction(1, 2)),),
        "a claim is renewed once less than half its lease is left, by the renewal after the last "
        "that found it not due: that one may take a reply deadline, then the pause between "
        "renewals, then its own reply deadline; later, the claim lapses under a living holder and "
        "another delivery may call the exchange again",
    ),
    Rule(
        "breaker wait and claim within the time limit",
        (
            Term(_TIME_LIMIT, Fraction(1, 3)),
            Term("DB_POOL_TIMEOUT_S"),
            Term(_REPLY, Fraction(2)),
            Term("PLACEMENT_LATENCY_S"),
        ),
        (Term(_TIME_LIMIT),),
        "a message waits up to a third of its time limit for the circuit breaker, then claims its "
        "order (a pooled connection, a read, a compare-and-set) and calls the exchange; the time "
        "limit must not cut that short",
    ),
    Rule(
        "stale threshold above a healthy order's quiet time",
        (Term(_MAX_BACKOFF), Term(_LEASE), Term(_TIME_LIMIT)),
        (Term("RECONCILE_STALE_AFTER_S"),),
        "a healthy pending order goes untouched for up to the longest retry backoff, plus a lease "
        "when its retry meets a claim, plus a delivery's run before it touches the order; the sweep "
        "would republish it while its message lives",
    ),
    Rule(
        "retry backoff below RabbitMQ's consumer timeout",
        (Term(_MAX_BACKOFF),),
        (Term(_CONSUMER_TIMEOUT),),
        "Dramatiq holds a delayed retry unacked until it is due; RabbitMQ closes a channel holding "
        "a delivery longer than its consumer timeout",
    ),
    Rule(
        "claim retry below RabbitMQ's consumer timeout",
        (Term(_LEASE), Term("AFTER_CLAIM_JITTER_MS")),
        (Term(_CONSUMER_TIMEOUT),),
        "a delivery that meets a live claim is retried after the rest of the lease plus jitter, "
        "held unacked meanwhile",
    ),
    Rule(
        "database retry below RabbitMQ's consumer timeout",
        (Term("DATABASE_RETRY_DELAY_MS"),),
        (Term(_CONSUMER_TIMEOUT),),
        "a delivery that cannot reach the database is retried after this delay, held unacked meanwhile",
    ),
    Rule(
        "gunicorn's graceful timeout above a lost COMMIT's lookup",
        _COMMIT_LOOKUP,
        (Term("GRACEFUL_TIMEOUT_S"),),
        "a request whose COMMIT was cut off answers only once it knows the outcome; killed sooner, "
        "its client gets no answer for an order that may exist",
    ),
    Rule(
        "the API's grace period above its preStop pause and graceful timeout",
        (Term("API_PRE_STOP_S"), Term("GRACEFUL_TIMEOUT_S")),
        (Term("API_GRACE_PERIOD_S"),),
        "SIGKILL would cut off requests gunicorn is still answering",
    ),
    Rule(
        "the sweep's grace period above a lost COMMIT's lookup",
        _COMMIT_LOOKUP,
        (Term("SWEEP_GRACE_PERIOD_S"),),
        "a sweep's republishing transaction whose COMMIT was cut off looks up its outcome before it exits",
    ),
    Rule(
        "the workers' grace period above their shutdown timeout",
        (Term("WORKER_SHUTDOWN_TIMEOUT_MS"),),
        (Term("WORKERS_GRACE_PERIOD_S"),),
        "SIGKILL would end placements Dramatiq is still waiting for, leaving their claims to lapse",
    ),
)


def constant_timings() -> dict[str, Timing]:
    """The values fixed in the code that the rules read."""
    return {
        "COMMIT_OUTCOME_WAIT_S": seconds("COMMIT_OUTCOME_WAIT_S", COMMIT_OUTCOME_WAIT_S),
        "PLACEMENT_LATENCY_S": seconds("PLACEMENT_LATENCY_S", PLACEMENT_LATENCY_S),
        "AFTER_CLAIM_JITTER_MS": milliseconds("AFTER_CLAIM_JITTER_MS", AFTER_CLAIM_JITTER_MS),
        _CONSUMER_TIMEOUT: milliseconds("RabbitMQ consumer_timeout", RABBITMQ_CONSUMER_TIMEOUT_MS),
    }


def applicable(timings: Timings) -> list[Rule]:
    """The rules whose every value ``timings`` hold."""
    return [rule for rule in RULES if rule.keys <= timings.keys()]


def broken_rules(timings: Timings) -> list[str]:
    """One line for each applicable rule that ``timings`` break, in :data:`RULES` order."""
    return [line for rule in applicable(timings) if (line := rule.broken(timings)) is not None]
