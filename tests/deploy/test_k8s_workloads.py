"""The pods run the service as its code expects: the contract's commands, settings, probes and limits.

These tests read the manifests next to the code they start: the commands of the shared contract,
the environment variables the code reads (found by parsing orders_api/ and workers/), the shutdown
timeouts computed by the real gunicorn config and ``orders-workers`` command line, and the pool
sizes of the real settings classes. A change on either side that breaks the other fails here.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orders_api.adapters.rabbitmq.connections import connection_parameters
from orders_api.api import gunicorn_config
from orders_api.execution_feed import applier, ingestor
from orders_api.execution_feed.ingestor import Pacing
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.ingestor import IngestorSettings
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from tests.deploy.k8s_manifests import (
    FIXED_REPLICAS,
    Manifest,
    Workload,
    config_maps,
    container_env,
    env_reads,
    literal_env,
    load_manifests,
    of_kind,
    reads_in,
    workloads,
)
from tests.settings_env import settings_under
from workers.serve import worker_command

pytestmark = pytest.mark.deploy

MANIFESTS = load_manifests()
WORKLOADS = workloads(MANIFESTS)
MAPS = config_maps(MANIFESTS)
CONTAINERS = [(workload, container) for workload in WORKLOADS for container in workload.containers]
CONTAINER_IDS = [f"{workload.manifest.name}/{container['name']}" for workload, container in CONTAINERS]

#: The commands of the shared contract, by role.
API_COMMAND = ["gunicorn", "--config", "python:orders_api.api.gunicorn_config", "orders_api.wsgi:app"]
WORKERS_COMMAND = ["orders-workers"]
SWEEP_COMMAND = ["flask", "--app", "orders_api.wsgi", "reconcile"]
MIGRATION_COMMANDS = [["orders-db-upgrade"], ["orders-broker-setup"]]
WORKERS_LIVENESS = ["python", "-m", "workers.liveness", "--max-age", "30"]
INGESTOR_COMMAND = ["orders-ingestor"]
APPLIER_COMMAND = ["orders-applier"]
#: The execution feed's processes' heartbeat checks, and the variable naming each one's file.
INGESTOR_CHECK = ["orders-ingestor", "--check", "--max-age", "30"]
APPLIER_CHECK = ["orders-applier", "--check", "--max-age", "60"]
#: The image every role runs, and the user it runs as.
IMAGE_NAME = "orders-service"
IMAGE_UID = 10001
#: Variables read by libraries rather than by our code, and which library reads them.
LIBRARY_VARIABLES = {
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client (the API's multiprocess metrics)",
    "dramatiq_prom_host": "dramatiq.middleware.prometheus",
    "dramatiq_prom_port": "dramatiq.middleware.prometheus",
}
#: Connections beyond the autoscaled pods' pools: the sweep, a migration, the CloudNativePG
#: operator's and replication's own, and PostgreSQL's reserved superuser slots.
SPARE_CONNECTIONS = 20
#: Connections each worker process opens besides its pool: one for renewing claims
#: (workers/bootstrap.py).
WORKER_EXTRA_CONNECTIONS = 1
#: The confirm timeout the ingestor uses at least, whatever CONFIRM_TIMEOUT_S says (``ingest()``).
INGESTOR_MIN_CONFIRM_TIMEOUT_S = 5.0
#: Round trips of one applier batch: lock the orders, insert the executions, update the orders,
#: commit (orders_api/adapters/postgres/execution_ledger.py ``apply_reports``).
APPLIER_ROUND_TRIPS_PER_BATCH = 4


def _by_command(command: list[str]) -> list[tuple[Workload, dict[str, Any]]]:
    return [
        (workload, container) for workload, container in CONTAINERS if container.get("command") == command
    ]


def _one(command: list[str]) -> tuple[Workload, dict[str, Any]]:
    found = _by_command(command)
    assert len(found) == 1, f"expected one container running {command}, found {len(found)}"
    return found[0]


def _max_replicas(deployment: str) -> int:
    for hpa in of_kind(MANIFESTS, "HorizontalPodAutoscaler"):
        if hpa.spec["scaleTargetRef"]["name"] == deployment:
            return int(hpa.spec["maxReplicas"])
    for scaled in of_kind(MANIFESTS, "ScaledObject"):
        if scaled.spec["scaleTargetRef"]["name"] == deployment:
            return int(scaled.spec["maxReplicaCount"])
    raise AssertionError(f"{deployment} is not autoscaled")


@pytest.fixture
def gunicorn_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mapping[str, Any]]:
    """The API's gunicorn settings as its container's environment makes them (the real config module).

    The module reads the environment when it runs, so a fresh copy of it runs here, under the
    container's variables only, apart from the one other tests may have imported.
    """
    _, container = _one(API_COMMAND)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in literal_env(container, MAPS).items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_config_in_the_api_pod", gunicorn_config.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield vars(module)


def _worker_flag(flag: str) -> int:
    """A flag of the real ``orders-workers`` command line, for the workers container's environment."""
    _, container = _one(WORKERS_COMMAND)
    command = worker_command(settings_under(WorkerSettings, literal_env(container, MAPS)))
    return int(command[command.index(flag) + 1])


def test_every_role_runs_the_command_of_the_shared_contract() -> None:
    """Catches a manifest drifting from the contract's commands, which other branches build against."""
    _one(API_COMMAND)
    _one(WORKERS_COMMAND)
    _one(SWEEP_COMMAND)
    _one(INGESTOR_COMMAND)
    _one(APPLIER_COMMAND)
    (migration,) = [workload for workload in WORKLOADS if workload.manifest.kind == "Job"]
    assert [container["command"] for container in migration.containers] == MIGRATION_COMMANDS
    assert "initContainers" in migration.pod_spec, "the broker setup must wait for the database upgrade"


def test_every_container_runs_the_same_image() -> None:
    """Catches a tag bumped in one manifest only: the API and the workers would run different code."""
    images = {container["image"] for _, container in CONTAINERS}

    assert len(images) == 1, images
    assert images.pop().split(":")[0] == IMAGE_NAME


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_container_requests_resources_and_limits_its_memory(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches a container the scheduler cannot place sensibly, or one whose leak starves its node."""
    resources = container.get("resources", {})

    assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{workload} {container['name']}"
    assert "memory" in resources.get("limits", {}), f"{workload} {container['name']}"


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_container_runs_locked_down(workload: Workload, container: dict[str, Any]) -> None:
    """Catches a container that could run as root, write its image, gain privileges or keep capabilities."""
    effective = {**workload.pod_spec.get("securityContext", {}), **container.get("securityContext", {})}

    assert effective.get("runAsNonRoot") is True
    assert effective.get("runAsUser") == IMAGE_UID
    assert effective.get("readOnlyRootFilesystem") is True
    assert effective.get("allowPrivilegeEscalation") is False
    assert "ALL" in effective.get("capabilities", {}).get("drop", [])
    assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault"


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_container_can_write_to_tmp_and_only_there(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches a read-only container without its writable /tmp (heartbeats, metrics, temp files fail)."""
    volumes = {volume["name"]: volume for volume in workload.pod_spec.get("volumes", [])}
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}

    assert "/tmp" in mounts, f"{workload} {container['name']}"
    for path, name in mounts.items():
        assert path == "/tmp" or path.startswith("/tmp/"), f"{workload}: {path} is outside /tmp"
        assert "emptyDir" in volumes[name]


def test_long_running_containers_have_liveness_and_readiness_probes() -> None:
    """Catches a hung process left running (no liveness) or given traffic before it can serve."""
    long_running = [(workload, container) for workload, container in CONTAINERS if workload.long_running]
    assert long_running
    for workload, container in long_running:
        assert "livenessProbe" in container, f"{workload}"
        assert "readinessProbe" in container, f"{workload}"


def test_the_api_probes_the_contracts_health_endpoints_on_its_http_port() -> None:
    """Catches probes on the wrong path or port: every pod would be restarted or never become ready."""
    _, container = _one(API_COMMAND)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert ports == {"http": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert literal_env(container, MAPS).get("BIND") == "0.0.0.0:8000"


def test_the_workers_probe_their_heartbeat_with_the_contracts_command() -> None:
    """Catches a worker liveness probe that checks nothing, or checks a heartbeat file nobody writes."""
    _, container = _one(WORKERS_COMMAND)
    heartbeat = literal_env(container, MAPS).get("WORKER_LIVENESS_FILE", "")

    assert container["livenessProbe"]["exec"]["command"] == WORKERS_LIVENESS
    assert heartbeat.startswith("/tmp/")
    assert {"name": "metrics", "containerPort": 9191, "protocol": "TCP"} in container["ports"]
    assert literal_env(container, MAPS).get("dramatiq_prom_port") == "9191"


@pytest.mark.parametrize(
    ("command", "variable", "port"),
    [(INGESTOR_COMMAND, "INGESTOR_METRICS_PORT", 9192), (APPLIER_COMMAND, "APPLIER_METRICS_PORT", 9193)],
    ids=["ingestor", "applier"],
)
def test_the_feeds_processes_serve_metrics_on_the_port_they_declare_beyond_loopback(
    command: list[str], variable: str, port: int
) -> None:
    """Catches the ingestor or an applier serving metrics on another port than the one declared
    and scraped, or on the pod's loopback, where no scrape reaches them."""
    _, container = _one(command)
    env = literal_env(container, MAPS)

    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    assert env.get(variable) == str(port)
    assert env.get("EXECUTION_METRICS_HOST") == "0.0.0.0"


def test_the_api_grace_period_covers_its_pre_stop_pause_and_gunicorns_graceful_timeout(
    gunicorn_settings: Mapping[str, Any],
) -> None:
    """Catches a kubelet SIGKILL arriving while gunicorn still answers accepted requests."""
    workload, container = _one(API_COMMAND)
    pre_stop = int(container["lifecycle"]["preStop"]["sleep"]["seconds"])
    graceful_timeout = int(gunicorn_settings["graceful_timeout"])

    assert pre_stop >= 1
    assert workload.pod_spec["terminationGracePeriodSeconds"] > graceful_timeout + pre_stop


def test_the_workers_grace_period_exceeds_their_shutdown_timeout() -> None:
    """Catches a kubelet SIGKILL arriving while Dramatiq still waits for placements in flight."""
    workload, _ = _one(WORKERS_COMMAND)
    shutdown_timeout_ms = _worker_flag("--worker-shutdown-timeout")

    assert workload.pod_spec["terminationGracePeriodSeconds"] * 1000 > shutdown_timeout_ms


def test_the_code_reads_its_settings_where_the_scan_looks() -> None:
    """Catches the source scan going blind (settings read another way): the tests below would pass."""
    names = {read.name for read in env_reads()}

    assert {
        "DATABASE_URL",
        "RABBITMQ_URL",
        "PLACEMENT_QUEUE",
        "GRACEFUL_TIMEOUT_S",
        "WORKER_LIVENESS_FILE",
        "FEED_URL",
        "EXECUTION_QUEUE_PREFIX",
        "EXECUTION_PARTITIONS",
        "INGEST_BATCH",
        "INGESTOR_HEARTBEAT_FILE",
        "APPLIER_HEARTBEAT_FILE",
    } <= names


@pytest.mark.parametrize(
    ("source", "has_default"),
    [
        ("def f(env):\n    value = env.get('X')\n    return value if value else 'd'\n", True),
        ("def f(env):\n    value = env.get('X')\n    if value is None:\n        value = 'd'\n", True),
        ("def f(env):\n    return env.get('X') or 'd'\n", True),
        ("def f(env):\n    value = env.get('X')\n    return int(value)\n", False),
        ("def f(env):\n    return env['X']\n", False),
    ],
    ids=["tested-by-ifexp", "tested-by-if", "or-default", "used-unchecked", "subscript"],
)
def test_the_scan_counts_a_read_tested_before_use_as_having_a_default(
    source: str, has_default: bool, tmp_path: Path
) -> None:
    """Catches the scan calling `x = env.get(N)`, `x if x else d` required, or missing a real requirement."""
    module = tmp_path / "module.py"
    module.write_text(source, encoding="utf-8")

    (read,) = reads_in(module, root=tmp_path)

    assert (read.name, read.has_default) == ("X", has_default)


def test_every_variable_the_code_reads_without_a_default_is_set() -> None:
    """Catches a setting the code requires (no fallback) that no container is given."""
    workers_env = container_env(_one(WORKERS_COMMAND)[1], MAPS)
    for read in env_reads():
        if read.has_default:
            continue
        if read.where.startswith("workers/"):
            assert read.name in workers_env, f"{read.name} ({read.where}) is not set for the workers"
        else:
            for workload, container in CONTAINERS:
                assert read.name in container_env(container, MAPS), (
                    f"{read.name} ({read.where}) unset in {workload}"
                )


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_container_is_given_the_databases_and_brokers_addresses(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches a container falling back to the code's defaults, PostgreSQL and RabbitMQ on 127.0.0.1."""
    env = container_env(container, MAPS)

    assert "DATABASE_URL" in env and "RABBITMQ_URL" in env, f"{workload} {container['name']}"


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_variable_set_is_read_by_the_code_or_a_library(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches a misspelt variable (`PLACEMNT_QUEUE`): the code would silently ignore it for its default."""
    read = {read.name for read in env_reads()}
    env = container_env(container, MAPS)
    composed = {
        name
        for value in env.values()
        if value
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value)
    }

    unread = set(env) - read - set(LIBRARY_VARIABLES) - composed
    assert unread == set(), f"{workload} {container['name']}"


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_every_composed_variable_refers_to_one_defined_before_it(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches `$(VAR)` naming a variable defined later or not at all: Kubernetes leaves it verbatim."""
    defined = set(container_env({"envFrom": container.get("envFrom", [])}, MAPS))
    for variable in container.get("env", []):
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value", "")):
            assert name in defined, f"{workload}: {variable['name']} uses $({name}) before it is defined"
        defined.add(variable["name"])


def test_the_workers_scale_on_the_queue_the_api_publishes_to() -> None:
    """Catches KEDA watching a queue nobody uses: the workers would never scale with the backlog."""
    _, container = _one(WORKERS_COMMAND)
    placement_queue = settings_under(Settings, literal_env(container, MAPS)).placement_queue
    (scaled,) = of_kind(MANIFESTS, "ScaledObject")
    (trigger,) = scaled.spec["triggers"]

    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == placement_queue
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert scaled.spec["minReplicaCount"] >= 1


def test_every_role_publishes_to_the_same_placement_queue() -> None:
    """Catches the API publishing to one queue while the workers consume another."""
    queues = {
        settings_under(Settings, literal_env(container, MAPS)).placement_queue for _, container in CONTAINERS
    }

    assert len(queues) == 1, queues


def _engine_pool_size(module: Path) -> int:
    """The ``pool_size`` a process's ``create_engine(...)`` call passes, read from its module's source.

    Its engine has no overflow (``orders_api.adapters.postgres.database.engine_options``), so this is the
    most connections the process opens.
    """
    tree = ast.parse(module.read_text(encoding="utf-8"))
    sizes = [
        keyword.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "create_engine"
        for keyword in node.keywords
        if keyword.arg == "pool_size" and isinstance(keyword.value, ast.Constant)
    ]
    assert len(sizes) == 1 and isinstance(sizes[0], int), f"{module}: expected one create_engine(pool_size=N)"
    return sizes[0]


#: The processes of fixed-size Deployments, by command, and the module that opens their engine.
FIXED_PROCESSES = {
    tuple(INGESTOR_COMMAND): Path(ingestor.__file__),
    tuple(APPLIER_COMMAND): Path(applier.__file__),
}


def _most_pods_of_fixed(workload: Workload) -> int:
    """Replicas plus the pods a rolling update may add (none with ``Recreate``)."""
    spec = workload.manifest.spec
    strategy = spec.get("strategy", {})
    surge = (
        0 if strategy.get("type") == "Recreate" else int(strategy.get("rollingUpdate", {}).get("maxSurge", 1))
    )
    return int(spec["replicas"]) + surge


def test_the_connection_budget_counts_every_fixed_deployment() -> None:
    """Catches the connection budget below going blind: a pool size it cannot read, or a process it misses."""
    fixed = {
        workload.manifest.name
        for workload, container in CONTAINERS
        if tuple(container["command"]) in FIXED_PROCESSES
    }

    assert fixed == set(FIXED_REPLICAS)
    assert all(_engine_pool_size(module) >= 1 for module in FIXED_PROCESSES.values())


def test_postgresql_accepts_every_connection_the_pods_may_open(
    gunicorn_settings: Mapping[str, Any],
) -> None:
    """Catches scaling past max_connections: new pods would fail every request with 'too many clients'."""
    _, api = _one(API_COMMAND)
    api_workload, _ = _one(API_COMMAND)
    workers_workload, workers = _one(WORKERS_COMMAND)
    api_pool = settings_under(Settings, literal_env(api, MAPS)).db_pool_size
    worker_pool = settings_under(WorkerSettings, literal_env(workers, MAPS)).worker_db_pool_size
    fixed = sum(
        _most_pods_of_fixed(workload) * _engine_pool_size(FIXED_PROCESSES[tuple(container["command"])])
        for workload, container in CONTAINERS
        if tuple(container["command"]) in FIXED_PROCESSES
    )
    needed = (
        _max_replicas(api_workload.manifest.name) * int(gunicorn_settings["workers"]) * api_pool
        + _max_replicas(workers_workload.manifest.name)
        * _worker_flag("--processes")
        * (worker_pool + WORKER_EXTRA_CONNECTIONS)
        + fixed
        + SPARE_CONNECTIONS
    )
    (database,) = of_kind(MANIFESTS, "Cluster")

    assert fixed > 0
    assert int(database.spec["postgresql"]["parameters"]["max_connections"]) >= needed


def _cluster(kind: str) -> Manifest:
    (cluster,) = of_kind(MANIFESTS, kind)
    return cluster


def test_postgresql_and_rabbitmq_survive_the_loss_of_one_node() -> None:
    """Catches a single-instance database or broker, or a broker that keeps serving a minority partition."""
    database, broker = _cluster("Cluster"), _cluster("RabbitmqCluster")

    assert database.spec["instances"] >= 3
    assert database.spec["postgresql"]["synchronous"]["number"] >= 1
    assert broker.spec["replicas"] == 3
    assert re.search(
        r"^\s*cluster_partition_handling\s*=\s*pause_minority\s*$",
        broker.spec["rabbitmq"]["additionalConfig"],
        re.M,
    )


#: What the RabbitMQ operator puts in its default-user Secret, in shape: a generated user and a
#: URL-safe base64 password (internal/resource/default_user_secret.go), the Service's host, AMQP's port.
RABBITMQ_SECRET_SAMPLE = {
    "username": "default_user_Qx-9_zT4",
    "password": "hP3-kT_9wQzL8m-Vn_2sYc7B",
    "host": "orders-rabbitmq.orders.svc",
    "port": "5672",
}


def _expanded(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables after Kubernetes' ``$(VAR)`` expansion, Secrets filled with samples."""
    values: dict[str, str] = {}
    for name, value in literal_env({"envFrom": container.get("envFrom", [])}, MAPS).items():
        values[name] = value
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"].endswith("-default-user"):
            values[variable["name"]] = RABBITMQ_SECRET_SAMPLE[ref["key"]]
        elif "value" in variable:
            values[variable["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda match: values[match[1]], variable["value"]
            )
    return values


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=CONTAINER_IDS)
def test_the_composed_broker_url_reaches_the_operators_service_as_its_user(
    workload: Workload, container: dict[str, Any]
) -> None:
    """Catches a composed RABBITMQ_URL the app misreads: wrong vhost, port, or user and password swapped."""
    url = _expanded(container)["RABBITMQ_URL"]

    (node,) = connection_parameters(
        url, connect_timeout_s=1, blocked_connection_timeout_s=1, connection_name="deploy-test"
    )

    assert (node.host, node.port, node.virtual_host) == ("orders-rabbitmq.orders.svc", 5672, "/")
    assert (node.credentials.username, node.credentials.password) == (
        RABBITMQ_SECRET_SAMPLE["username"],
        RABBITMQ_SECRET_SAMPLE["password"],
    )


#: Enters a container's environment (the ``in_container`` fixture).
EnterContainer = Callable[[Mapping[str, Any]], None]


@pytest.fixture
def in_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[EnterContainer]:
    """Sets the process environment to a container's literal variables, for code reading ``os.environ``."""

    def enter(container: Mapping[str, Any]) -> None:
        for name in list(os.environ):
            monkeypatch.delenv(name)
        for name, value in literal_env(container, MAPS).items():
            monkeypatch.setenv(name, value)

    yield enter


@pytest.mark.parametrize(
    ("command", "check", "variable"),
    [
        (INGESTOR_COMMAND, INGESTOR_CHECK, "INGESTOR_HEARTBEAT_FILE"),
        (APPLIER_COMMAND, APPLIER_CHECK, "APPLIER_HEARTBEAT_FILE"),
    ],
    ids=["ingestor", "applier"],
)
def test_the_feed_processes_probe_the_heartbeat_their_loop_touches(
    command: list[str], check: list[str], variable: str
) -> None:
    """Catches a probe checking another file than the process touches, or one outside the writable /tmp."""
    _, container = _one(command)
    heartbeat = literal_env(container, MAPS).get(variable, "")

    assert heartbeat.startswith("/tmp/")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == check, probe
    # Their only port is the metrics port (below): a probe by HTTP would prove only that
    # prometheus_client's thread answers, not that the loop turns.
    assert [port["name"] for port in container["ports"]] == ["metrics"]


def test_the_ingestor_and_the_appliers_agree_on_the_partition_queues(in_container: EnterContainer) -> None:
    """Catches the ingestor publishing to queues (or a partition count) the appliers do not consume."""
    in_container(_one(INGESTOR_COMMAND)[1])
    ingestor_settings = IngestorSettings()
    applier_settings = settings_under(ApplierSettings, literal_env(_one(APPLIER_COMMAND)[1], MAPS))

    assert (ingestor_settings.execution_queue_prefix, ingestor_settings.execution_partitions) == (
        applier_settings.execution_queue_prefix,
        applier_settings.execution_partitions,
    )
    assert applier_settings.applier_heartbeat_file.parent == Path("/tmp")
    assert ingestor_settings.ingestor_heartbeat_file.parent == Path("/tmp")


def test_the_ingestor_follows_a_websocket_feed_from_its_resume_point(in_container: EnterContainer) -> None:
    """Catches the ingestor left on the simulator's localhost default, or a URL pinning the resume point."""
    in_container(_one(INGESTOR_COMMAND)[1])
    feed_url = IngestorSettings().feed_url

    assert feed_url != IngestorSettings.model_fields["feed_url"].default
    assert re.match(r"^wss?://[^/]+/", feed_url), feed_url
    assert "from=" not in feed_url, "the ingestor adds `from` from its stored resume point"


def test_the_ingestor_never_runs_twice_during_a_rollout() -> None:
    """Catches a rolling update starting a second ingestor: every report would be published twice."""
    workload, _ = _one(INGESTOR_COMMAND)

    assert workload.manifest.spec["strategy"] == {"type": "Recreate"}
    assert workload.manifest.spec["replicas"] == 1


def test_the_ingestors_grace_period_covers_its_last_publish_and_resume_point(
    in_container: EnterContainer,
) -> None:
    """Catches a SIGKILL while the ingestor still waits for confirms or stores its resume point.

    Worst case: two tries of the run in flight (connect, confirm), the backoff between them, then
    storing the resume point (connect, one round trip).
    """
    workload, container = _one(INGESTOR_COMMAND)
    in_container(container)
    settings = IngestorSettings()
    one_try = settings.connect_timeout_s + max(settings.confirm_timeout_s, INGESTOR_MIN_CONFIRM_TIMEOUT_S)
    worst = 2 * one_try + Pacing().backoff_cap_s + settings.connect_timeout_s + settings.db_reply_timeout_s

    assert workload.pod_spec["terminationGracePeriodSeconds"] > worst


def test_the_appliers_grace_period_covers_the_batch_in_hand() -> None:
    """Catches a SIGKILL while an applier commits its last batch (harmless: redelivered to the standby)."""
    workload, container = _one(APPLIER_COMMAND)
    settings = settings_under(ApplierSettings, literal_env(container, MAPS))
    worst = settings.connect_timeout_s + APPLIER_ROUND_TRIPS_PER_BATCH * settings.db_reply_timeout_s

    assert workload.pod_spec["terminationGracePeriodSeconds"] > worst
