"""A RabbitMQ cluster node dies under a steady stream of orders: the service carries on with the others.

``RABBITMQ_URL`` lists the three nodes of a private cluster (``tests.faults.cluster``); the API's
publisher, the workers and the queue declarations all go through it. Once the stream is under
way, the node leading the placement queue, the one every client connected to first, is
SIGKILLed. The checks are those of every scenario (``tests.faults.test_fault_scenarios.check``:
every 201 placed, none placed twice, 201s again after the fault), plus: before the kill the
queue had a member on each node and clients on the leader; after it, a new leader on a node
that lives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from orders_api.adapters.postgres.migrate import upgrade
from orders_api.adapters.rabbitmq.queue_topology import set_up_placement_queues
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.faults.cluster import ClusterNode, PrivateRabbitMQCluster, private_rabbitmq_cluster
from tests.faults.harness import FAULT_AFTER_ANSWERS, FaultRun
from tests.faults.servers import PrivatePostgres
from tests.faults.test_fault_scenarios import check

pytestmark = pytest.mark.faults

#: Seconds the surviving nodes have to elect a new leader for the placement queue.
ELECTION_TIMEOUT_S = 30.0


@pytest.fixture
def cluster() -> Iterator[PrivateRabbitMQCluster]:
    """Three private RabbitMQ nodes in one cluster, removed after the scenario."""
    with private_rabbitmq_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_run(
    postgres_server: PrivatePostgres, cluster: PrivateRabbitMQCluster, tmp_path: Path
) -> FaultRun:
    """A migrated database of its own on the private PostgreSQL and a vhost on the cluster."""
    name = f"faults_cluster_{uuid.uuid4().hex[:6]}"
    database_url = f"{postgres_server.url}/{name}"
    upgrade(database_url)
    admin = RabbitAdmin(name, cluster.nodes[0].management_url)
    admin.create_vhost()
    _declare_queues_on(cluster.nodes[0], name, "order-placement")
    settings = Settings(
        database_url=database_url,
        rabbitmq_url=cluster.url(name),
        placement_queue="order-placement",
        rabbitmq_management_url=";".join(node.management_url for node in cluster.nodes),
    )
    return FaultRun(settings, postgres_server, cluster.nodes[0], admin, tmp_path)


def _declare_queues_on(node: ClusterNode, vhost: str, queue: str) -> None:
    """Set up the placement queues as ``orders-broker-setup`` does, over a connection to ``node``.

    A quorum queue's first leader is the node its declaring client is connected to
    (``client-local``), and the service's clients connect to the first node of the URL: declared
    from there, the leader the scenario kills is the node the clients use, so that their
    failover is exercised, not left to which client happened to declare first.
    """
    set_up_placement_queues(
        Settings(
            rabbitmq_url=f"{node.url}/{quote(vhost, safe='')}",
            rabbitmq_management_url=node.management_url,
            placement_queue=queue,
        )
    )


def test_orders_survive_the_rabbitmq_node_leading_the_placement_queue_killed_mid_stream(
    cluster_run: FaultRun, cluster: PrivateRabbitMQCluster, report_ledger: list[str]
) -> None:
    vhost, queue = cluster_run.admin.vhost, cluster_run.settings.placement_queue
    nodes = {node.node for node in cluster.nodes}
    with cluster_run.service(cluster_run.options()) as service:
        with cluster_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            before = cluster.queue(vhost, queue)
            assert before["leader"] == cluster.nodes[0].node, "the queue should be led where it was declared"
            leader = cluster.node(before["leader"])
            # The management API lists connections from statistics that lag a little behind.
            clients_on_leader = cluster.wait_for(
                lambda: cluster.connections_to(leader), "client connections listed on the leader", 15.0
            )
            with cluster_run.fault():
                leader.kill()
            killed_at = time.monotonic()
            after = cluster.wait_for(
                lambda: (
                    (answer := cluster.queue(vhost, queue)).get("leader") in nodes - {leader.node} and answer
                ),
                "a new leader for the placement queue",
                ELECTION_TIMEOUT_S,
            )
            elected_s = time.monotonic() - killed_at
        # The ledger reads the dead-letter queue through the management API of a node still up.
        survivor = cluster.node(after["leader"])
        cluster_run.admin = RabbitAdmin(vhost, survivor.management_url)
        cluster_run.wait_until_settled(service)
    ledger = cluster_run.ledger("SIGKILL the RabbitMQ node leading the queue (1 of 3)", service)
    report_ledger.append(ledger.row())

    print(
        f"\nbefore the kill: leader {before['leader']}, members {sorted(before['members'])},"
        f" {clients_on_leader} client connections on the leader;"
        f" after: leader {after['leader']} (seen {elected_s:.1f} s after the kill),"
        f" online {sorted(after['online'])}"
    )
    check(ledger)
    assert set(before["members"]) == nodes, "the placement queue should have a member on every node"
    assert set(before["online"]) == nodes
    assert clients_on_leader > 0, "no client was connected to the node killed: no failover was needed"
    assert set(after["online"]) == nodes - {leader.node}
