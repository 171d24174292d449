"""Fixtures of the end-to-end tests: the real API and workers, for one test at a time.

Each test gets its own processes on the run's database and vhost, with a placement queue of its
own, so a test that breaks its processes leaves nothing behind for the next one. When a test
fails, the tails of both processes' logs are added to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from orders_api.settings.shared import Settings
from orders_testkit.processes import ProcessOptions, RunningService, running_service

_SERVICE = pytest.StashKey[RunningService]()


@pytest.fixture
def process_options() -> ProcessOptions:
    """The processes ``service`` starts; override this fixture (or parametrize it) to change them."""
    return ProcessOptions()


@pytest.fixture
def service(
    settings: Settings, process_options: ProcessOptions, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RunningService]:
    """The API and the workers, ready, on this test's database, vhost and queue; stopped after it."""
    with running_service(settings, tmp_path, process_options) as running:
        request.node.stash[_SERVICE] = running
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the tails of the processes' logs to the report of a test that failed while they ran."""
    report = yield
    running = item.stash.get(_SERVICE, None)
    if report.when == "call" and report.failed and running is not None:
        report.sections.append(("gunicorn and dramatiq logs (tails)", running.log_tails()))
    return report
