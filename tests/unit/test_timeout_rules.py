"""The time bounds' order (orders_api/timeout_rules.py): the defaults keep it, each rule catches a break,
and a role's settings out of order stop its start."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orders_api.settings.api import ApiSettings
from orders_api.settings.base import load
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from orders_api.timeout_rules import (
    RULES,
    Timing,
    applicable,
    broken_rules,
    milliseconds,
    seconds,
)
from orders_testkit.unchecked_settings import unchecked
from tests.settings_env import environment

#: Values only the manifests hold (tests/deploy/test_timeout_order.py reads the real ones).
DEPLOYMENT = {
    "API_PRE_STOP_S": seconds("preStop", 5),
    "API_GRACE_PERIOD_S": seconds("api terminationGracePeriodSeconds", 110),
    "SWEEP_GRACE_PERIOD_S": seconds("sweep terminationGracePeriodSeconds", 90),
    "WORKERS_GRACE_PERIOD_S": seconds("workers terminationGracePeriodSeconds", 45),
}


def timings(
    env: Mapping[str, str] | None = None, deployment: Mapping[str, Timing] | None = None
) -> dict[str, Timing]:
    """Every value the rules read: the code's defaults under ``env``, the deployment's from ``DEPLOYMENT``."""
    return {
        **unchecked(ApiSettings, env).timings(),
        **unchecked(WorkerSettings, env).timings(),
        **DEPLOYMENT,
        **(deployment or {}),
    }


def test_the_defaults_keep_every_rule() -> None:
    values = timings()

    assert applicable(values) == list(RULES)
    assert broken_rules(values) == []


def test_every_rule_but_the_grace_periods_is_checked_by_some_process_at_start() -> None:
    """The API's processes know the shared settings and gunicorn's timeout, the workers theirs too;
    only the manifests know the grace periods."""
    api = unchecked(ApiSettings).timings()
    workers = unchecked(WorkerSettings).timings()
    at_start = {rule.name for rule in [*applicable(api), *applicable(workers)]}

    assert {rule.name for rule in RULES} - at_start == {
        rule.name for rule in RULES if rule.keys & DEPLOYMENT.keys()
    }


#: A setting out of order, and the start of the line that names it.
ENV_CASES = [
    (
        {"STATEMENT_TIMEOUT_MS": "6000"},
        "STATEMENT_TIMEOUT_MS=6000 must be below DB_REPLY_TIMEOUT_S=5 (5000 ms): ",
    ),
    (
        {"CONFIRM_TIMEOUT_S": "3"},
        "CONFIRM_TIMEOUT_S=3 (3000 ms) must be below STATEMENT_TIMEOUT_MS=3000: ",
    ),
    (
        {"IDLE_IN_TRANSACTION_TIMEOUT_MS": "4000"},
        "CONNECT_TIMEOUT_S=2 + CONFIRM_TIMEOUT_S=2 (4000 ms) must be below "
        "IDLE_IN_TRANSACTION_TIMEOUT_MS=4000: ",
    ),
    (
        {"CLAIM_LEASE_MS": "15000"},
        "CLAIM_LEASE_MS=15000 / 5 + 2 * DB_REPLY_TIMEOUT_S=5 (13000 ms) must be below "
        "CLAIM_LEASE_MS=15000 / 2 (7500 ms): ",
    ),
    (
        {"PLACEMENT_TIME_LIMIT_MS": "18000"},
        "PLACEMENT_TIME_LIMIT_MS=18000 / 3 + DB_POOL_TIMEOUT_S=2 + 2 * DB_REPLY_TIMEOUT_S=5 + "
        "PLACEMENT_LATENCY_S=0.5 (18500 ms) must be below PLACEMENT_TIME_LIMIT_MS=18000: ",
    ),
    (
        {"RECONCILE_STALE_AFTER_S": "360"},
        "PLACEMENT_MAX_BACKOFF_MS=300000 + CLAIM_LEASE_MS=40000 + PLACEMENT_TIME_LIMIT_MS=30000 "
        "(370000 ms) must be below RECONCILE_STALE_AFTER_S=360 (360000 ms): ",
    ),
    (
        {"PLACEMENT_MAX_BACKOFF_MS": "1800000", "RECONCILE_STALE_AFTER_S": "7200"},
        "PLACEMENT_MAX_BACKOFF_MS=1800000 must be below RabbitMQ consumer_timeout=1800000: ",
    ),
    (
        {"CLAIM_LEASE_MS": "1799500", "RECONCILE_STALE_AFTER_S": "7200"},
        "CLAIM_LEASE_MS=1799500 + AFTER_CLAIM_JITTER_MS=1000 (1800500 ms) must be below "
        "RabbitMQ consumer_timeout=1800000: ",
    ),
    (
        {"GRACEFUL_TIMEOUT_S": "20"},
        "COMMIT_OUTCOME_WAIT_S=8 + DB_POOL_TIMEOUT_S=2 + 3 * DB_REPLY_TIMEOUT_S=5 (25000 ms) "
        "must be below GRACEFUL_TIMEOUT_S=20 (20000 ms): ",
    ),
]


@pytest.mark.parametrize(("env", "complaint"), ENV_CASES, ids=[next(iter(env)) for env, _ in ENV_CASES])
def test_a_setting_out_of_order_is_named_with_the_one_it_must_stay_below(
    env: dict[str, str], complaint: str
) -> None:
    [line] = broken_rules(timings(env))

    assert line.startswith(complaint), line
    assert "\n" not in line


#: A constant or a manifest's value out of order, and the start of the line that names it.
CONSTANT_CASES = [
    (
        "DATABASE_RETRY_DELAY_MS",
        milliseconds("DATABASE_RETRY_DELAY_MS", 1_800_000),
        "DATABASE_RETRY_DELAY_MS=1800000 must be below RabbitMQ consumer_timeout=1800000: ",
    ),
    (
        "API_GRACE_PERIOD_S",
        seconds("api terminationGracePeriodSeconds", 35),
        "preStop=5 + GRACEFUL_TIMEOUT_S=30 (35000 ms) must be below "
        "api terminationGracePeriodSeconds=35 (35000 ms): ",
    ),
    (
        "SWEEP_GRACE_PERIOD_S",
        seconds("sweep terminationGracePeriodSeconds", 20),
        "COMMIT_OUTCOME_WAIT_S=8 + DB_POOL_TIMEOUT_S=2 + 3 * DB_REPLY_TIMEOUT_S=5 (25000 ms) must be "
        "below sweep terminationGracePeriodSeconds=20 (20000 ms): ",
    ),
    (
        "WORKERS_GRACE_PERIOD_S",
        seconds("workers terminationGracePeriodSeconds", 30),
        "WORKER_SHUTDOWN_TIMEOUT_MS=30000 must be below "
        "workers terminationGracePeriodSeconds=30 (30000 ms): ",
    ),
]


@pytest.mark.parametrize(
    ("key", "value", "complaint"), CONSTANT_CASES, ids=[key for key, _, _ in CONSTANT_CASES]
)
def test_a_constant_or_grace_period_out_of_order_is_named_too(
    key: str, value: Timing, complaint: str
) -> None:
    [line] = broken_rules(timings(deployment={key: value}))

    assert line.startswith(complaint), line


def test_the_cases_above_break_every_rule() -> None:
    """Catches a rule added without a case showing that it fires."""
    cases = [timings(env) for env, _ in ENV_CASES] + [
        timings(deployment={key: value}) for key, value, _ in CONSTANT_CASES
    ]
    broken = {rule.name for values in cases for rule in applicable(values) if rule.broken(values)}

    assert broken == {rule.name for rule in RULES}


def test_a_rule_holds_only_strictly() -> None:
    """Equal bounds race: the shorter must end first."""
    [line] = broken_rules(timings({"STATEMENT_TIMEOUT_MS": "5000"}))

    assert line.startswith("STATEMENT_TIMEOUT_MS=5000 must be below DB_REPLY_TIMEOUT_S=5 (5000 ms)")


def test_a_rule_whose_values_a_process_lacks_is_left_to_others() -> None:
    api = unchecked(Settings, {"STATEMENT_TIMEOUT_MS": "6000"}).timings()

    assert all(rule.keys <= api.keys() for rule in applicable(api))
    assert len(broken_rules(api)) == 1


def test_broken_rules_stop_the_start_with_one_line_each() -> None:
    env = {"STATEMENT_TIMEOUT_MS": "6000", "CLAIM_LEASE_MS": "15000"}

    with environment(WorkerSettings, env), pytest.raises(SystemExit) as stopped:
        load(WorkerSettings)

    lines = str(stopped.value.code).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == ["timeouts out of order"] * 2
    assert lines[0].startswith("timeouts out of order: STATEMENT_TIMEOUT_MS=6000 must be below")
    assert lines[1].startswith("timeouts out of order: CLAIM_LEASE_MS=15000 / 5")


def test_settings_in_order_let_the_start_go_on() -> None:
    with environment(WorkerSettings, {}):
        assert load(WorkerSettings).claim_lease_ms == 40_000
