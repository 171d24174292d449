"""Fault-injection fixtures: private servers for the session, a fresh database and vhost per scenario.

The scenarios stop and restart PostgreSQL and RabbitMQ, so they run on servers of their own
(``tests.faults.servers``), never on the machine's shared ones. At the end of the run the
ledgers of every scenario are printed as one table (and the execution feed's as a second).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.faults.feed_ledger import FEED_HEADER, FEED_RULE
from tests.faults.harness import FaultRun, new_fault_run
from tests.faults.ledger import HEADER, RULE
from tests.faults.servers import PrivatePostgres, PrivateRabbitMQ, private_postgres, private_rabbitmq

_LEDGER_ROWS = pytest.StashKey[list[str]]()
_FEED_LEDGER_ROWS = pytest.StashKey[list[str]]()
#: The scenario's run, for the report of a failure; a scenario building its own run stashes it too.
FAULT_RUN = pytest.StashKey[FaultRun]()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this run's own, which the scenarios may restart."""
    with private_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this run's own, which the scenarios may stop and start."""
    with private_rabbitmq() as node:
        yield node


@pytest.fixture
def fault_run(
    postgres_server: PrivatePostgres,
    rabbitmq_node: PrivateRabbitMQ,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> FaultRun:
    """A migrated database and a vhost of this scenario's own on the private servers (:func:`new_fault_run`).

    Both go away with the private servers at the end of the session.
    """
    short_name = re.sub(r"[^a-z0-9]+", "_", request.node.name.removeprefix("test_").lower())[:40]
    name = f"faults_{short_name}_{uuid.uuid4().hex[:6]}"
    postgres_server.ensure_running()
    rabbitmq_node.ensure_running()
    run = new_fault_run(postgres_server, rabbitmq_node, tmp_path, name)
    request.node.stash[FAULT_RUN] = run
    return run


@pytest.fixture
def report_feed_ledger(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Rows of the execution feed's ledger table, printed after the placement ledgers."""
    rows: list[str] = []
    yield rows
    request.config.stash.setdefault(_FEED_LEDGER_ROWS, []).extend(rows)


@pytest.fixture
def report_ledger(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Rows to add to the run's ledger table: a test appends its row, printed at the end of the run."""
    rows: list[str] = []
    yield rows
    request.config.stash.setdefault(_LEDGER_ROWS, []).extend(rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print every scenario's ledger as one table."""
    rows = config.stash.get(_LEDGER_ROWS, [])
    if rows:
        terminalreporter.write_sep("=", "fault-injection ledgers")
        for line in (HEADER, RULE, *rows):
            terminalreporter.write_line(line)
    feed_rows = config.stash.get(_FEED_LEDGER_ROWS, [])
    if feed_rows:
        terminalreporter.write_sep("=", "execution feed ledgers")
        for line in (FEED_HEADER, FEED_RULE, *feed_rows):
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the tails of the service's logs to the report of a scenario that failed."""
    report = yield
    run = item.stash.get(FAULT_RUN, None)
    if report.when == "call" and report.failed and run is not None and run.service_running is not None:
        report.sections.append(("gunicorn and dramatiq logs (tails)", run.service_running.log_tails()))
    return report
