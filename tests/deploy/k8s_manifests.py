"""The Kubernetes manifests of ``k8s/``, read for the offline deploy tests, and what they imply.

The tests never talk to a cluster: they load every YAML document under ``k8s/`` and check it
against the schemas and against the rest of the repository (the code's commands, settings and
queue names). What the operators create on a cluster (their pods' labels, their Secrets' keys) is
stated here once, from their documentation and sources, so that references to it can be checked
like references to our own objects.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orders_api.settings.roles import ROLES

#: The repository's root: tests/deploy/ is two levels below it.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the manifests live.
K8S_DIR = REPO_ROOT / "k8s"


#: JSON schemas of the custom resources the manifests use, kept in the repository so that a clone
#: tests alone: ``<group>/<kind>_<version>.json``. Their sources and licences: README.md there.
CRD_SCHEMA_DIR = Path(__file__).resolve().parent / "crd-schemas"
#: The Kubernetes release the core kinds are validated against.
KUBERNETES_VERSION = "1.33"
#: The namespace every object lives in.
NAMESPACE = "orders"
#: Manifests kept out of the kustomize base on purpose (see their opening comments).
OUTSIDE_KUSTOMIZATION = frozenset({"secret.example.yaml", "migrate-job.yaml"})
#: Deployments that run a fixed number of replicas on purpose rather than under an autoscaler,
#: with the count and the reason; every other Deployment must be autoscaled.
FIXED_REPLICAS: dict[str, tuple[int, str]] = {
    "orders-ingestor": (
        1,
        "a second ingestor would publish every report twice (the applier drops repeats: wasted work)",
    ),
    "orders-applier": (
        3,
        "the appliers split the partitions among themselves: past EXECUTION_PARTITIONS a pod only waits",
    ),
}
#: Kinds without a namespace.
CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})

#: Keys of the Secret ``<cluster>-app`` CloudNativePG creates for a Cluster's application user.
CNPG_APP_SECRET_KEYS = frozenset(
    {"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"}
)
#: Keys of the Secret ``<cluster>-default-user`` the RabbitMQ Cluster Operator creates
#: (internal/resource/default_user_secret.go; no TLS, no extra plugins).
RABBITMQ_DEFAULT_USER_SECRET_KEYS = frozenset(
    {"username", "password", "host", "port", "default_user.conf", "provider", "type"}
)


@dataclass(frozen=True)
class Manifest:
    """One YAML document of one file under ``k8s/``."""

    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        """The object's name, or its ``generateName`` prefix for objects created anew each time."""
        metadata = self.doc.get("metadata", {})
        return str(metadata.get("name") or metadata["generateName"])

    @property
    def namespace(self) -> str | None:
        namespace = self.doc.get("metadata", {}).get("namespace")
        return None if namespace is None else str(namespace)

    @property
    def group(self) -> str:
        """The API group: ``apps`` for ``apps/v1``, empty for the core group (``v1``)."""
        api_version = str(self.doc["apiVersion"])
        return api_version.split("/")[0] if "/" in api_version else ""

    @property
    def version(self) -> str:
        return str(self.doc["apiVersion"]).split("/")[-1]

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.doc.get("spec", {})
        return spec

    def __str__(self) -> str:
        return f"{self.path.name}: {self.kind} {self.name}"


@dataclass(frozen=True)
class Workload:
    """A Deployment, Job or CronJob, with the pod template it runs."""

    manifest: Manifest
    template: dict[str, Any]

    @property
    def long_running(self) -> bool:
        """Whether its pods run until stopped (and need probes), unlike a Job's."""
        return self.manifest.kind == "Deployment"

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.template.get("metadata", {}).get("labels", {})
        return labels

    @property
    def pod_spec(self) -> dict[str, Any]:
        pod_spec: dict[str, Any] = self.template["spec"]
        return pod_spec

    @property
    def containers(self) -> list[dict[str, Any]]:
        """Every container of the pod, init containers first, in the order they start."""
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]

    def __str__(self) -> str:
        return str(self.manifest)


def manifest_files() -> list[Path]:
    """Every manifest file under ``k8s/`` (the kustomization is not a Kubernetes object)."""
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def load_manifests() -> list[Manifest]:
    """Every document of every manifest file, in file order."""
    manifests = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                manifests.append(Manifest(path, doc))
    return manifests


def of_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    """The manifests of one kind."""
    return [manifest for manifest in manifests if manifest.kind == kind]


def workloads(manifests: Sequence[Manifest]) -> list[Workload]:
    """The Deployments, Jobs and CronJobs with their pod templates."""
    found = []
    for manifest in manifests:
        if manifest.kind in ("Deployment", "Job"):
            found.append(Workload(manifest, manifest.spec["template"]))
        elif manifest.kind == "CronJob":
            found.append(Workload(manifest, manifest.spec["jobTemplate"]["spec"]["template"]))
    return found


def operator_pod_labels(manifests: Sequence[Manifest]) -> list[tuple[str, dict[str, str]]]:
    """The labels of the pods the operators run for our custom resources.

    CloudNativePG labels each instance ``cnpg.io/cluster: <name>``; the RabbitMQ Cluster Operator
    labels each node ``app.kubernetes.io/name: <name>`` and ``app.kubernetes.io/component:
    rabbitmq`` (plus the RabbitmqCluster's own labels, which it copies).
    """
    pods = []
    for manifest in of_kind(manifests, "Cluster"):
        pods.append((f"CloudNativePG instance of {manifest.name}", {"cnpg.io/cluster": manifest.name}))
    for manifest in of_kind(manifests, "RabbitmqCluster"):
        own: dict[str, str] = manifest.doc.get("metadata", {}).get("labels", {})
        labels = {**own, "app.kubernetes.io/name": manifest.name, "app.kubernetes.io/component": "rabbitmq"}
        pods.append((f"RabbitMQ node of {manifest.name}", labels))
    return pods


def all_pod_labels(manifests: Sequence[Manifest]) -> list[tuple[str, dict[str, str]]]:
    """The labels of every kind of pod the namespace will run, ours and the operators'."""
    ours = [(str(workload), workload.labels) for workload in workloads(manifests)]
    return [*ours, *operator_pod_labels(manifests)]


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``) selects ``labels``."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def secret_keys(manifests: Sequence[Manifest]) -> dict[str, frozenset[str]]:
    """The keys of every Secret a pod may reference: the example Secret's and the operators'."""
    keys = {}
    for manifest in of_kind(manifests, "Secret"):
        names = {*manifest.doc.get("data", {}), *manifest.doc.get("stringData", {})}
        keys[manifest.name] = frozenset(names)
    for manifest in of_kind(manifests, "Cluster"):
        keys[f"{manifest.name}-app"] = CNPG_APP_SECRET_KEYS
    for manifest in of_kind(manifests, "RabbitmqCluster"):
        keys[f"{manifest.name}-default-user"] = RABBITMQ_DEFAULT_USER_SECRET_KEYS
    return keys


def config_maps(manifests: Sequence[Manifest]) -> dict[str, dict[str, str]]:
    """Every ConfigMap's data, by name."""
    return {manifest.name: dict(manifest.doc.get("data", {})) for manifest in of_kind(manifests, "ConfigMap")}


def container_env(
    container: Mapping[str, Any], maps: Mapping[str, Mapping[str, str]]
) -> dict[str, str | None]:
    """The variables a container is given, in Kubernetes' order: ``envFrom`` first, then ``env``.

    A literal value is returned as is; one taken from a Secret or the pod's fields is ``None``
    (unknown until the cluster runs it).
    """
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps.get(source["configMapRef"]["name"], {}))
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value")
    return env


def literal_env(container: Mapping[str, Any], maps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The container's variables with literal values only, as a process would see them."""
    return {name: value for name, value in container_env(container, maps).items() if value is not None}


@dataclass(frozen=True)
class EnvRead:
    """One place the code reads an environment variable."""

    name: str
    #: Whether the code falls back to a value of its own when the variable is unset.
    has_default: bool
    where: str


#: Names the code calls a mapping of environment variables by.
_ENV_MAPPINGS = frozenset({"env", "environ", "environment"})


def _is_env_mapping(node: ast.expr) -> bool:
    """``os.environ``, ``environ`` or ``env``: a mapping of environment variables."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in _ENV_MAPPINGS


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments, to resolve ``env.get(NAME)``."""
    constants = {}
    for statement in tree.body:
        targets: list[ast.expr]
        value: ast.expr | None
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign):
            targets, value = [statement.target], statement.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants.update({target.id: value.value for target in targets if isinstance(target, ast.Name)})
    return constants


def _name_of(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _is_test_of(test: ast.expr, name: str) -> bool:
    """``name``, ``not name``, ``name is None`` or ``name is not None``: a test of whether it was set."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test = test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Is, ast.IsNot)):
        test = test.left
    return isinstance(test, ast.Name) and test.id == name


def _checked_before_use(node: ast.Call, parents: Mapping[ast.AST, ast.AST]) -> bool:
    """Whether ``value = env.get(NAME)`` is followed, in the same function, by a test of ``value``.

    ``configured = env.get(NAME)`` then ``Path(configured) if configured else <default>`` falls
    back as surely as ``env.get(NAME, <default>)``.
    """
    assignment = parents.get(node)
    if not (
        isinstance(assignment, ast.Assign)
        and len(assignment.targets) == 1
        and isinstance(assignment.targets[0], ast.Name)
    ):
        return False
    variable = assignment.targets[0].id
    scope = parents.get(assignment)
    while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
        scope = parents.get(scope)
    if scope is None:
        return False
    for candidate in ast.walk(scope):
        if isinstance(candidate, (ast.If, ast.IfExp, ast.While)) and _is_test_of(candidate.test, variable):
            return True
        if isinstance(candidate, ast.BoolOp) and _is_test_of(candidate.values[0], variable):
            return True
    return False


def reads_in(path: Path, *, root: Path = REPO_ROOT) -> Iterator[EnvRead]:
    """The environment variables one module reads (``where`` relative to ``root``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = _string_constants(tree)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    where = str(path.relative_to(root))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            is_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_env_mapping(func.value)
            is_getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            )
            if not (is_get or is_getenv):
                continue
            name = _name_of(node.args[0], constants)
            if name is None:
                continue
            parent = parents.get(node)
            or_default = (
                isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or) and parent.values[0] is node
            )
            has_default = len(node.args) > 1 or or_default or _checked_before_use(node, parents)
            yield EnvRead(name, has_default, f"{where}:{node.lineno}")
        elif isinstance(node, ast.Subscript) and _is_env_mapping(node.value):
            name = _name_of(node.slice, constants)
            if name is not None and isinstance(node.ctx, ast.Load):
                yield EnvRead(name, False, f"{where}:{node.lineno}")


def env_reads(packages: Sequence[str] = ("orders_api", "workers", "exchange_simulator")) -> list[EnvRead]:
    """Every environment variable the service's code reads: each role's settings (all with a
    default), and any read from the environment directly, found by parsing the modules."""
    reads = [
        EnvRead(name.upper(), not field.is_required(), f"{role.settings.__module__} ({role.name})")
        for role in ROLES
        for name, field in role.settings.model_fields.items()
    ]
    for package in packages:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            reads.extend(reads_in(path))
    return reads


def _port_allowed(
    ports: Sequence[Mapping[str, Any]] | None, port: int, named_ports: Mapping[str, int]
) -> bool:
    if not ports:
        return True
    for allowed in ports:
        number = allowed.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = named_ports.get(number)
        if number is not None and number <= port <= int(allowed.get("endPort", number)):
            return True
    return False


def _peer_allowed(
    peers: Sequence[Mapping[str, Any]] | None, labels: Mapping[str, str], namespace_labels: Mapping[str, str]
) -> bool:
    if not peers:
        return True
    same_namespace = namespace_labels.get("kubernetes.io/metadata.name") == NAMESPACE
    for peer in peers:
        if "ipBlock" in peer:
            continue
        if "namespaceSelector" in peer:
            namespace_ok = selector_matches(peer["namespaceSelector"], namespace_labels)
        else:
            namespace_ok = same_namespace
        if namespace_ok and selector_matches(peer.get("podSelector", {}), labels):
            return True
    return False


def ingress_allowed(
    manifests: Sequence[Manifest],
    *,
    to: Mapping[str, str],
    port: int,
    source: Mapping[str, str],
    source_namespace: str = NAMESPACE,
    named_ports: Mapping[str, int] | None = None,
) -> bool:
    """Whether the NetworkPolicies let a pod labelled ``source`` connect to ``port`` of one labelled ``to``.

    Kubernetes' semantics: a pod selected by no ingress policy takes everything; one selected by
    any takes only what one of their rules allows. ``named_ports`` resolves rules that name a
    container port. A namespace is known by its ``kubernetes.io/metadata.name`` label only.
    """
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
    policies = [
        policy
        for policy in of_kind(manifests, "NetworkPolicy")
        if "Ingress" in policy.spec.get("policyTypes", ["Ingress"])
        and selector_matches(policy.spec["podSelector"], to)
    ]
    if not policies:
        return True
    return any(
        _port_allowed(rule.get("ports"), port, named_ports or {})
        and _peer_allowed(rule.get("from"), source, namespace_labels)
        for policy in policies
        for rule in policy.spec.get("ingress", [])
    )
