"""A private three-node RabbitMQ cluster on 127.0.0.1, for the scenario that kills one of its nodes.

Each node is a :class:`~tests.faults.servers.PrivateRabbitMQ` (its own name, ports, data, logs
and configuration, the machine's ``epmd`` and Erlang cookie, started as the ``rabbitmq`` user by
Debian's scripts when the suite runs as root): the three boot at once, then the second and the
third join the first (``stop_app``, ``join_cluster``, ``start_app``). Every wait is bounded; at the
end every node still running is stopped (a node that will not stop is killed) and every data
directory deleted, also when start-up failed half-way.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from tests.faults.servers import (
    RABBITMQ_USER,
    SERVER_START_TIMEOUT_S,
    PrivateRabbitMQ,
    ServerError,
    free_ports,
    owned_temporary_directory,
)

#: Nodes in the cluster: the smallest that keeps a majority of a quorum queue's members when one dies.
CLUSTER_SIZE = 3
#: Seconds a killed node's VM has to disappear.
KILL_TIMEOUT_S = 10.0
#: Seconds the management API may take for one request.
MANAGEMENT_TIMEOUT_S = 5.0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is not a zombie waiting for its parent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


class ClusterNode(PrivateRabbitMQ):
    """A private node that can join a cluster, be SIGKILLed, and be shut down whether it runs or not."""

    def __init__(self, directory: Path, ports: tuple[int, int, int]) -> None:
        super().__init__(directory)
        # Ports for all the nodes are drawn at once, so no two nodes can be given the same.
        self.amqp_port, self._dist_port, self.management_port = ports
        self._env["RABBITMQ_NODE_PORT"] = str(self.amqp_port)
        self._env["RABBITMQ_DIST_PORT"] = str(self._dist_port)

    @property
    def pid(self) -> int | None:
        """The OS pid of the node's Erlang VM, once it has written its pid file."""
        with suppress(OSError, ValueError):
            return int(self._pid_file.read_text(encoding="utf-8").strip())
        return None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def join(self, seed: ClusterNode) -> None:
        """Join the cluster of ``seed``; this node must be fresh (nothing declared on it)."""
        self.stop_app()
        self.rabbitmqctl("join_cluster", seed.node)
        self.start_app()

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, as a crash or a lost machine would, and wait until it is gone."""
        pid = self.pid
        if pid is None:
            raise ServerError(f"{self.node} has no pid file: it never started")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while _alive(pid):
            if time.monotonic() > deadline:
                raise ServerError(f"{self.node} (pid {pid}) outlived SIGKILL by {KILL_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def shut_down(self) -> None:
        """Stop the node if it runs (a killed node is left as it is); kill it if it will not stop."""
        if self.is_running():
            super().shut_down()


class PrivateRabbitMQCluster:
    """The nodes of a private cluster, and what the management API says about it."""

    def __init__(self, nodes: list[ClusterNode]) -> None:
        self.nodes = nodes

    def node(self, name: str) -> ClusterNode:
        [node] = [node for node in self.nodes if node.node == name]
        return node

    def url(self, vhost: str) -> str:
        """``RABBITMQ_URL`` for ``vhost``: every node, ``;``-separated, in the order they were started."""
        return ";".join(f"{node.url}/{quote(vhost, safe='')}" for node in self.nodes)

    def _get(self, path: str) -> Any:
        """GET from the management API of the first node still running."""
        for node in self.nodes:
            if node.is_running():
                response = requests.get(
                    f"{node.management_url}/api/{path}", auth=RABBITMQ_USER, timeout=MANAGEMENT_TIMEOUT_S
                )
                response.raise_for_status()
                return response.json()
        raise ServerError("no node of the cluster is running")

    def running_nodes(self) -> set[str]:
        """The nodes the cluster reports running."""
        return {node["name"] for node in self._get("nodes") if node.get("running")}

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        """The queue as the management API shows it: a quorum queue's ``leader``, ``members``, ``online``."""
        result: dict[str, Any] = self._get(f"queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        return result

    def connections_to(self, node: ClusterNode) -> int:
        """Client connections that ``node`` serves (as of the management API's last statistics)."""
        return sum(1 for connection in self._get("connections") if connection.get("node") == node.node)

    def wait_for(self, check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
        """Poll ``check`` until it returns something truthy (an error counts as no); fail at ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                outcome = check()
            except (requests.RequestException, KeyError, ValueError) as error:
                outcome, last = None, error
            if outcome:
                return outcome
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last error: {last!r})")


def _each(nodes: list[ClusterNode], action: Callable[[ClusterNode], None]) -> None:
    """Run ``action`` on every node at once; raise the first failure once all have finished."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        outcomes = [pool.submit(action, node) for node in nodes]
    for outcome in outcomes:
        outcome.result()


@contextmanager
def private_rabbitmq_cluster(size: int = CLUSTER_SIZE) -> Iterator[PrivateRabbitMQCluster]:
    """A fresh cluster of ``size`` nodes with the management API, running for the block, then removed."""
    directories: list[Path] = []
    try:
        for i in range(size):
            directories.append(owned_temporary_directory(f"orders-faults-cluster-{i}-", "rabbitmq"))
        ports = free_ports(3 * size)
        nodes = [
            ClusterNode(directory, (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]))
            for i, directory in enumerate(directories)
        ]
        cluster = PrivateRabbitMQCluster(nodes)
        try:
            _each(nodes, PrivateRabbitMQ.start)
            seed = nodes[0]
            for node in nodes[1:]:
                node.join(seed)
            want = {node.node for node in nodes}
            formed = f"a cluster of {sorted(want)}"
            cluster.wait_for(lambda: cluster.running_nodes() == want, formed, SERVER_START_TIMEOUT_S)
            yield cluster
        finally:
            _each(nodes, ClusterNode.shut_down)
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
