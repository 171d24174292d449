"""Every module of the service imports only in the allowed directions, read from the source.

The layers, lowest first: the rules (``domain``, ``executions``, ``idempotency``, ``listing``,
``clock``, ``request_ids``), free of any framework; the use cases (``service_layer``), which own
the ports they need; the adapters, by what they talk to (``adapters/postgres``, ``adapters/
rabbitmq``, ``adapters/exchange``), which implement those ports; the settings; and on top one
package per process (``api``, ``execution_feed``, ``workers``) with its entry modules. A process
never imports another process's package, the simulators of the exchange never import the
service's use cases or adapters, and nothing the image ships imports the tests' code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The packages the image ships.
SHIPPED = ("orders_api", "workers", "exchange_simulator")

RULES = "rules"
USE_CASES = "use cases"
ADAPTERS = "adapters"
SETTINGS = "settings"
STAND_IN = "exchange stand-in"
SIMULATORS = "simulators"
API = "api process"
FEED = "execution feed processes"
WORKERS = "workers process"
ENTRIES = "entry modules"
SHARED = "shared process plumbing"

#: Which layers each layer may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    RULES: frozenset(),
    STAND_IN: frozenset({RULES}),
    USE_CASES: frozenset({RULES}),
    ADAPTERS: frozenset({RULES, USE_CASES, SETTINGS, SHARED}),
    # The timeouts' order reads bounds where they live: the claims' renewals, the stand-in's latency.
    SETTINGS: frozenset({RULES, USE_CASES, STAND_IN}),
    SHARED: frozenset({RULES, SETTINGS}),
    SIMULATORS: frozenset({RULES, SETTINGS, SHARED, STAND_IN}),
    API: frozenset({RULES, USE_CASES, ADAPTERS, SETTINGS, SHARED}),
    FEED: frozenset({RULES, USE_CASES, ADAPTERS, SETTINGS, SHARED}),
    WORKERS: frozenset({RULES, USE_CASES, ADAPTERS, SETTINGS, SHARED, STAND_IN}),
    ENTRIES: frozenset({RULES, USE_CASES, ADAPTERS, SETTINGS, SHARED, API}),
}

_RULE_MODULES = {"domain", "executions", "idempotency", "listing", "clock", "request_ids"}
_SHARED_MODULES = {"logging_setup", "metrics_directory"}
_ENTRY_MODULES = {"wsgi", "broker_setup", "migrations"}
_PROCESS_PACKAGES = {"api": API, "execution_feed": FEED}


def layer_of(module: str) -> str:
    """The layer of a dotted module name of the shipped packages."""
    top, _, rest = module.partition(".")
    if top == "workers":
        return WORKERS
    if module == "exchange_simulator.stock_exchange":
        return STAND_IN
    if top == "exchange_simulator":
        return SIMULATORS
    first = rest.split(".")[0]
    if first in _RULE_MODULES or not rest:
        return RULES
    if first == "service_layer":
        return USE_CASES
    if first == "adapters":
        return ADAPTERS
    if first in ("settings", "timeout_rules"):
        return SETTINGS
    if first in _SHARED_MODULES:
        return SHARED
    if first in _PROCESS_PACKAGES:
        return _PROCESS_PACKAGES[first]
    if first in _ENTRY_MODULES:
        return ENTRIES
    raise AssertionError(f"{module}: no layer; add it to this test's table")


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the shipped packages, by dotted name, and its file."""
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(path: Path) -> Iterator[str]:
    """The absolute module names ``path`` imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            for alias in node.names:  # ``from package import module`` imports that module
                submodule = f"{node.module}.{alias.name}"
                base = ROOT.joinpath(*submodule.split("."))
                yield submodule if base.with_suffix(".py").exists() or base.is_dir() else node.module


def test_every_shipped_module_has_a_layer() -> None:
    for module, _path in modules():
        layer_of(module)


@pytest.mark.parametrize("module", [module for module, _path in modules()])
def test_imports_go_only_in_the_allowed_directions(module: str) -> None:
    path = dict(modules())[module]
    own = layer_of(module)
    wrong = []
    for imported in imports_of(path):
        top = imported.split(".")[0]
        if top in ("tests", "orders_testkit", "bench"):
            wrong.append(f"{imported} (test code)")
        elif top in SHIPPED:
            other = layer_of(imported)
            if other != own and other not in ALLOWED[own]:
                wrong.append(f"{imported} ({other})")
    assert not wrong, f"{module} ({own}) imports {', '.join(wrong)}"


def test_the_layers_allow_no_cycle() -> None:
    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step}))
            for step in ALLOWED[start]
        )

    cyclic = [layer for layer in ALLOWED if reaches(layer, layer)]
    assert cyclic == [], f"layers that may import themselves back: {cyclic}"
