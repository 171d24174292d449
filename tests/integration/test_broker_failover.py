"""``RABBITMQ_URL`` naming several nodes, on the real broker: every client gets past a node that is gone.

The machine has one RabbitMQ node, so the other "nodes" are stand-ins in front of it: a closed
port on 127.0.0.1 (a node that is down) or a TCP proxy to the real node that the test cuts off
(a node that dies under its clients). The fault suite does the same with a real three-node
cluster (``tests/faults/test_broker_cluster.py``).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from urllib.parse import quote

import psycopg2.extensions
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.conftest import StartWorker
from tests.integration.placement_helpers import ORDER, RecordingExchange, eventually, settled_row

pytestmark = pytest.mark.integration

#: Seconds the API may take to answer 201 again once its node has gone away.
FAILOVER_S = 5.0


class TcpProxy:
    """Forwards connections from a port of its own to ``127.0.0.1:target_port``.

    :meth:`cut_off` closes the listening port and every connection, as a node dies under its
    clients: they read the end of their stream and may not connect here again.
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    upstream.close()
                    return
                self.connections += 1
                for each in (client, upstream):
                    each.settimeout(None)
                    self._sockets.append(each)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for each in (source, sink):
            _shut(each)

    def cut_off(self) -> None:
        """Refuse new connections and end every open one."""
        with self._lock:
            self._closed.set()
            self._listener.close()
            for each in self._sockets:
                _shut(each)


def _shut(each: socket.socket) -> None:
    with suppress(OSError):
        each.shutdown(socket.SHUT_RDWR)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def proxy(rabbitmq_url: str) -> Iterator[TcpProxy]:
    """A stand-in node: a proxy to the machine's RabbitMQ."""
    real_port = int(rabbitmq_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(real_port)
    yield proxy
    proxy.cut_off()


@pytest.fixture
def first_node(request: pytest.FixtureRequest) -> int:
    """The port of the node listed first: closed, or a proxy to the real node (``indirect`` ``"proxy"``)."""
    if getattr(request, "param", "closed") == "proxy":
        proxy: TcpProxy = request.getfixturevalue("proxy")
        return proxy.port
    return _closed_port()


@pytest.fixture
def settings(settings: Settings, rabbit: RabbitAdmin, first_node: int) -> Settings:
    """This test's settings with the stand-in node listed before the real one in ``RABBITMQ_URL``."""
    stand_in = f"amqp://guest:guest@127.0.0.1:{first_node}/{quote(rabbit.vhost, safe='')}"
    return settings.model_copy(update={"rabbitmq_url": f"{stand_in};{settings.rabbitmq_url}"})


def test_with_the_first_node_down_an_order_is_accepted_and_a_worker_places_it(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
    settings: Settings,
) -> None:
    assert ";" in settings.rabbitmq_url
    response = client.post("/orders", json=ORDER)

    assert response.status_code == 201
    exchange = RecordingExchange()
    start_worker(exchange)
    assert settled_row(database, response.get_json()["id"])["status"] == "placed"
    assert exchange.calls == [uuid.UUID(response.get_json()["id"])]


def test_with_the_first_node_down_the_api_is_ready(client: FlaskClient) -> None:
    deadline = time.monotonic() + FAILOVER_S
    response = client.get("/readyz")
    while response.status_code != 200 and time.monotonic() < deadline:
        response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["checks"] == {"postgresql": "ok", "rabbitmq": "ok"}


def test_with_the_first_node_down_the_dead_letter_commands_read_the_queue(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    start_worker(RecordingExchange(fail_with=ValueError("instrument not tradable")))
    assert settled_row(database, order_id)["status"] == "failed"
    [message] = eventually(lambda: rabbit.peek_bodies(f"{settings.placement_queue}.XQ"))

    listed = client.application.test_cli_runner().invoke(args=["dead-letters", "list"])

    assert listed.exit_code == 0, listed.output
    [_, row, summary] = listed.output.splitlines()
    assert row.split()[:3] == [message["message_id"], order_id, "place_order"]
    assert summary == f"1 dead letter in {settings.placement_queue}.XQ"


@pytest.mark.parametrize("first_node", ["proxy"], indirect=True)
def test_when_the_node_in_use_dies_the_api_and_the_worker_carry_on_with_the_next(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
    proxy: TcpProxy,
) -> None:
    exchange = RecordingExchange()
    start_worker(exchange)
    before = client.post("/orders", json=ORDER)
    assert before.status_code == 201
    assert settled_row(database, before.get_json()["id"])["status"] == "placed"
    assert proxy.connections >= 2, "the API and the worker should both have connected to the first node"

    proxy.cut_off()
    answers: list[TestResponse] = []
    deadline = time.monotonic() + FAILOVER_S
    while (not answers or answers[-1].status_code != 201) and time.monotonic() < deadline:
        answers.append(client.post("/orders", json=ORDER))

    assert [answer.status_code for answer in answers][-1:] == [201]
    assert len(answers) <= 2, "at most the publish in flight when the node died may fail"
    after = answers[-1].get_json()["id"]
    assert settled_row(database, after)["status"] == "placed"
    assert exchange.calls == [uuid.UUID(before.get_json()["id"]), uuid.UUID(after)]
