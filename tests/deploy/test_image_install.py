"""The image's install step, run without Docker: the build context, the wheel, the migration from it.

The build stage copies a few paths from the context, builds a wheel with ``pip wheel`` and
installs it; the image holds nothing else of ours. So a file the wheel leaves out (a migration,
Alembic's ``script.py.mako``) is missing only in the image, never in a developer's editable
install. This module repeats those steps, with the Dockerfile's own commands, in a temporary
directory, then runs ``orders-db-upgrade`` from the installed wheel against a fresh database.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psycopg2
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from psycopg2 import sql

from tests.conftest import POSTGRES_URL
from tests.deploy.artifacts import (
    LOCK_FILE,
    REPO,
    build_context,
    console_scripts,
    dev_requirement_lines,
    dockerfile_stages,
    dockerignore_patterns,
    production_requirement_lines,
    production_requirements,
)

pytestmark = pytest.mark.deploy

#: Where the build stage puts the wheel and the venv; replaced by temporary folders here.
_WHEEL_DIR = "/wheels"


@dataclass(frozen=True)
class BuiltWheel:
    path: Path
    #: The file pattern the Dockerfile installs the wheel by.
    install_pattern: str
    #: The source tree as the build stage had it (what the COPY lines took from the context).
    source: Path


def copy_like_the_build_stage(destination: Path) -> None:
    """Copy what the build stage's COPY lines take from the context (after .dockerignore)."""
    context = build_context(REPO, dockerignore_patterns())
    build = dockerfile_stages()[0]
    for copy in build.all("COPY"):
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
                    into = destination / target / PurePosixPath(path).relative_to(source)
                elif target.endswith("/"):
                    into = destination / target / PurePosixPath(path).name
                else:
                    into = destination / target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / path, into)


def build_stage_commands() -> list[list[str]]:
    """The build stage's ``RUN ... && ...`` that builds and installs the wheel, as argvs."""
    runs = [run.value[0] for run in dockerfile_stages()[0].all("RUN") if "pip wheel" in run.value[0]]
    assert len(runs) == 1, runs
    return [shlex.split(part) for part in runs[0].split("&&")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """The wheel built by the Dockerfile's ``pip wheel`` command from a copy of the build context."""
    root = tmp_path_factory.mktemp("image-build")
    source = root / "src"
    copy_like_the_build_stage(source)
    commands = build_stage_commands()
    build = next(argv for argv in commands if "wheel" in argv)
    install = next(argv for argv in commands if "install" in argv)
    assert build[:4] == ["python", "-m", "pip", "wheel"], build
    wheels = root / "wheels"
    argv = [sys.executable, *build[1:]]
    argv = [str(wheels) if word == _WHEEL_DIR else word for word in argv]
    subprocess.run(argv, cwd=source, check=True, capture_output=True, timeout=120)
    built = list(wheels.glob("*.whl"))
    assert len(built) == 1, built
    patterns = [word for word in install if word.startswith(f"{_WHEEL_DIR}/")]
    assert len(patterns) == 1, install
    return BuiltWheel(built[0], PurePosixPath(patterns[0]).name, source)


def test_dockerfile_installs_the_wheel_it_builds(wheel: BuiltWheel) -> None:
    """Catches a renamed project (or version scheme) whose wheel the install's pattern misses:
    the build stage would fail on a glob that matches nothing."""
    assert fnmatch.fnmatch(wheel.path.name, wheel.install_pattern), (wheel.path.name, wheel.install_pattern)


def test_wheel_holds_every_module_migration_and_template_of_the_packages(wheel: BuiltWheel) -> None:
    """Catches a migration, Alembic's script.py.mako or a module left out of the wheel (package
    discovery or package_data): `orders-db-upgrade` or an import would fail only in the image."""
    names = set(zipfile.ZipFile(wheel.path).namelist())
    sources = {
        path.relative_to(wheel.source).as_posix()
        for package in ("orders_api", "workers")
        for path in (wheel.source / package).rglob("*")
        if path.is_file()
    }

    assert "orders_api/migrations/script.py.mako" in names
    assert "orders_api/migrations/env.py" in names
    assert any(name.startswith("orders_api/migrations/versions/") for name in names)
    assert sorted(sources - names) == []


def test_wheel_declares_the_console_scripts_and_only_production_dependencies(wheel: BuiltWheel) -> None:
    """Catches a command of the contract missing from the image's PATH, and a dev tool becoming a
    production dependency (it would then be installed into the image)."""
    archive = zipfile.ZipFile(wheel.path)
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


def locked_versions() -> dict[str, tuple[str, int]]:
    """requirements/image.txt: each pinned distribution's version and how many hashes it has."""
    locked: dict[str, tuple[str, int]] = {}
    name = ""
    for line in LOCK_FILE.read_text(encoding="utf-8").splitlines():
        pinned = re.match(r"([A-Za-z0-9._-]+)==([^\s\\]+)", line)
        if pinned:
            name = canonicalize_name(pinned.group(1))
            locked[name] = (pinned.group(2), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = locked[name]
            locked[name] = (version, hashes + 1)
    return locked


def test_lock_pins_every_production_dependency_within_setup_cfg_ranges() -> None:
    """Catches a lock left behind by a change to install_requires (a new dependency missing, a
    version outside a new range: the image would run what setup.cfg rules out), and a pin
    without the hash that `--require-hashes` needs."""
    locked = locked_versions()
    requirements = [Requirement(line) for line in production_requirement_lines()]

    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {LOCK_FILE.name}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0]), f"{name}=={locked[name][0]}: {requirement}"


def test_lock_holds_no_dev_tool() -> None:
    """Catches a dev extra's tool (pytest, ruff, hadolint, ...) pinned for the image."""
    dev = {canonicalize_name(Requirement(line).name) for line in dev_requirement_lines()}
    production = {canonicalize_name(Requirement(line).name) for line in production_requirement_lines()}

    assert sorted((dev - production) & set(locked_versions())) == []


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


def test_migration_runs_from_the_installed_wheel(
    wheel: BuiltWheel, fresh_database: str, tmp_path: Path
) -> None:
    """Catches an image whose `orders-db-upgrade` cannot find its migrations: it runs the console
    script pip generated from the wheel, importing our packages from the wheel only."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel.path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": fresh_database}
    imported_from = subprocess.run(
        [sys.executable, "-c", "import orders_api, workers; print(orders_api.__file__, workers.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()

    upgrade = subprocess.run(
        [str(site / "bin" / "orders-db-upgrade")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert all(Path(path).is_relative_to(site) for path in imported_from), imported_from
    assert upgrade.returncode == 0, upgrade.stderr
    connection = psycopg2.connect(fresh_database, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('orders'), to_regclass('alembic_version')")
            assert cursor.fetchone() == ("orders", "alembic_version")
    finally:
        connection.close()
