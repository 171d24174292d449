"""A small client of RabbitMQ's management HTTP API, for tests: vhosts, policies and queue contents."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.parse import quote

import requests

#: The management API; the tests create and delete one vhost per run through it.
MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
#: Credentials of a user allowed to create vhosts.
MANAGEMENT_AUTH = (
    os.environ.get("RABBITMQ_MANAGEMENT_USER", "guest"),
    os.environ.get("RABBITMQ_MANAGEMENT_PASSWORD", "guest"),
)
_TIMEOUT_S = 10


class RabbitAdmin:
    """Operations on one vhost."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self._vhost_path = quote(vhost, safe="")

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(
            method, f"{MANAGEMENT_URL}/api/{path}", auth=MANAGEMENT_AUTH, timeout=_TIMEOUT_S, **kwargs
        )
        response.raise_for_status()
        return response

    def create_vhost(self) -> None:
        user = MANAGEMENT_AUTH[0]
        self._request("PUT", f"vhosts/{self._vhost_path}")
        self._request(
            "PUT",
            f"permissions/{self._vhost_path}/{quote(user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete_vhost(self) -> None:
        self._request("DELETE", f"vhosts/{self._vhost_path}")

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any]) -> None:
        self._request(
            "PUT",
            f"policies/{self._vhost_path}/{quote(name, safe='')}",
            json={"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10},
        )

    def reject_publishes_to(self, queue: str) -> None:
        """Make RabbitMQ nack every publish to ``queue``: a full queue that rejects instead of dropping.

        Policies apply asynchronously and the API cannot wait for them, hence the short pause.
        """
        pattern = "^" + re.escape(queue) + "$"
        self.set_policy(f"reject-{queue}", pattern, {"max-length": 0, "overflow": "reject-publish"})
        time.sleep(0.5)

    def delete_policy(self, name: str) -> None:
        self._request("DELETE", f"policies/{self._vhost_path}/{quote(name, safe='')}")

    def queue(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"queues/{self._vhost_path}/{quote(name, safe='')}"
        ).json()
        return result

    def peek(self, queue: str, count: int = 1000) -> list[dict[str, Any]]:
        """Read up to ``count`` messages and put them back (the management API requeues them)."""
        messages: list[dict[str, Any]] = self._request(
            "POST",
            f"queues/{self._vhost_path}/{quote(queue, safe='')}/get",
            json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
        ).json()
        return messages

    def peek_bodies(self, queue: str) -> list[dict[str, Any]]:
        return [json.loads(message["payload"]) for message in self.peek(queue)]
