"""The deployment files read as Docker and Compose read them, for the offline checks in tests/deploy.

No Docker engine runs here, so these helpers stand in for it: buildkit's own Dockerfile parser
(the ``dockerfile`` package), docker-py's implementation of ``.dockerignore`` matching, and PyYAML
for the Compose file (merge keys included, as Compose resolves them).
"""

from __future__ import annotations

import configparser
import re
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from docker.utils.build import exclude_paths

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
SETUP_CFG = REPO / "setup.cfg"
#: The image's production dependencies, pinned with their hashes (`make lock`).
LOCK_FILE = REPO / "requirements" / "image.txt"
#: Where this venv's console scripts are: the image's /opt/venv/bin stands for it here.
VENV_BIN = Path(sys.executable).parent

#: The API's command, as the shared contract states it; the image's default.
API_COMMAND = [
    "gunicorn",
    "--config",
    "python:orders_api.api.gunicorn_config",
    "orders_api.wsgi:app",
]
#: The uid the contract gives the image's user.
IMAGE_UID = 10001


def tool(name: str) -> Path:
    """A command installed in this venv; fail loudly, never skip, when the dev extra is missing."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {VENV_BIN}: run `pip install -e '.[dev]'`", pytrace=False)
    return path


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` and the instructions after it, up to the next ``FROM``."""

    base: str
    name: str | None
    instructions: tuple[Any, ...]  # dockerfile.Command: buildkit's parse of one instruction

    def all(self, instruction: str) -> list[Any]:
        """Every instruction of this kind (``RUN``, ``COPY``, ...), in order."""
        return [command for command in self.instructions if command.cmd == instruction.upper()]

    def last(self, instruction: str) -> Any:
        """The instruction of this kind that takes effect (the last one), failing if there is none."""
        found = self.all(instruction)
        assert found, f"the stage from {self.base} has no {instruction.upper()}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The variables this stage's ``ENV`` instructions set (the base image's not included)."""
        variables: dict[str, str] = {}
        for command in self.all("ENV"):
            pairs = command.value
            variables.update(zip(pairs[::2], pairs[1::2], strict=True))
        return variables


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages of ``path`` in order; the last one is the image."""
    stages: list[Stage] = []
    base, name, instructions = "", None, list[Any]()
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(instructions)))
            words = command.value
            base = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            instructions = []
        elif base:
            instructions.append(command)
    stages.append(Stage(base, name, tuple(instructions)))
    return stages


# --- build context -----------------------------------------------------------------------------


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    """The patterns of a ``.dockerignore``, without its comments and blank lines."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_context(root: Path, patterns: list[str]) -> set[str]:
    """The paths (files and folders, relative to ``root``) that ``docker build`` would send."""
    return set(exclude_paths(str(root), list(patterns)))


# --- Compose -----------------------------------------------------------------------------------


def compose_file(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The Compose file as Compose sees it, YAML anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run our image (they build it), as opposed to PostgreSQL and RabbitMQ."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def command_lines(argv: list[str]) -> list[list[str]]:
    """The commands an exec-form ``argv`` runs: ``sh -c "a && b"`` is two, anything else one."""
    if argv[:2] == ["sh", "-c"] and len(argv) == 3:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> timedelta:
    """A Compose duration (``30s``, ``1m30s``, ``500ms``) as a ``timedelta``."""
    parts = _DURATION_PART.findall(text)
    assert parts and "".join(number + unit for number, unit in parts) == text, f"not a duration: {text!r}"
    return timedelta(seconds=sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts))


# --- setup.cfg ---------------------------------------------------------------------------------


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    return config


def _lines(value: str) -> list[str]:
    lines = (line.strip() for line in value.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def console_scripts() -> dict[str, str]:
    """The commands this project declares: name to ``module:function``."""
    declared = _lines(_setup_cfg()["options.entry_points"]["console_scripts"])
    pairs = (line.partition("=") for line in declared)
    return {name.strip(): target.strip() for name, _, target in pairs}


def production_requirement_lines() -> list[str]:
    """``install_requires`` as written: what the image installs besides our wheel."""
    return _lines(_setup_cfg()["options"]["install_requires"])


def production_requirements() -> list[str]:
    """The distribution names in ``install_requires``."""
    names = [re.match(r"[A-Za-z0-9._-]+", requirement) for requirement in production_requirement_lines()]
    return [name.group(0) for name in names if name]
