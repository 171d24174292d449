"""Every reference between the manifests points at something that will exist on the cluster.

Kubernetes accepts a selector that selects nothing, an autoscaler aimed at a missing Deployment or
a Secret key that does not exist; the mistake shows only later, as a Service without endpoints, an
autoscaler that never acts or a pod stuck in CreateContainerConfigError. These tests resolve each
reference offline, counting what the operators create (their pods and Secrets) as existing.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.k8s_manifests import (
    CLUSTER_SCOPED_KINDS,
    FIXED_REPLICAS,
    K8S_DIR,
    NAMESPACE,
    OUTSIDE_KUSTOMIZATION,
    Manifest,
    Workload,
    all_pod_labels,
    config_maps,
    ingress_allowed,
    load_manifests,
    manifest_files,
    of_kind,
    operator_pod_labels,
    secret_keys,
    selector_matches,
    workloads,
)

pytestmark = pytest.mark.deploy

MANIFESTS = load_manifests()
WORKLOADS = workloads(MANIFESTS)
PODS = all_pod_labels(MANIFESTS)
DEPLOYMENTS = of_kind(MANIFESTS, "Deployment")


def _pods_selected(selector: dict[str, Any]) -> list[str]:
    return [name for name, labels in PODS if selector_matches(selector, labels)]


def _workloads_selected(selector: dict[str, Any]) -> list[Workload]:
    return [workload for workload in WORKLOADS if selector_matches(selector, workload.labels)]


def _autoscaled_targets() -> list[tuple[Manifest, dict[str, Any]]]:
    targets = [(hpa, hpa.spec["scaleTargetRef"]) for hpa in of_kind(MANIFESTS, "HorizontalPodAutoscaler")]
    targets += [(scaled, scaled.spec["scaleTargetRef"]) for scaled in of_kind(MANIFESTS, "ScaledObject")]
    return targets


@pytest.mark.parametrize("manifest", MANIFESTS, ids=str)
def test_every_object_lives_in_the_orders_namespace(manifest: Manifest) -> None:
    """Catches an object applied to `default` with `kubectl apply -f`, out of reach of its peers."""
    expected = None if manifest.kind in CLUSTER_SCOPED_KINDS else NAMESPACE
    assert manifest.namespace == expected


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=str)
def test_a_deployments_selector_matches_its_own_pod_template(deployment: Manifest) -> None:
    """Catches a Deployment whose pods it would not own (the API server refuses it at apply time)."""
    (workload,) = [workload for workload in WORKLOADS if workload.manifest is deployment]

    assert selector_matches(deployment.spec["selector"], workload.labels)


def test_the_deployments_selectors_do_not_overlap() -> None:
    """Catches two Deployments fighting over the same pods, each scaling the other's away."""
    for deployment in DEPLOYMENTS:
        selected = _workloads_selected(deployment.spec["selector"])
        assert [str(workload) for workload in selected] == [str(deployment)]


@pytest.mark.parametrize("pdb", of_kind(MANIFESTS, "PodDisruptionBudget"), ids=str)
def test_a_disruption_budget_protects_exactly_one_kind_of_pod(pdb: Manifest) -> None:
    """Catches a budget that selects nothing (no protection) or several workloads (a shared, wrong bound)."""
    long_running = [(str(w), w.labels) for w in WORKLOADS if w.long_running] + operator_pod_labels(MANIFESTS)
    selected = [name for name, labels in long_running if selector_matches(pdb.spec["selector"], labels)]

    assert len(selected) == 1, selected


def test_every_long_running_pod_has_a_disruption_budget() -> None:
    """Catches a drain evicting every API pod, or two of three RabbitMQ nodes, at once."""
    budgets = [pdb.spec["selector"] for pdb in of_kind(MANIFESTS, "PodDisruptionBudget")]
    long_running = [(str(w), w.labels) for w in WORKLOADS if w.long_running]
    rabbitmq_nodes = [pod for pod in operator_pod_labels(MANIFESTS) if pod[0].startswith("RabbitMQ")]
    for name, labels in [*long_running, *rabbitmq_nodes]:
        assert any(selector_matches(selector, labels) for selector in budgets), f"{name} has no budget"


@pytest.mark.parametrize("service", of_kind(MANIFESTS, "Service"), ids=str)
def test_a_service_selects_pods_and_targets_a_port_they_declare(service: Manifest) -> None:
    """Catches a Service without endpoints, or one sending traffic to a port no container listens on."""
    selected = _workloads_selected({"matchLabels": service.spec["selector"]})
    assert selected, f"{service} selects no pods"
    for workload in selected:
        declared = {
            key
            for container in workload.containers
            for port in container.get("ports", [])
            for key in (port.get("name"), port["containerPort"])
        }
        for port in service.spec["ports"]:
            assert port["targetPort"] in declared, (
                f"{service}: {port['targetPort']} is not a port of {workload}"
            )


@pytest.mark.parametrize("policy", of_kind(MANIFESTS, "NetworkPolicy"), ids=str)
def test_a_network_policy_selects_pods_that_exist(policy: Manifest) -> None:
    """Catches a policy whose label typo leaves the pods it meant to guard (or to admit) unselected."""
    assert _pods_selected(policy.spec["podSelector"]), f"{policy} applies to no pod"
    for rule in policy.spec.get("ingress", []):
        for peer in rule.get("from", []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                assert _pods_selected(peer["podSelector"]), f"{policy}: no pod matches {peer['podSelector']}"


def test_the_namespace_denies_ingress_by_default() -> None:
    """Catches the default-deny policy going missing, which would leave the database open to the cluster."""
    deny_all = [
        policy
        for policy in of_kind(MANIFESTS, "NetworkPolicy")
        if policy.spec["podSelector"] == {}
        and "Ingress" in policy.spec["policyTypes"]
        and not policy.spec.get("ingress")
    ]

    assert deny_all


def _workload(name: str) -> Workload:
    (found,) = [workload for workload in WORKLOADS if workload.manifest.name == name]
    return found


def _named_ports(workload: Workload) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in workload.containers
        for port in container.get("ports", [])
        if "name" in port
    }


#: The pods of the two operator-run clusters, labelled as their operators label them.
DATABASE_PODS = {"cnpg.io/cluster": of_kind(MANIFESTS, "Cluster")[0].name}
BROKER_PODS = {"app.kubernetes.io/name": of_kind(MANIFESTS, "RabbitmqCluster")[0].name}
#: Where each operator runs in its default install, and how its pods are labelled.
CNPG_OPERATOR = ("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
RABBITMQ_OPERATOR = ("rabbitmq-system", {"app.kubernetes.io/component": "rabbitmq-operator"})
KEDA_OPERATOR = ("keda", {"app.kubernetes.io/name": "keda-operator"})


@pytest.mark.parametrize("workload", WORKLOADS, ids=str)
def test_every_pod_of_the_service_reaches_postgresql_and_rabbitmq(workload: Workload) -> None:
    """Catches a policy cutting a role off from the database or the broker: all its work would fail."""
    assert ingress_allowed(MANIFESTS, to=DATABASE_PODS, port=5432, source=workload.labels)
    assert ingress_allowed(MANIFESTS, to=BROKER_PODS, port=5672, source=workload.labels)
    # The management API: orders-broker-setup puts the queue policies, every worker checks them.
    assert ingress_allowed(MANIFESTS, to=BROKER_PODS, port=15672, source=workload.labels)


def test_the_api_takes_requests_from_other_namespaces_on_its_services_port() -> None:
    """Catches the default-deny policy shutting the API off from the ingress controller and other services."""
    for service in of_kind(MANIFESTS, "Service"):
        for workload in _workloads_selected({"matchLabels": service.spec["selector"]}):
            ports = _named_ports(workload)
            for port in service.spec["ports"]:
                target = port["targetPort"]
                number = ports[target] if isinstance(target, str) else int(target)
                assert ingress_allowed(
                    MANIFESTS,
                    to=workload.labels,
                    port=number,
                    source={},
                    source_namespace="ingress",
                    named_ports=ports,
                ), f"{service} -> {workload}:{number}"


@pytest.mark.parametrize(
    ("target", "port"),
    [
        (DATABASE_PODS, 5432),
        (DATABASE_PODS, 8000),
        (BROKER_PODS, 5672),
        (BROKER_PODS, 15672),
        (BROKER_PODS, 25672),
        # The metrics ports: Prometheus only (below), nothing else in the cluster.
        (_workload("orders-workers").labels, 9191),
        (_workload("orders-ingestor").labels, 9192),
        (_workload("orders-applier").labels, 9193),
        # The feed's processes serve nothing else; the default deny must keep any other port shut.
        (_workload("orders-ingestor").labels, 8000),
        (_workload("orders-applier").labels, 8000),
    ],
    ids=str,
)
def test_nothing_outside_the_service_reaches_the_database_the_broker_or_the_services_pods(
    target: dict[str, str], port: int
) -> None:
    """Catches a policy opening PostgreSQL, RabbitMQ, the workers or the feed's pods to the cluster."""
    assert not ingress_allowed(MANIFESTS, to=target, port=port, source={}, source_namespace="elsewhere")
    assert not ingress_allowed(MANIFESTS, to=target, port=port, source={"app": "intruder"})


#: Where Prometheus runs, as the NetworkPolicies expect it (kube-prometheus-stack's usual namespace).
PROMETHEUS_NAMESPACE = "monitoring"


def _scrape_annotations(workload: Workload) -> dict[str, str]:
    annotations: dict[str, str] = workload.template.get("metadata", {}).get("annotations", {})
    return annotations


SCRAPED = [
    workload for workload in WORKLOADS if _scrape_annotations(workload).get("prometheus.io/scrape") == "true"
]


def test_the_workers_and_the_feeds_processes_are_scraped() -> None:
    """Catches a role's metrics left out of the scrape by a lost annotation."""
    assert {workload.manifest.name for workload in SCRAPED} >= {
        "orders-api",
        "orders-workers",
        "orders-ingestor",
        "orders-applier",
    }


@pytest.mark.parametrize("workload", SCRAPED, ids=str)
def test_prometheus_reaches_the_port_each_pod_is_scraped_on(workload: Workload) -> None:
    """Catches a scrape annotation naming a port the pod does not declare, or one the default deny
    keeps Prometheus away from (the workers' metrics were unreachable on a cluster until both
    were checked)."""
    port = int(_scrape_annotations(workload)["prometheus.io/port"])
    ports = _named_ports(workload)

    assert port in ports.values(), f"{workload} declares no port {port}"
    assert ingress_allowed(
        MANIFESTS,
        to=workload.labels,
        port=port,
        source={"app.kubernetes.io/name": "prometheus"},
        source_namespace=PROMETHEUS_NAMESPACE,
        named_ports=ports,
    )


@pytest.mark.parametrize(
    ("operator", "target", "port"),
    [
        (CNPG_OPERATOR, DATABASE_PODS, 8000),
        (CNPG_OPERATOR, DATABASE_PODS, 5432),
        (RABBITMQ_OPERATOR, BROKER_PODS, 15672),
        (KEDA_OPERATOR, BROKER_PODS, 15672),
    ],
    ids=str,
)
def test_the_operators_reach_the_pods_they_manage_as_their_docs_require(
    operator: tuple[str, dict[str, str]], target: dict[str, str], port: int
) -> None:
    """Catches a policy blocking an operator: CloudNativePG could not manage, KEDA could not scale."""
    namespace, labels = operator

    assert ingress_allowed(MANIFESTS, to=target, port=port, source=labels, source_namespace=namespace)


@pytest.mark.parametrize(
    ("pods", "port"),
    [
        (DATABASE_PODS, 5432),
        (DATABASE_PODS, 8000),
        (BROKER_PODS, 4369),
        (BROKER_PODS, 25672),
        (BROKER_PODS, 35672),
    ],
    ids=str,
)
def test_the_nodes_of_each_cluster_reach_each_other(pods: dict[str, str], port: int) -> None:
    """Catches a policy breaking PostgreSQL's replication or RabbitMQ's clustering (epmd, distribution)."""
    assert ingress_allowed(MANIFESTS, to=pods, port=port, source=pods)


@pytest.mark.parametrize(("autoscaler", "target"), _autoscaled_targets(), ids=lambda value: str(value)[:40])
def test_an_autoscaler_targets_an_existing_deployment(autoscaler: Manifest, target: dict[str, Any]) -> None:
    """Catches an autoscaler aimed at a renamed Deployment: it reports an error and never scales."""
    names = {deployment.name for deployment in DEPLOYMENTS}

    assert target.get("kind", "Deployment") == "Deployment" and target["name"] in names, f"{autoscaler}"


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler() -> None:
    """Catches `replicas` on an autoscaled Deployment: every apply would reset the autoscaler's count."""
    autoscaled = {target["name"] for _, target in _autoscaled_targets()}
    fixed = [deployment.name for deployment in DEPLOYMENTS if "replicas" in deployment.spec]

    assert autoscaled and not autoscaled & set(fixed)


def test_every_deployment_is_autoscaled_or_fixed_on_purpose() -> None:
    """Catches a Deployment left at one replica because its autoscaler was forgotten."""
    autoscaled = {target["name"] for _, target in _autoscaled_targets()}
    names = {deployment.name for deployment in DEPLOYMENTS}

    assert names - set(FIXED_REPLICAS) <= autoscaled
    assert set(FIXED_REPLICAS) <= names, "FIXED_REPLICAS names a Deployment that does not exist"


@pytest.mark.parametrize("name", sorted(FIXED_REPLICAS))
def test_a_deployment_fixed_on_purpose_runs_its_count_and_no_autoscaler(name: str) -> None:
    """Catches an autoscaler added to the ingestor (reports published twice) or a replica count drifting."""
    autoscaled = {target["name"] for _, target in _autoscaled_targets()}
    (deployment,) = [deployment for deployment in DEPLOYMENTS if deployment.name == name]
    replicas, reason = FIXED_REPLICAS[name]

    assert name not in autoscaled, reason
    assert deployment.spec.get("replicas") == replicas, reason


def test_the_scaled_object_authenticates_with_an_existing_trigger_authentication() -> None:
    """Catches a ScaledObject pointing at a missing TriggerAuthentication: KEDA then cannot reach RabbitMQ."""
    authentications = {manifest.name for manifest in of_kind(MANIFESTS, "TriggerAuthentication")}
    for scaled in of_kind(MANIFESTS, "ScaledObject"):
        for trigger in scaled.spec["triggers"]:
            assert trigger["authenticationRef"]["name"] in authentications


def _secret_references() -> list[tuple[str, str, str]]:
    """(where, Secret name, key) for every Secret key a pod or KEDA reads."""
    references = []
    for workload in WORKLOADS:
        for container in workload.containers:
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    references.append((f"{workload} {variable['name']}", ref["name"], ref["key"]))
    for authentication in of_kind(MANIFESTS, "TriggerAuthentication"):
        for ref in authentication.spec.get("secretTargetRef", []):
            references.append((f"{authentication} {ref['parameter']}", ref["name"], ref["key"]))
    return references


@pytest.mark.parametrize(
    ("where", "secret", "key"), _secret_references(), ids=lambda value: str(value).split(": ")[-1]
)
def test_every_secret_key_referenced_exists(where: str, secret: str, key: str) -> None:
    """Catches a reference to a Secret or key nobody creates: the pod would never start."""
    keys = secret_keys(MANIFESTS)

    assert secret in keys, f"{where}: no Secret {secret} (ours: example Secret; operators': orders-db-app, …)"
    assert key in keys[secret], f"{where}: Secret {secret} has no key {key}"


def test_every_config_map_and_key_referenced_exists() -> None:
    """Catches a pod reading a ConfigMap or key that does not exist: it would never start."""
    maps = config_maps(MANIFESTS)
    for workload in WORKLOADS:
        for container in workload.containers:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, f"{workload}"
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in maps.get(ref["name"], {}), f"{workload} {variable['name']}"


def test_the_kustomization_lists_every_manifest_but_the_ones_kept_out_on_purpose() -> None:
    """Catches a new manifest forgotten in kustomization.yaml, or one listed that does not exist."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    expected = {path.name for path in manifest_files()} - OUTSIDE_KUSTOMIZATION

    assert sorted(kustomization["resources"]) == sorted(expected)
    assert kustomization["namespace"] == NAMESPACE
