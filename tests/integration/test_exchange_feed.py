"""The exchange feed simulator as a client sees it: a real process, real PostgreSQL, a real WebSocket.

Each test starts ``python -m exchange_simulator.feed`` on a free port with a state directory of
its own, reading this run's database, where the test places orders of its own. The feed reports
every placed order of the database, so the checks look at the test's own orders (and at the
whole log where the log is the point).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
import sqlalchemy as sa
from psycopg2 import sql
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from exchange_simulator.feed.durable_log import the_only_log
from exchange_simulator.feed.stories import PlacedOrder
from orders_api.adapters.postgres.migrate import upgrade
from tests.execution_stories import TERMINAL_KINDS, assert_follows_contract, step_of

pytestmark = pytest.mark.integration

#: Seconds a feed process may take to answer its liveness probe.
START_TIMEOUT_S = 15
#: Seconds any read of the feed may take before the test fails instead of hanging.
READ_TIMEOUT_S = 20
#: Seconds without a frame after which a clean feed is taken to have sent everything it has.
QUIET_S = 0.5

Report = dict[str, Any]


@dataclass
class Feed:
    """A running simulator process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/executions"

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL: as a crash) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=10)

    def logged_reports(self) -> list[Report]:
        """The reports in the durable log, in feed_seq order."""
        lines = the_only_log(self.state_dir).read_text().splitlines()
        return [record for record in map(json.loads, lines) if "feed_seq" in record]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


StartFeed = Callable[..., Feed]


@pytest.fixture
def database_url(own_database_url: str) -> str:
    """A database of this test's own: the feed reports on every placed order of its database,
    and the run's shared one fills with other tests' placed orders, far more than a paced feed
    tells in time."""
    return own_database_url


@pytest.fixture
def start_feed(database_url: str, tmp_path: Path) -> Iterator[StartFeed]:
    """Start simulator processes; every one still running is stopped after the test."""
    feeds: list[Feed] = []

    def start(*flags: str, state_dir: Path | None = None) -> Feed:
        port = _free_port()
        state = state_dir or tmp_path / f"feed-{len(feeds)}"
        log_path = tmp_path / f"feed-{len(feeds)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "exchange_simulator.feed",
                    "--port", str(port), "--state-dir", str(state), "--database-url", database_url,
                    "--poll-interval", "0.05", *flags,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        feed = Feed(process, port, state, log_path)
        feeds.append(feed)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the feed exited with {process.returncode}: {log_path.read_text()}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return feed
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the feed did not come up within {START_TIMEOUT_S} s: {log_path.read_text()}")
            time.sleep(0.05)

    yield start
    for feed in feeds:
        feed.stop(signal.SIGKILL)


def place_orders(
    database_url: str,
    count: int,
    rng: random.Random,
    status: str = "placed",
    placed_seconds_ago: float = 0,
) -> dict[uuid.UUID, PlacedOrder]:
    """Insert ``count`` orders of every type and side, as the stand-in leaves them once placed."""
    orders: dict[uuid.UUID, PlacedOrder] = {}
    for _ in range(count):
        order_type = rng.choice(["market", "limit"])
        limit = Decimal(rng.randint(1, 100_000)) / 100 if order_type == "limit" else None
        order = PlacedOrder(
            uuid.uuid4(), order_type, rng.choice(["buy", "sell"]), limit, rng.randint(1, 1000)
        )
        orders[order.id] = order
    connection = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with connection, connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO orders (id, created_at, type, side, instrument, limit_price, quantity, status,"
                " placed_at, attempts, abandoned_claims)"
                " VALUES (%s, now(), %s, %s, 'GB0002634946', %s, %s, %s,"
                " CASE WHEN %s = 'placed' THEN now() - make_interval(secs => %s) END, 1, 0)",
                [
                    (str(o.id), o.type, o.side, o.limit_price, o.quantity, status, status, placed_seconds_ago)
                    for o in orders.values()
                ],
            )
    finally:
        connection.close()
    return orders


def stories_of(reports: Iterable[Report], order_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Report]]:
    """The reports of the given orders, each order's in seq order."""
    wanted = {str(order_id) for order_id in order_ids}
    stories: dict[uuid.UUID, list[Report]] = defaultdict(list)
    for report in reports:
        if report["order_id"] in wanted:
            stories[uuid.UUID(report["order_id"])].append(report)
    return {order_id: sorted(story, key=lambda r: r["seq"]) for order_id, story in stories.items()}


def complete(reports: Iterable[Report], order_ids: Iterable[uuid.UUID]) -> bool:
    """Whether every given order's story has reached its end, with nothing missing before it."""
    ids = list(order_ids)
    stories = stories_of(reports, ids)
    return len(stories) == len(ids) and all(
        story[-1]["kind"] in TERMINAL_KINDS and len({r["seq"] for r in story}) == story[-1]["seq"]
        for story in stories.values()
    )


def read_until_quiet(
    url: str, position: int, done: Callable[[list[Report]], bool] = lambda _: True
) -> list[Report]:
    """Every report a clean feed sends after ``position`` until ``done`` holds and the feed goes quiet."""
    received: list[Report] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    with connect(f"{url}?from={position}") as websocket:
        while True:
            try:
                received.extend(json.loads(websocket.recv(timeout=QUIET_S)))
            except TimeoutError:
                if done(received):
                    return received
            if time.monotonic() > deadline:
                pytest.fail(f"the feed did not finish within {READ_TIMEOUT_S} s ({len(received)} reports)")


def test_every_placed_order_gets_exactly_one_story_that_follows_the_contract(
    start_feed: StartFeed, database_url: str
) -> None:
    rng = random.Random(11)
    placed = place_orders(database_url, 40, rng)
    pending = place_orders(database_url, 3, rng, status="pending")
    feed = start_feed("--clean", "--rate", "0", "--batch", "7", "--seed", "11")
    placed_later = place_orders(database_url, 10, rng)
    everyone = [*placed, *placed_later]

    reports = read_until_quiet(feed.url, 0, lambda received: complete(received, everyone))

    assert [r["feed_seq"] for r in reports] == list(range(1, len(reports) + 1))
    assert len({r["exec_id"] for r in reports}) == len(reports)
    assert not stories_of(reports, pending)
    orders = {**placed, **placed_later}
    for order_id, story in stories_of(reports, everyone).items():
        assert_follows_contract(orders[order_id], [step_of(report) for report in story])
    kinds = {r["kind"] for r in reports}
    assert {"accepted", "partial_fill", "fill"} <= kinds


def test_a_resume_gets_exactly_the_reports_after_its_position_also_from_a_restarted_feed(
    start_feed: StartFeed, database_url: str
) -> None:
    placed = place_orders(database_url, 30, random.Random(12))
    feed = start_feed("--clean", "--rate", "0", "--batch", "5")
    everything = read_until_quiet(feed.url, 0, lambda received: complete(received, placed))
    middle = len(everything) // 2

    assert read_until_quiet(feed.url, middle) == everything[middle:]
    feed.stop()
    restarted = start_feed("--clean", "--rate", "0", "--batch", "3", state_dir=feed.state_dir)
    assert read_until_quiet(restarted.url, middle) == everything[middle:]
    assert read_until_quiet(restarted.url, 0) == everything
    assert read_until_quiet(restarted.url, len(everything)) == []


def test_a_database_created_again_under_its_old_name_gets_a_fresh_log_not_the_old_ones_reports(
    start_feed: StartFeed, database_url: str
) -> None:
    first_orders = place_orders(database_url, 5, random.Random(21))
    feed = start_feed("--clean", "--rate", "0")
    first_run = read_until_quiet(feed.url, 0, lambda received: complete(received, first_orders))
    feed.stop()
    _create_again(database_url)
    second_orders = place_orders(database_url, 3, random.Random(22))

    again = start_feed("--clean", "--rate", "0", state_dir=feed.state_dir)
    second_run = read_until_quiet(again.url, 0, lambda received: complete(received, second_orders))

    assert {report["order_id"] for report in first_run} == {str(order_id) for order_id in first_orders}
    assert {report["order_id"] for report in second_run} == {str(order_id) for order_id in second_orders}
    assert second_run[0]["feed_seq"] == 1
    assert len(list(feed.state_dir.glob("*/feed.jsonl"))) == 2


def _create_again(database_url: str) -> None:
    """Drop the test's database and create it again, migrated, under the same name (a new oid)."""
    url = sa.make_url(database_url)
    server_url = url.set(database="postgres").render_as_string(hide_password=False)
    server = psycopg2.connect(server_url, connect_timeout=5)
    server.autocommit = True
    try:
        with server.cursor() as cursor:
            name = sql.Identifier(str(url.database))
            cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
    finally:
        server.close()
    upgrade(database_url)


def test_a_feed_killed_mid_story_finishes_each_story_once_after_a_restart(
    start_feed: StartFeed, database_url: str
) -> None:
    placed = place_orders(database_url, 40, random.Random(13))
    feed = start_feed("--clean", "--rate", "150", "--fills-per-order", "4")
    before_kill: list[Report] = []
    with connect(f"{feed.url}?from=0") as websocket:
        while len(before_kill) < 60:
            before_kill.extend(json.loads(websocket.recv(timeout=READ_TIMEOUT_S)))
    feed.stop(signal.SIGKILL)
    restarted = start_feed("--clean", "--rate", "0", "--fills-per-order", "4", state_dir=feed.state_dir)

    reports = read_until_quiet(restarted.url, 0, lambda received: complete(received, placed))

    assert 60 <= len(before_kill) < len(reports)
    assert reports[: len(before_kill)] == before_kill
    assert [r["feed_seq"] for r in reports] == list(range(1, len(reports) + 1))
    assert len({r["exec_id"] for r in reports}) == len(reports)
    for order_id, story in stories_of(reports, placed).items():
        assert [r["seq"] for r in story] == [1, 2, 3, 4, 5]
        assert_follows_contract(placed[order_id], [step_of(report) for report in story])


@dataclass
class ResumingClient:
    """An ingestor's way with a faulty feed: resume from the highest gapless position, dedup by exec_id."""

    url: str
    reports: dict[str, Report] = field(default_factory=dict)
    positions: set[int] = field(default_factory=set)
    watermark: int = 0
    repeats: int = 0
    reorders: int = 0
    drops: int = 0

    def read(self, done: Callable[[list[Report]], bool]) -> None:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with connect(f"{self.url}?from={self.watermark}") as websocket:
                    if self._read_connection(websocket, done):
                        return
            except ConnectionClosedError:
                self.drops += 1
        pytest.fail(f"the client did not catch up within {READ_TIMEOUT_S} s")

    def _read_connection(self, websocket: ClientConnection, done: Callable[[list[Report]], bool]) -> bool:
        highest = self.watermark
        while True:
            try:
                frame = websocket.recv(timeout=QUIET_S)
            except TimeoutError:
                if self.watermark == max(self.positions, default=0) and done(list(self.reports.values())):
                    return True
                continue
            for report in json.loads(frame):
                if report["exec_id"] in self.reports:
                    self.repeats += 1
                    continue
                if report["feed_seq"] < highest:
                    self.reorders += 1
                highest = max(highest, report["feed_seq"])
                self.reports[report["exec_id"]] = report
                self.positions.add(report["feed_seq"])
            while self.watermark + 1 in self.positions:
                self.watermark += 1


def test_a_client_that_resumes_and_dedups_gets_every_report_from_a_faulty_feed(
    start_feed: StartFeed, database_url: str
) -> None:
    placed = place_orders(database_url, 30, random.Random(14))
    feed = start_feed(
        "--rate", "0", "--batch", "2", "--seed", "5",
        "--repeat-probability", "0.1", "--reorder-probability", "0.1", "--drop-every", "10",
    )  # fmt: skip
    client = ResumingClient(feed.url)

    client.read(lambda received: complete(received, placed))
    feed.stop()

    logged = feed.logged_reports()
    assert client.watermark == len(logged)
    assert sorted(client.reports.values(), key=lambda r: r["feed_seq"]) == logged
    assert client.repeats > 0
    assert client.reorders > 0
    assert client.drops > 0
    for order_id, story in stories_of(logged, placed).items():
        assert_follows_contract(placed[order_id], [step_of(report) for report in story])


def test_the_rate_knob_paces_the_reports(start_feed: StartFeed, database_url: str) -> None:
    placed = place_orders(database_url, 50, random.Random(15))
    rate = 400
    feed = start_feed("--clean", "--rate", str(rate), "--batch", "1", "--fills-per-order", "3")
    arrivals: list[float] = []
    received: list[Report] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    with connect(f"{feed.url}?from=0") as websocket:
        while not complete(received, placed):
            if time.monotonic() > deadline:
                pytest.fail("the feed did not tell every story in time")
            received.extend(json.loads(websocket.recv(timeout=READ_TIMEOUT_S)))
            arrivals.append(time.monotonic())

    measured = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert len(arrivals) >= 200
    assert 0.7 * rate < measured < 1.3 * rate


def test_the_feed_answers_its_liveness_probe_and_refuses_what_is_not_a_position(
    start_feed: StartFeed,
) -> None:
    feed = start_feed("--clean")
    base = f"http://127.0.0.1:{feed.port}"
    assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"
    assert requests.get(f"{base}/executions?from=-1", timeout=5).status_code == 400
    assert requests.get(f"{base}/executions?from=x", timeout=5).status_code == 400
    assert requests.get(f"{base}/elsewhere", timeout=5).status_code == 404


def test_an_order_committed_behind_the_cursor_is_still_reported_once(
    start_feed: StartFeed, database_url: str
) -> None:
    """A worker stamps placed_at before its COMMIT, so an order can commit after the poll's
    cursor has passed its placed_at; the sweep behind the cursor must still find it."""
    ahead = place_orders(database_url, 5, random.Random(16))
    feed = start_feed("--clean", "--rate", "0")
    read_until_quiet(feed.url, 0, lambda received: complete(received, ahead))
    late = place_orders(database_url, 3, random.Random(17), placed_seconds_ago=3)

    reports = read_until_quiet(feed.url, 0, lambda received: complete(received, [*ahead, *late]))
    feed.stop()
    restarted = start_feed("--clean", "--rate", "0", state_dir=feed.state_dir)
    time.sleep(1.5)  # a sweep of the restarted feed, which must not adopt the late orders again

    assert read_until_quiet(restarted.url, 0) == reports
    assert len({r["exec_id"] for r in reports}) == len(reports)
    for order_id, story in stories_of(reports, late).items():
        assert_follows_contract(late[order_id], [step_of(report) for report in story])
