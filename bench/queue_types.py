"""Classic or quorum placement queues? Measure both through the API's own publisher, in one run.

For each queue type: ``threads`` request-like threads publish ``messages`` persistent messages
each through one :class:`ConfirmedPublisher` (as one gunicorn worker process does), waiting for
every confirm; then one consumer drains the queue with manual acks. Prints throughput and the
publish latency percentiles. Talks only to the RabbitMQ given by ``--url`` (127.0.0.1 by default)
and deletes its queues at the end.

    python -m bench.queue_types [--threads 16] [--messages 500]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from typing import Any

import pika

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher, QueueDeclaration

#: Seconds the drain may take before the measurement gives up.
DRAIN_TIMEOUT_S = 120


def _publish(
    url: str, queue: str, arguments: dict[str, Any], threads: int, messages: int
) -> dict[str, float]:
    publisher = ConfirmedPublisher(
        url, [QueueDeclaration(queue, arguments)], connect_timeout_s=5, confirm_timeout_s=10
    )
    latencies: list[float] = []
    lock = threading.Lock()
    body = b'{"queue_name":"q","actor_name":"place_order","args":["00000000-0000-0000-0000-000000000000"]}'

    def run() -> None:
        mine = []
        for _ in range(messages):
            started = time.perf_counter()
            publisher.publish(queue, body, message_id=uuid.uuid4().hex)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    publisher.publish(queue, body, message_id="warm-up")
    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    publisher.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "publish/s": len(latencies) / elapsed,
        "p50 ms": quantiles[49] * 1000,
        "p99 ms": quantiles[98] * 1000,
        "max ms": max(latencies) * 1000,
    }


def _drain(url: str, queue: str, expected: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=64)
    seen = 0
    started = time.perf_counter()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    for method, _properties, _body in channel.consume(queue, inactivity_timeout=5):
        if method is None or time.monotonic() > deadline:
            break
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen == expected:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return seen / elapsed


def main() -> None:
    """Run the comparison and print one row per queue type."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--messages", type=int, default=500, help="per thread")
    options = parser.parse_args()
    kinds = {"classic": {}, "quorum": {"x-queue-type": "quorum"}}
    print(f"{options.threads} threads x {options.messages} confirmed persistent publishes, one publisher")
    print(f"{'queue':<8} {'publish/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'drain/s':>9}")
    for kind, arguments in kinds.items():
        queue = f"bench-queue-types-{kind}-{uuid.uuid4().hex[:6]}"
        figures = _publish(options.url, queue, arguments, options.threads, options.messages)
        drained = _drain(options.url, queue, options.threads * options.messages + 1)
        print(
            f"{kind:<8} {figures['publish/s']:>10.0f} {figures['p50 ms']:>8.2f} {figures['p99 ms']:>8.2f}"
            f" {figures['max ms']:>8.1f} {drained:>9.0f}"
        )


if __name__ == "__main__":
    main()
