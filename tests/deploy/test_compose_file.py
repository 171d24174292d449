"""docker-compose.yml, checked without a Docker engine.

The Compose spec's JSON schema (shipped with check-jsonschema) catches what Compose would refuse;
the cross-checks catch what it would accept and then get wrong: a command the image does not
have, a probe at a path the API does not serve, a container killed mid-shutdown, a service that
starts before the database is migrated, an app that looks for PostgreSQL on its own loopback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from orders_api.api.app import create_app
from orders_api.settings.api import ApiSettings
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from tests.deploy.artifacts import (
    COMPOSE_FILE,
    app_services,
    command_lines,
    compose_file,
    console_scripts,
    dockerfile_stages,
    duration,
    production_requirements,
    tool,
)
from tests.settings_env import settings_under

pytestmark = pytest.mark.deploy

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_file()


@pytest.fixture(scope="module")
def apps(compose: dict[str, Any]) -> dict[str, Service]:
    """The services that run the image built from the Dockerfile."""
    found = app_services(compose)
    assert found, "no service builds the image"
    return found


def image_command(service: Service) -> list[str]:
    """What the container runs: the service's command, else the image's CMD."""
    command = service.get("command")
    if command is None:
        return list(dockerfile_stages()[-1].last("CMD").value)
    assert isinstance(command, list), f"command {command!r} is not in exec form"
    return command


def healthcheck_command(service: Service) -> list[str] | None:
    """The healthcheck as an argv, or None when the service has none."""
    test = service.get("healthcheck", {}).get("test")
    if test is None or test == ["NONE"] or service["healthcheck"].get("disable"):
        return None
    if isinstance(test, str):
        return shlex.split(test)
    kind, *argv = test
    return shlex.split(argv[0]) if kind == "CMD-SHELL" else argv


def running(apps: dict[str, Service], program: str) -> list[tuple[str, Service]]:
    """The app services one of whose commands starts with ``program``."""
    return [
        (name, service)
        for name, service in apps.items()
        if any(line[0] == program for line in command_lines(image_command(service)))
    ]


def one_running(apps: dict[str, Service], program: str) -> tuple[str, Service]:
    found = running(apps, program)
    assert len(found) == 1, f"{len(found)} services run {program}"
    return found[0]


def environment(service: Service) -> dict[str, str]:
    """A service's ``environment``, in either of Compose's notations."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def dependency_scripts() -> set[str]:
    """Console scripts of the production dependencies: in the image's venv beside ours."""
    return {
        entry_point.name
        for requirement in production_requirements()
        for entry_point in importlib.metadata.distribution(requirement).entry_points
        if entry_point.group == "console_scripts"
    }


def assert_runs_in_the_image(argv: list[str], env: dict[str, str], tmp_path: Path) -> None:
    """Fail unless ``argv`` names a command the image has, with arguments that command accepts.

    Our own console scripts must be declared (and importable); a dependency's command is run
    here in a harmless mode (gunicorn ``--check-config`` loads the config and the app; a Flask
    command's ``--help`` after its options parses them all); a ``python -m`` probe is run as is.
    """
    program, *args = argv
    run_env = {**os.environ, **env, "WORKER_LIVENESS_FILE": str(tmp_path / "alive")}
    if program in console_scripts():
        module, _, function = console_scripts()[program].partition(":")
        assert callable(getattr(importlib.import_module(module), function)), argv
        return
    if program == "python" and args[0] == "-c":
        compile(args[1], "<healthcheck>", "exec")
        return
    if program == "python" and args[0] == "-m":
        result = subprocess.run(
            [str(tool("python")), *args], env=run_env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, (argv, result.stderr)
        return
    assert program in dependency_scripts(), (
        f"{program} is neither a console script of setup.cfg nor of a production dependency"
    )
    harmless = ["--check-config"] if program == "gunicorn" else ["--help"]
    result = subprocess.run(
        [str(tool(program)), *args, *harmless],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (argv, result.stdout, result.stderr)


def test_compose_file_validates_against_the_compose_spec() -> None:
    """Catches what `docker compose` itself would refuse: unknown keys, wrong types, bad values."""
    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_validation_refuses_a_misspelt_key(tmp_path: Path) -> None:
    """Catches a validation that passes anything (a schema that allows unknown keys, a wrong flag)."""
    broken = compose_file()
    broken["services"]["api"]["stop_grace_priod"] = "30s"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")

    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "stop_grace_priod" in result.stdout


def test_every_app_service_runs_the_one_image_built_from_the_dockerfile(apps: dict[str, Service]) -> None:
    """Catches a role running another image, or a stale one, than the Dockerfile builds."""
    assert {service["image"] for service in apps.values()} == {"orders-service:local"}
    for service in apps.values():
        build = service["build"]
        assert build["context"] == "."
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"


def _commands_compose_runs() -> list[Any]:
    """One case per command an app service runs (its command's steps, its healthcheck)."""
    cases = []
    for name, service in app_services(compose_file()).items():
        probe = healthcheck_command(service)
        for argv in [*command_lines(image_command(service)), *([probe] if probe else [])]:
            cases.append(pytest.param(argv, environment(service), id=f"{name}:{argv[0] if argv else ''}"))
    return cases


@pytest.mark.parametrize(("argv", "env"), _commands_compose_runs())
def test_every_command_compose_runs_exists_in_the_image(
    argv: list[str], env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches a misspelt or undeclared command, an unknown option (``--evry``), a gunicorn
    config or app that does not load, and a probe module that is missing."""
    for variable in ("GRACEFUL_TIMEOUT_S", "BIND", "PORT"):
        monkeypatch.delenv(variable, raising=False)

    assert argv, "an empty command"
    assert_runs_in_the_image(argv, env, tmp_path)


def test_api_probe_and_published_port_reach_the_port_the_api_binds(apps: dict[str, Service]) -> None:
    """Catches a healthcheck at a path the API does not have (always unhealthy), and a probe or
    a published port aimed at another port than gunicorn's BIND in the image."""
    name, api = one_running(apps, "gunicorn")
    probe = healthcheck_command(api)
    assert probe, f"{name} has no healthcheck"
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(probe))
    bind = dockerfile_stages()[-1].env()["BIND"]
    routes = create_app(Settings()).url_map.bind("localhost")

    port = int(bind.rsplit(":", 1)[1])
    published = [int(str(mapping).rsplit(":", 1)[1]) for mapping in api.get("ports", [])]

    assert published == [port], api.get("ports")
    assert len(urls) == 1, probe
    url = urlsplit(urls[0])
    assert url.port == port
    routes.match(url.path, method="GET")  # raises NotFound or MethodNotAllowed


def test_grace_periods_outlast_the_shutdown_timeouts(apps: dict[str, Service]) -> None:
    """Catches Docker's SIGKILL (after 10 s by default) cutting off requests or placements in
    flight, before gunicorn's GRACEFUL_TIMEOUT_S or Dramatiq's WORKER_SHUTDOWN_TIMEOUT_MS."""
    _, api = one_running(apps, "gunicorn")
    _, workers = one_running(apps, "orders-workers")
    graceful_s = settings_under(ApiSettings, environment(api)).graceful_timeout_s
    shutdown_ms = settings_under(WorkerSettings, environment(workers)).worker_shutdown_timeout_ms

    assert duration(api.get("stop_grace_period", "10s")) > timedelta(seconds=graceful_s)
    assert duration(workers.get("stop_grace_period", "10s")) > timedelta(milliseconds=shutdown_ms)


def test_nothing_starts_before_the_migration_and_broker_setup_succeed(apps: dict[str, Service]) -> None:
    """Catches the API or workers starting on an unmigrated database or undeclared queues, a
    setup that goes on after a failed migration, and a one-shot service restarted in a loop."""
    name, setup = one_running(apps, "orders-db-upgrade")
    steps = [line[0] for line in command_lines(image_command(setup))]

    assert steps == ["orders-db-upgrade", "orders-broker-setup"]
    assert "&&" in image_command(setup)[-1]
    assert setup.get("restart", "no") == "no"
    for other, service in apps.items():
        if other != name:
            assert service["depends_on"][name]["condition"] == "service_completed_successfully", other


def test_every_awaited_health_has_a_healthcheck(compose: dict[str, Any], apps: dict[str, Service]) -> None:
    """Catches ``condition: service_healthy`` on a service without a healthcheck (Compose refuses
    to start), and a long-running role without the probe Kubernetes would run."""
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert healthcheck_command(services[dependency]), f"{name} waits on {dependency}"
    for program in ("gunicorn", "orders-workers"):
        name, service = one_running(apps, program)
        assert healthcheck_command(service), name


def test_apps_reach_postgres_and_rabbitmq_by_service_name_with_their_credentials(
    compose: dict[str, Any], apps: dict[str, Service]
) -> None:
    """Catches an app left on the defaults (127.0.0.1 is the container itself) or with
    credentials the database or broker containers were not given."""
    services = compose["services"]
    postgres = next(name for name, service in services.items() if service["image"].startswith("postgres:"))
    rabbitmq = next(name for name, service in services.items() if service["image"].startswith("rabbitmq:"))
    postgres_env = environment(services[postgres])
    rabbitmq_env = environment(services[rabbitmq])
    for name, service in apps.items():
        env = environment(service)
        database = urlsplit(env["DATABASE_URL"])
        assert (database.hostname, database.username, database.password) == (
            postgres,
            postgres_env.get("POSTGRES_USER", "postgres"),
            postgres_env["POSTGRES_PASSWORD"],
        ), name
        for node in env["RABBITMQ_URL"].split(";"):
            broker = urlsplit(node)
            assert (broker.hostname, broker.username, broker.password) == (
                rabbitmq,
                rabbitmq_env["RABBITMQ_DEFAULT_USER"],
                rabbitmq_env["RABBITMQ_DEFAULT_PASS"],
            ), name
            assert unquote(broker.path) == "//", f"{name}: vhost {broker.path!r}"


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    """Catches the API or the management console (with its known password) opened to the network."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"


def test_app_containers_are_read_only_but_for_tmp(apps: dict[str, Service]) -> None:
    """Catches a laptop setup laxer than the pod (read-only root, /tmp an emptyDir), which would
    hide a write outside /tmp until it fails in the cluster."""
    for name, service in apps.items():
        tmpfs = service.get("tmpfs", [])
        assert service.get("read_only") is True, name
        assert "/tmp" in ([tmpfs] if isinstance(tmpfs, str) else tmpfs), name
