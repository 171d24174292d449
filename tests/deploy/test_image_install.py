"""The image's build stage, run without Docker: its COPY and RUN lines, then what they produced.

The build stage copies a few paths from the context, installs the pinned dependencies into
/opt/venv, builds our wheel and installs it; the image holds that venv and nothing else of ours.
So a file the wheel leaves out (a migration, Alembic's ``script.py.mako``), or a module that
imports a dev-only package, breaks only in the image, never in a developer's editable install.
This module carries out the build stage's own instructions, in order, in a temporary folder that
stands for the image's root (about 20 s, mostly installing the lock), then checks the wheel and
runs the roles and ``orders-db-upgrade`` from that venv alone.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg2
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from psycopg2 import sql

from orders_api.settings.workers import WorkerSettings
from tests.conftest import POSTGRES_URL
from tests.deploy.artifacts import (
    API_COMMAND,
    LOCK_FILE,
    REPO,
    build_context,
    console_scripts,
    dockerfile_stages,
    dockerignore_patterns,
    production_requirement_lines,
    production_requirements,
)
from tests.deploy.k8s_manifests import config_maps, literal_env, load_manifests, workloads
from workers.serve import worker_command

pytestmark = pytest.mark.deploy

#: The k8s manifests, whose probes must run in the image.
MANIFESTS = load_manifests()

#: The absolute paths the build stage writes to; here they live under a temporary root.
_IMAGE_PATHS = ("/opt/venv", "/wheels")
#: Modules not imported by the import check: Alembic's env runs only under Alembic, and the
#: workers' entry module wires the broker (and connects) at import, by design.
_NOT_IMPORTED = ("orders_api.migrations", "workers.main")


@dataclass(frozen=True)
class BuildStage:
    """What the build stage left behind, under ``root`` (which stands for the image's ``/``)."""

    root: Path
    #: The stage's WORKDIR, holding what its COPY lines took from the context.
    source: Path
    venv: Path
    #: The one wheel the stage built.
    wheel: Path


def _copy(copy: Any, context: set[str], workdir: Path) -> None:  # copy: a dockerfile.Command
    """Carry out one COPY from the build context, with Docker's rules for folders and targets."""
    assert not copy.flags, copy.original
    *sources, target = copy.value
    for source in sources:
        files = sorted(
            path
            for path in context
            if (path == source or path.startswith(f"{source}/")) and (REPO / path).is_file()
        )
        assert files, f"{source} is not in the build context"
        for path in files:
            if (REPO / source).is_dir():
                into = workdir / target / PurePosixPath(path).relative_to(source)
            elif target.endswith("/"):
                into = workdir / target / PurePosixPath(path).name
            else:
                into = workdir / target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, into)


def _argv(command: str, root: Path) -> list[str]:
    """One ``&&`` step of a RUN as an argv here: image paths moved under ``root``, globs expanded
    as the shell would (a glob must match exactly one file, or the step would fail in Docker)."""
    argv = []
    for word in shlex.split(command):
        if word == "python":
            word = sys.executable  # the base image's interpreter; a venv made from it is the same
        elif word.startswith(_IMAGE_PATHS):
            word = f"{root}{word}"
        if "*" in word:
            matches = glob.glob(word)
            assert len(matches) == 1, f"{word} matches {matches}"
            word = matches[0]
        argv.append(word)
    return argv


def run_like_the_build_stage(root: Path) -> BuildStage:
    """Carry out the build stage's COPY and RUN instructions in order, under ``root``."""
    stage = dockerfile_stages()[0]
    context = build_context(REPO, dockerignore_patterns())
    workdir = root / "src"
    for instruction in stage.instructions:
        if instruction.cmd == "WORKDIR":
            workdir = root / instruction.value[0].lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.cmd == "COPY":
            _copy(instruction, context, workdir)
        elif instruction.cmd == "RUN":
            for step in instruction.value[0].split("&&"):
                argv = _argv(step, root)
                result = subprocess.run(
                    argv, cwd=workdir, capture_output=True, text=True, timeout=300, check=False
                )
                assert result.returncode == 0, (step, result.stdout[-2000:], result.stderr[-2000:])
    wheels = list((root / "wheels").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return BuildStage(root, workdir, root / "opt" / "venv", wheels[0])


@pytest.fixture(scope="module")
def build_stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildStage]:
    """The build stage's result, removed at the end (the venv is some 100 MB)."""
    root = tmp_path_factory.mktemp("image")
    try:
        yield run_like_the_build_stage(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def image_environment(build_stage: BuildStage, **extra: str) -> dict[str, str]:
    """The environment of a container of the image: its venv first on PATH, no source tree."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{build_stage.venv / 'bin'}:{env.get('PATH', '')}", **extra}


def run_in_image(build_stage: BuildStage, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with the image venv's commands, from an empty WORKDIR like the image's /app."""
    workdir = build_stage.root / "app"
    workdir.mkdir(exist_ok=True)
    program = build_stage.venv / "bin" / argv[0]
    assert program.exists(), f"{argv[0]} is not in the image's venv"
    return subprocess.run(
        [str(program), *argv[1:]],
        cwd=workdir,
        env=image_environment(build_stage, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_wheel_holds_every_module_migration_and_template_of_the_packages(build_stage: BuildStage) -> None:
    """Catches a migration, Alembic's script.py.mako or a module left out of the wheel (package
    discovery or package_data): `orders-db-upgrade` or an import would fail only in the image."""
    names = set(zipfile.ZipFile(build_stage.wheel).namelist())
    sources = {
        path.relative_to(build_stage.source).as_posix()
        for package in ("orders_api", "workers", "exchange_simulator")
        for path in (build_stage.source / package).rglob("*")
        if path.is_file()
    }

    assert "orders_api/migrations/script.py.mako" in names
    assert "orders_api/migrations/env.py" in names
    assert any(name.startswith("orders_api/migrations/versions/") for name in names)
    assert sorted(sources - names) == []


def test_wheel_declares_the_console_scripts_and_only_production_dependencies(build_stage: BuildStage) -> None:
    """Catches a command of the contract missing from the image's PATH, and a dev tool becoming a
    production dependency (it would then be installed into the image)."""
    archive = zipfile.ZipFile(build_stage.wheel)
    info = next(name.split("/")[0] for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
    entry_points = configparser.ConfigParser()
    entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())
    metadata = archive.read(f"{info}/METADATA").decode().splitlines()
    required = [
        line.removeprefix("Requires-Dist: ") for line in metadata if line.startswith("Requires-Dist:")
    ]
    unconditional = sorted(
        requirement.split(">")[0].split("<")[0].strip() for requirement in required if ";" not in requirement
    )

    assert dict(entry_points["console_scripts"]) == console_scripts()
    assert unconditional == sorted(production_requirements())


#: How pip-compile names this project in the lock's ``# via`` comments.
_THIS_PROJECT = "orders-service (setup.cfg)"


@dataclass
class Pin:
    """One distribution of requirements/image.txt."""

    version: str
    hashes: int = 0
    #: Who needs it, from pip-compile's ``# via`` comments: distributions, or this project.
    needed_by: list[str] = field(default_factory=list)


def locked() -> dict[str, Pin]:
    """requirements/image.txt, by canonical distribution name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in LOCK_FILE.read_text(encoding="utf-8").splitlines():
        pinned = re.match(r"([A-Za-z0-9._-]+)==([^\s\\]+)", line)
        comment = line.strip().removeprefix("#").strip()
        if pinned:
            current = pins[canonicalize_name(pinned.group(1))] = Pin(pinned.group(2))
        elif current and line.strip().startswith("--hash=sha256:"):
            current.hashes += 1
        elif current and line.strip().startswith("#") and comment not in ("", "via"):
            needer = comment.removeprefix("via ").strip()
            current.needed_by.append(needer if needer == _THIS_PROJECT else canonicalize_name(needer))
    return pins


def test_lock_pins_every_production_dependency_within_setup_cfg_ranges() -> None:
    """Catches a lock left behind by a change to install_requires (a new dependency missing, a
    version outside a new range: the image would run what setup.cfg rules out), and a pin
    without the hash that `--require-hashes` needs."""
    pins = locked()
    requirements = [Requirement(line) for line in production_requirement_lines()]

    assert [name for name, pin in pins.items() if pin.hashes == 0] == []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK_FILE.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name].version), (
            f"{name}=={pins[name].version}: {requirement}"
        )


def test_lock_holds_only_what_install_requires_needs() -> None:
    """Catches dev tools (pytest, ruff, hadolint, ...) pinned for the image, as a lock compiled
    with the dev extra would, and pins left over from a dependency that was dropped."""
    pins = locked()
    direct = {canonicalize_name(Requirement(line).name) for line in production_requirement_lines()}
    needed = {name for name, pin in pins.items() if name in direct and _THIS_PROJECT in pin.needed_by}
    while True:
        more = {name for name, pin in pins.items() if name not in needed and needed & set(pin.needed_by)}
        if not more:
            break
        needed |= more

    assert sorted(set(pins) - needed) == []


def test_image_venv_imports_every_module_without_the_dev_tools(build_stage: BuildStage) -> None:
    """Catches production code importing a package only the dev extra installs (requests, yaml,
    ...): it works in every developer's venv and fails in the image."""
    script = (
        "import importlib, pkgutil, sys\n"
        "import orders_api, workers\n"
        "for package in (orders_api, workers):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        f"        if not module.name.startswith({_NOT_IMPORTED!r}):\n"
        "            importlib.import_module(module.name)\n"
        "print(orders_api.__file__)\n"
    )

    result = run_in_image(build_stage, ["python", "-c", script])

    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(build_stage.venv), result.stdout


def test_image_venv_starts_every_role(build_stage: BuildStage) -> None:
    """Catches a role whose command is missing from the image's PATH or cannot load there: the
    API's config and app (gunicorn --check-config), the workers' Dramatiq CLI, the operator
    commands and the workers' liveness probe."""
    workers_cli = Path(worker_command(WorkerSettings.model_construct(), module="workers.main")[0]).name

    api = run_in_image(build_stage, [*API_COMMAND, "--check-config"])
    operators = [
        run_in_image(build_stage, ["flask", "--app", "orders_api.wsgi", name, "--help"])
        for name in ("reconcile", "dead-letters")
    ]
    probe = run_in_image(build_stage, ["python", "-m", "workers.liveness", "--help"])

    assert api.returncode == 0, api.stderr
    assert all(result.returncode == 0 for result in operators), [result.stderr for result in operators]
    assert probe.returncode == 0, probe.stderr
    assert (build_stage.venv / "bin" / workers_cli).exists(), workers_cli
    assert sorted(
        path.name for path in (build_stage.venv / "bin").iterdir() if path.name in console_scripts()
    ) == sorted(console_scripts())


def _probe_and_heartbeat(command: str, variable: str) -> tuple[list[str], str]:
    """The liveness probe of the k8s container running ``command``, and the heartbeat path it is given."""
    maps = config_maps(MANIFESTS)
    (container,) = [
        container
        for workload in workloads(MANIFESTS)
        for container in workload.containers
        if container.get("command") == [command]
    ]
    probe: list[str] = container["livenessProbe"]["exec"]["command"]
    return probe, literal_env(container, maps)[variable]


@pytest.mark.parametrize(
    ("command", "variable"),
    [("orders-ingestor", "INGESTOR_HEARTBEAT_FILE"), ("orders-applier", "APPLIER_HEARTBEAT_FILE")],
)
def test_the_feed_processes_liveness_probes_run_in_the_image_venv(
    build_stage: BuildStage, command: str, variable: str
) -> None:
    """Catches a k8s exec probe that cannot run in the image, or reads another variable than its
    Deployment sets: it passes on a fresh heartbeat file at that path and fails on a stale one.
    An import error also exits 1, hence the fresh case."""
    probe, heartbeat = _probe_and_heartbeat(command, variable)
    heartbeat_file = build_stage.root / heartbeat.lstrip("/")
    heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
    heartbeat_file.touch()

    fresh = run_in_image(build_stage, probe, **{variable: str(heartbeat_file)})
    os.utime(heartbeat_file, (0, 0))
    stale = run_in_image(build_stage, probe, **{variable: str(heartbeat_file)})

    assert (fresh.returncode, stale.returncode) == (0, 1), (fresh.stderr, stale.stderr)


@pytest.fixture
def fresh_database(run_name: str) -> Iterator[str]:
    """A database that does not exist yet (the migration creates it), dropped at the end."""
    name = f"{run_name}_image"
    yield f"{POSTGRES_URL}/{name}"
    connection = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


def test_migration_runs_from_the_image_venv(build_stage: BuildStage, fresh_database: str) -> None:
    """Catches an image whose `orders-db-upgrade` cannot find or run its migrations: it runs the
    console script of the image's venv, with nothing of the source tree on the path."""
    upgrade = run_in_image(build_stage, ["orders-db-upgrade"], DATABASE_URL=fresh_database)

    assert upgrade.returncode == 0, upgrade.stderr
    connection = psycopg2.connect(fresh_database, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('orders')::text, to_regclass('alembic_version')::text")
            assert cursor.fetchone() == ("orders", "alembic_version")
    finally:
        connection.close()
