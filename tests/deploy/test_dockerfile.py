"""The Dockerfile and its build context, checked without a Docker engine.

hadolint lints it; buildkit's parser (through the ``dockerfile`` package) reads it so that the
contract's promises (non-root uid, exec-form command, venv on PATH, one pinned base) are asserted
on what Docker would execute, not on grepped text.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.artifacts import (
    API_COMMAND,
    DOCKERFILE,
    IMAGE_UID,
    LOCK_FILE,
    REPO,
    Stage,
    build_context,
    dockerfile_stages,
    dockerignore_patterns,
    tool,
)

pytestmark = pytest.mark.deploy

#: A Dockerfile whose only finding is hadolint's lowest level ("info": DL3059).
_INFO_ONLY_DOCKERFILE = "FROM python:3.11.13-slim-bookworm\nRUN echo one\nRUN echo two\n"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with the committed configuration, as a developer runs it from the repository."""
    return subprocess.run(
        [
            str(tool("hadolint")),
            "--config",
            str(REPO / ".hadolint.yaml"),
            "--format",
            "json",
            str(dockerfile),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="module")
def image(stages: list[Stage]) -> Stage:
    """The final stage: what the image is."""
    return stages[-1]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """Catches a Dockerfile change that breaks a best practice (unpinned base, shell-form CMD, ...)."""
    result = hadolint(DOCKERFILE)

    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_configuration_fails_on_findings_of_every_level(tmp_path: Path) -> None:
    """Catches a .hadolint.yaml that silences findings (a raised threshold, a blanket ignore)."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(_INFO_ONLY_DOCKERFILE, encoding="utf-8")

    result = hadolint(dockerfile)

    assert [finding["code"] for finding in json.loads(result.stdout)] == ["DL3059"]
    assert result.returncode != 0


def test_image_runs_as_the_contracts_numeric_non_root_user(image: Stage) -> None:
    """Catches root, or a user name, which Kubernetes' runAsNonRoot cannot verify and refuses."""
    user, _, group = image.last("USER").value[0].partition(":")

    assert user.isdigit(), f"USER {user!r} is not numeric"
    assert int(user) == IMAGE_UID
    assert not group or (group.isdigit() and int(group) != 0), f"group {group!r}"


def test_image_command_is_the_api_in_exec_form_with_no_entrypoint(image: Stage) -> None:
    """Catches a shell-form CMD (sh as PID 1 swallows SIGTERM: no graceful shutdown) or an
    ENTRYPOINT, which would turn every role's command into arguments of it."""
    cmd = image.last("CMD")

    assert cmd.json, "CMD is in shell form"
    assert list(cmd.value) == API_COMMAND
    assert image.all("ENTRYPOINT") == []


def test_both_stages_start_from_one_base_pinned_to_a_patch_release(stages: list[Stage]) -> None:
    """Catches a base that moves under us (``latest``, ``3.11``) or stages on different bases: the
    venv's ``python`` is a symlink into the build stage's interpreter, which the final stage must have."""
    bases = {stage.base for stage in stages}

    assert len(stages) >= 2, "not a multi-stage build"
    assert len(bases) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", bases.pop())


def test_image_has_the_venv_on_path_and_listens_on_every_interface(image: Stage) -> None:
    """Catches gunicorn bound to the container's loopback (unreachable from outside), console
    scripts off PATH, buffered logs, and ports or a workdir other than the contract's."""
    env = image.env()

    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert env["BIND"] == "0.0.0.0:8000"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert image.last("WORKDIR").value == ("/app",)
    exposed = sorted(port for expose in image.all("EXPOSE") for port in expose.value)
    assert exposed == ["8000", "9191", "9192", "9193"]


def test_image_takes_only_the_venv_from_the_build_and_compiles_nothing(
    stages: list[Stage], image: Stage
) -> None:
    """Catches the source tree, the wheel cache or build tools reaching the image, a dev extra or
    an unpinned dependency in the install, and a dependency quietly built from source (which
    would need a compiler)."""
    build = stages[0]
    installs = [
        part.strip() for run in build.all("RUN") for part in run.value[0].split("&&") if "pip install" in part
    ]
    from_lock = [install for install in installs if f"-r {LOCK_FILE.relative_to(REPO)}" in install]

    assert [(copy.flags, copy.value) for copy in image.all("COPY")] == [
        ((f"--from={build.name}",), ("/opt/venv", "/opt/venv"))
    ]
    assert image.all("ADD") == []
    assert not any("pip" in run.value[0] or "apt-get" in run.value[0] for run in image.all("RUN"))
    assert len(from_lock) == 1, installs
    assert "--require-hashes" in from_lock[0] and "--only-binary=:all:" in from_lock[0]
    assert all(install in from_lock or "--no-deps" in install for install in installs), installs
    assert not any("[" in install for install in installs), installs


def test_every_path_the_build_copies_is_in_the_build_context(stages: list[Stage]) -> None:
    """Catches an allowlist in .dockerignore that leaves out a file the build needs: the build
    would stop at that COPY with "not found"."""
    context = build_context(REPO, dockerignore_patterns())
    sources = [
        source
        for stage in stages
        for copy in stage.all("COPY")
        if not any(flag.startswith("--from=") for flag in copy.flags)
        for source in copy.value[:-1]
    ]

    assert sources
    assert [source for source in sources if source.rstrip("/") not in context] == []


def test_dockerignore_keeps_local_state_tests_and_secrets_out_of_the_context(tmp_path: Path) -> None:
    """Catches a .dockerignore that would send a venv, .git, caches, a .env, tests, docs or
    benchmarks to the build (slow builds, secrets in layers), or that drops the migrations."""
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        "tests/unit/test_x.py",
        "docs/benchmarks.md",
        "bench/run.py",
        "orders_api/__pycache__/domain.cpython-311.pyc",
        "orders_api/domain.py",
        "orders_api/migrations/script.py.mako",
        "orders_api/migrations/versions/0001_x.py",
        "workers/main.py",
        "setup.cfg",
        "pyproject.toml",
        "README.md",
    ]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("", encoding="utf-8")

    context = build_context(tmp_path, dockerignore_patterns())

    for left_out in [".venv", ".git", ".env", ".mypy_cache", ".pytest_cache", "tests", "docs", "bench"]:
        assert not any(path == left_out or path.startswith(f"{left_out}/") for path in context), left_out
    assert not any(path.endswith(".pyc") or "__pycache__" in path for path in context)
    for kept in [
        "orders_api/domain.py",
        "orders_api/migrations/script.py.mako",
        "orders_api/migrations/versions/0001_x.py",
        "workers/main.py",
        "setup.cfg",
        "pyproject.toml",
        "README.md",
    ]:
        assert kept in context
