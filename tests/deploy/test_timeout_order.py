"""The manifests keep the time bounds in order (orders_api/timeout_rules.py), grace periods included.

Each process checks the rules it can at start, over its own environment; only here are they all
checked together, over what Kubernetes and Compose would give each role: the ConfigMap's or the
Compose file's variables, the code's defaults for the rest, and the grace periods, the API's
preStop pause and RabbitMQ's consumer timeout, which only the manifests hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from orders_api.settings.api import ApiSettings
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.base import SettingsBase
from orders_api.settings.ingestor import IngestorSettings
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from orders_api.timeout_rules import (
    RABBITMQ_CONSUMER_TIMEOUT_MS,
    RULES,
    Timing,
    applicable,
    broken_rules,
    milliseconds,
    seconds,
)
from orders_testkit.unchecked_settings import unchecked
from tests.deploy.artifacts import app_services, compose_file, duration
from tests.deploy.k8s_manifests import Workload, config_maps, literal_env, load_manifests, of_kind, workloads
from tests.settings_env import settings_under

pytestmark = pytest.mark.deploy

MANIFESTS = load_manifests()
MAPS = config_maps(MANIFESTS)
#: Kubernetes' grace period when a pod sets none; Compose's stop_grace_period when a service sets none.
KUBERNETES_DEFAULT_GRACE_S = 30
COMPOSE_DEFAULT_GRACE = "10s"


def _workload(component: str) -> tuple[Workload, dict[str, Any]]:
    [found] = [w for w in workloads(MANIFESTS) if w.labels.get("app.kubernetes.io/component") == component]
    [container] = found.pod_spec["containers"]
    return found, container


def _consumer_timeout_ms() -> float:
    """``consumer_timeout`` from the RabbitmqCluster's configuration, else RabbitMQ's default."""
    [cluster] = of_kind(MANIFESTS, "RabbitmqCluster")
    config = cluster.spec.get("rabbitmq", {}).get("additionalConfig", "")
    found = re.search(r"^\s*consumer_timeout\s*=\s*(\d+)\s*$", config, re.MULTILINE)
    return float(found.group(1)) if found else RABBITMQ_CONSUMER_TIMEOUT_MS


def deployment_timings(
    envs: Mapping[str, Mapping[str, str]],
    grace_s: Mapping[str, float],
    pre_stop_s: float,
    consumer_timeout_ms: float,
) -> dict[str, Timing]:
    """Every value the rules read, for one deployment: each role's environment (``api``, ``workers``,
    ``sweep``), the grace periods by role, the API's preStop pause and RabbitMQ's consumer timeout.

    The workers' environment gives the shared settings: the rules that also read the sweep's or the
    API's values are checked over those roles' own settings by the tests below as well.
    """
    graceful = unchecked(ApiSettings, envs["api"]).timings()["GRACEFUL_TIMEOUT_S"]
    return {
        **unchecked(WorkerSettings, envs["workers"]).timings(),
        "RABBITMQ_CONSUMER_TIMEOUT_MS": milliseconds("RabbitMQ consumer_timeout", consumer_timeout_ms),
        "GRACEFUL_TIMEOUT_S": graceful,
        "API_PRE_STOP_S": seconds("the API's preStop sleep", pre_stop_s),
        "API_GRACE_PERIOD_S": seconds("the API's grace period", grace_s["api"]),
        "SWEEP_GRACE_PERIOD_S": seconds("the sweep's grace period", grace_s["sweep"]),
        "WORKERS_GRACE_PERIOD_S": seconds("the workers' grace period", grace_s["workers"]),
    }


def kubernetes_timings(config_map: Mapping[str, str] | None = None) -> dict[str, Timing]:
    """:func:`deployment_timings` for k8s/; ``config_map`` replaces the ConfigMap's data if given."""
    maps = MAPS if config_map is None else {**MAPS, "orders-config": dict(config_map)}
    envs, grace_s = {}, {}
    for role in ("api", "workers", "sweep"):
        workload, container = _workload(role)
        envs[role] = literal_env(container, maps)
        grace_s[role] = float(
            workload.pod_spec.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_S)
        )
    _, api = _workload("api")
    pre_stop_s = float(api["lifecycle"]["preStop"]["sleep"]["seconds"])
    return deployment_timings(envs, grace_s, pre_stop_s, _consumer_timeout_ms())


def compose_timings() -> dict[str, Timing]:
    """:func:`deployment_timings` for docker-compose.yml: no preStop, RabbitMQ's default consumer timeout."""
    apps = app_services(compose_file())
    envs = {
        role: {k: str(v) for k, v in apps[role].get("environment", {}).items()}
        for role in ("api", "workers", "sweep")
    }
    grace_s = {
        role: duration(apps[role].get("stop_grace_period", COMPOSE_DEFAULT_GRACE)).total_seconds()
        for role in ("api", "workers", "sweep")
    }
    return deployment_timings(envs, grace_s, 0.0, RABBITMQ_CONSUMER_TIMEOUT_MS)


def test_kubernetes_keeps_every_rule() -> None:
    timings = kubernetes_timings()

    assert applicable(timings) == list(RULES)
    assert broken_rules(timings) == []


def test_compose_keeps_every_rule() -> None:
    timings = compose_timings()

    assert applicable(timings) == list(RULES)
    assert broken_rules(timings) == []


#: The settings each Kubernetes role reads at start (orders_api/settings/roles.py).
ROLE_SETTINGS: dict[str, type[SettingsBase]] = {
    "api": ApiSettings,
    "workers": WorkerSettings,
    "sweep": Settings,
    "ingestor": IngestorSettings,
    "applier": ApplierSettings,
}


@pytest.mark.parametrize("component", list(ROLE_SETTINGS), ids=str)
def test_every_kubernetes_role_starts_with_its_settings_in_order(component: str) -> None:
    """Catches a role given settings (in its own env) that its start would refuse: a bad value, or
    time bounds out of order."""
    _, container = _workload(component)

    settings_under(ROLE_SETTINGS[component], literal_env(container, MAPS))


def test_a_configmap_value_out_of_order_is_caught_naming_both_sides() -> None:
    """The check above can fail: the ConfigMap's old graceful timeout is below a lost COMMIT's lookup."""
    [config_map] = [m for m in of_kind(MANIFESTS, "ConfigMap") if m.name == "orders-config"]
    old = {**config_map.doc["data"], "GRACEFUL_TIMEOUT_S": "20"}

    lines = broken_rules(kubernetes_timings(old))

    assert len(lines) == 1
    assert "must be below GRACEFUL_TIMEOUT_S=20 (20000 ms)" in lines[0]
