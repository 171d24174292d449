"""The benchmark's pure parts: statistics, wrk's records, the table, and make run's processes."""

import math

import pytest

from bench.cost import OrderCost, targets
from bench.cost import table as cost_table
from bench.load import Record, parse_records
from bench.report import Row, ratio, table
from bench.run import make_run_options
from bench.stats import percentile, steady_rate
from orders_api.settings.api import ApiSettings
from orders_api.settings.workers import WorkerSettings
from tests.settings_env import settings_under

pytestmark = pytest.mark.unit


def test_percentile_is_the_nearest_rank_of_an_ascending_list() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_steady_rate_counts_events_between_the_chosen_fractions_only() -> None:
    # 100 events a second for 10 s, then a retry tail of 10 events spread over 5 s more.
    times = [i / 100 for i in range(1000)] + [10 + i / 2 for i in range(10)]

    assert steady_rate(times) == pytest.approx(100, rel=0.01)
    assert math.isnan(steady_rate([1.0, 2.0]))


def test_steady_rate_of_placements_arriving_in_waves_is_the_rate_of_the_waves() -> None:
    # 256 calls of 0.5 s, started together: 256 placements land every 0.5 s, 20 waves in all.
    times = [wave * 0.5 + i * 1e-5 for wave in range(20) for i in range(256)]

    assert steady_rate(times) == pytest.approx(256 / 0.5, rel=0.03)


def test_wrk_records_are_parsed_and_sorted_by_arrival() -> None:
    text = "12.500 3.250 201\n10.000 2.000 500\n"

    assert parse_records(text) == (Record(10.0, 2.0, 500), Record(12.5, 3.25, 201))


def test_ratio_names_its_baseline_and_refuses_a_missing_one() -> None:
    assert ratio(300, 1000, "of bare") == "0.30 of bare"
    assert ratio(300, 0, "of bare") == "-"
    assert ratio(math.nan, 1000, "of bare") == "-"


def test_table_aligns_every_row_and_prints_missing_figures_as_dashes() -> None:
    rows = [
        Row("POST /orders", 64, 512.4, 100.0, 150.0, 190.0, 230.0, 0, 4000, 0.05, "0.31 of bare", "note"),
        Row("placement, 256 in flight", None, 470.0, errors=0),
    ]

    lines = table(rows).splitlines()

    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1
    assert "| 512 " in lines[2]
    assert "| 0.31 of bare |" in lines[2]
    assert lines[3].split("|")[2].strip() == "-"


def test_make_run_processes_come_from_the_variables_make_exports() -> None:
    options = make_run_options(
        settings_under(ApiSettings, {"WEB_WORKERS": "3", "WEB_THREADS": "8"}),
        settings_under(WorkerSettings, {"WORKER_PROCESSES": "1", "WORKER_THREADS": "64"}),
    )

    assert (options.web_workers, options.web_threads) == (3, 8)
    assert (options.worker_processes, options.worker_threads) == (1, 64)
    assert options.worker_module == "workers.main"


def test_the_cost_of_an_order_adds_up_each_chain_as_often_as_it_runs_per_order() -> None:
    figures = OrderCost(
        post_of_bare=0.2,
        post_p99_ms=120.0,
        post_errors=0,
        second_of_first=0.95,
        api_ms=1.5,
        api_chain_ms=2.0,
        worker_ms_per_call=2.5,
        worker_chain_ms_per_call=3.0,
        calls_per_order=1.1,
        report_ms=0.1,
        reports_per_order=3.0,
        placements_512_of_ideal=0.92,
    )

    verdicts = {row.figure: row.verdict for row in targets(figures)}

    assert figures.cpu_s_per_1000_orders == pytest.approx(2.0 + 3.0 * 1.1 + 0.1 * 3.0)
    assert verdicts["POST /orders, 64 conns, rate of bare"] == "MISSED"
    assert verdicts["POST /orders, 64 conns, errors"] == "MET"
    assert verdicts["POST /orders, second run of the first"] == "MET"
    assert verdicts["API CPU per accepted order, workers paused"] == "MISSED"
    assert verdicts["placements at 512 in flight, of ideal"] == "MET"
    assert verdicts["CPU-seconds per 1,000 orders accepted, placed, filled"] == "-"
    assert "| API CPU per accepted order, workers paused" in cost_table(targets(figures))
