"""PostgreSQL stopped for ten minutes under the steady stream: too long for CI (``make test-faults-long``).

Ten minutes outlast everything the service counts or waits for, several times over: retry
budgets, leases, heartbeats, the COMMIT lookup, the workers' shutdown timeout, RabbitMQ's
consumer timeout for the delayed retries held meanwhile (30 min) excepted. Accepted orders must
all be placed within a minute of the database's return, none failed, none placed twice.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import FaultRun
from tests.faults.test_fault_scenarios import check, load_cap_s, postgres_stopped, run_long_outage

pytestmark = pytest.mark.faults_long

#: Seconds PostgreSQL stays stopped.
TEN_MINUTES_S = 600.0
#: pytest-timeout's bound: the outage, the stream after it, settling, start and stop.
SCENARIO_TIMEOUT_S = 1200


@pytest.mark.timeout(SCENARIO_TIMEOUT_S)
def test_orders_survive_postgresql_stopped_for_10_minutes(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    outage = postgres_stopped(fault_run, TEN_MINUTES_S)
    ledger = run_long_outage(
        fault_run, "PostgreSQL fast stop, 10 min, start", outage, load_cap_s(TEN_MINUTES_S)
    )
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.statuses["failed"] == 0
