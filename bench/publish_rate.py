"""The raw rate of confirmed persistent publishes into RabbitMQ, keeping a fixed number unconfirmed.

One asynchronous pika connection publishes persistent, ``mandatory`` messages into a queue
declared as the placement queue is, and keeps exactly ``--window`` of them unconfirmed: each
confirm lets the next message go. That is the ceiling of the API's last link (its requests
wait for confirms on one such connection per process), at the same concurrency, with none of
the API's own work. Runs as a process of its own and prints one JSON line::

    python -m bench.publish_rate --url URL --queue NAME --window 64 --duration 5
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from typing import Any

import pika
import pika.channel
import pika.frame
from pika.adapters.select_connection import SelectConnection

from orders_api.adapters.rabbitmq.placement_queue import queue_declarations

#: A body the size of a real placement request.
BODY = (
    b'{"queue_name":"order-placement","actor_name":"place_order",'
    b'"args":["00000000-0000-0000-0000-000000000000"],"kwargs":{},"options":{},'
    b'"message_id":"00000000-0000-0000-0000-000000000000","message_timestamp":0}'
)
_PROPERTIES = pika.BasicProperties(
    delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"
)


class _WindowedPublisher:
    """Publishes with ``window`` messages unconfirmed until ``duration_s`` has passed."""

    def __init__(self, url: str, queue: str, window: int, duration_s: float) -> None:
        self._queue = queue
        self._window = window
        self._duration_s = duration_s
        self._sent_at: deque[float] = deque()
        self._latencies: list[float] = []
        self._confirmed_tag = 0
        self._channel: pika.channel.Channel | None = None
        self._started = self._ends = 0.0
        self._connection = SelectConnection(
            pika.URLParameters(url), on_open_callback=self._on_open, on_open_error_callback=self._on_error
        )

    def run(self) -> dict[str, Any]:
        self._connection.ioloop.call_later(self._duration_s + 30, self._connection.ioloop.stop)
        self._connection.ioloop.start()
        elapsed = self._ends - self._started
        latencies = sorted(self._latencies)
        return {
            "window": self._window,
            "confirmed": len(latencies),
            "rate": len(latencies) / elapsed if elapsed > 0 else 0.0,
            **{
                f"{name}_ms": latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
        }

    def _on_error(self, _connection: SelectConnection, error: BaseException) -> None:
        raise SystemExit(f"cannot connect to RabbitMQ: {error}")

    def _on_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        [declaration, *_] = queue_declarations(self._queue)
        channel.queue_declare(
            self._queue, durable=True, arguments=declaration.arguments, callback=self._on_declared
        )

    def _on_declared(self, _frame: pika.frame.Method) -> None:
        assert self._channel is not None
        self._channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirming)

    def _on_confirming(self, _frame: pika.frame.Method) -> None:
        self._started = time.perf_counter()
        for _ in range(self._window):
            self._publish()

    def _publish(self) -> None:
        assert self._channel is not None
        self._sent_at.append(time.perf_counter())
        self._channel.basic_publish("", self._queue, BODY, _PROPERTIES, mandatory=True)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        now = time.perf_counter()
        tag = frame.method.delivery_tag
        count = tag - self._confirmed_tag if frame.method.multiple else 1
        self._confirmed_tag = max(self._confirmed_tag, tag)
        for _ in range(count):
            self._latencies.append(now - self._sent_at.popleft())
        if now - self._started < self._duration_s:
            for _ in range(count):
                self._publish()
        elif not self._sent_at:
            self._ends = now
            self._connection.close()
            self._connection.ioloop.stop()


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--window", type=int, required=True, help="messages kept unconfirmed")
    parser.add_argument("--duration", type=float, required=True, help="seconds of publishing")
    options = parser.parse_args()
    print(json.dumps(_WindowedPublisher(options.url, options.queue, options.window, options.duration).run()))


if __name__ == "__main__":
    main()
