"""A small client of RabbitMQ's management HTTP API, for the tests and the benchmark: vhosts, policies."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
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
    """Operations on one vhost, of the shared server or of another node (``management_url``)."""

    def __init__(self, vhost: str, management_url: str = MANAGEMENT_URL) -> None:
        self.vhost = vhost
        self._vhost_path = quote(vhost, safe="")
        self._management_url = management_url

    def _request(self, method: str, path: str, json: object = None) -> requests.Response:
        response = requests.request(
            method, f"{self._management_url}/api/{path}", auth=MANAGEMENT_AUTH, timeout=_TIMEOUT_S, json=json
        )
        response.raise_for_status()
        return response

    def create_vhost(self) -> None:
        """Create the vhost and give the management user every permission on it."""
        user = MANAGEMENT_AUTH[0]
        self._request("PUT", f"vhosts/{self._vhost_path}")
        self._request(
            "PUT",
            f"permissions/{self._vhost_path}/{quote(user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete_vhost(self) -> None:
        """Delete the vhost with its queues, exchanges and policies."""
        self._request("DELETE", f"vhosts/{self._vhost_path}")

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any]) -> None:
        """Apply ``definition`` to the vhost's queues matching ``pattern`` (priority 10)."""
        self._request(
            "PUT",
            f"policies/{self._vhost_path}/{quote(name, safe='')}",
            json={"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10},
        )

    def reject_publishes_to(self, queue: str) -> None:
        """Make RabbitMQ nack every further publish to ``queue``: a full queue that rejects.

        ``queue`` must exist, under the service's policy, whose ``overflow: reject-publish``
        makes a full queue nack. The length limit of 0 comes from an *operator* policy, which
        RabbitMQ merges with the service's (a second ordinary policy would replace it, taking
        the dead-lettering away); :meth:`delete_policy` removes it. A quorum queue rejects only
        once it is *over* its length limit, so one filler message (a placement request for an
        order that does not exist, which a worker would drop) goes in first; policies apply
        asynchronously and the API cannot wait for them, hence the short pause.
        """
        filler = {"queue_name": queue, "actor_name": "place_order", "args": [str(uuid.uuid4())], "kwargs": {}}
        routed = self._request(
            "POST",
            "exchanges/" + self._vhost_path + "/amq.default/publish",
            json={
                "routing_key": queue,
                "payload": json.dumps(
                    {**filler, "options": {}, "message_id": str(uuid.uuid4()), "message_timestamp": 0}
                ),
                "payload_encoding": "string",
                "properties": {"delivery_mode": 2},
            },
        ).json()["routed"]
        assert routed, f"queue {queue} must exist before it can be made to reject publishes"
        pattern = "^" + re.escape(queue) + "$"
        self._request(
            "PUT",
            f"operator-policies/{self._vhost_path}/{quote(f'reject-{queue}', safe='')}",
            json={"pattern": pattern, "definition": {"max-length": 0}, "apply-to": "queues", "priority": 10},
        )
        time.sleep(0.5)

    def deny_consuming_from(self, queue: str) -> None:
        """Refuse this run's user to consume from ``queue`` (403), so what is in it stays ready."""
        self._set_permissions(read="^(?!" + re.escape(queue) + "$).*")

    def restore_permissions(self) -> None:
        """Undo :meth:`deny_consuming_from`: this run's user reads every queue again."""
        self._set_permissions(read=".*")

    def _set_permissions(self, *, read: str) -> None:
        user = quote(MANAGEMENT_AUTH[0], safe="")
        permissions = {"configure": ".*", "write": ".*", "read": read}
        self._request("PUT", f"permissions/{self._vhost_path}/{user}", json=permissions)

    def delete_policy(self, name: str) -> None:
        """Delete policy ``name``, or the operator policy of that name (:meth:`reject_publishes_to`)."""
        kind = "operator-policies" if name.startswith("reject-") else "policies"
        self._request("DELETE", f"{kind}/{self._vhost_path}/{quote(name, safe='')}")

    def delete_policies_if_present(self, *names: str) -> None:
        """Delete each of the policies ``names`` that exists; missing ones are no error."""
        self._delete_if_present("policies", names)

    def policy(self, name: str) -> dict[str, Any] | None:
        """Policy ``name`` as the management API shows it, or ``None`` if there is none."""
        response = requests.get(
            f"{self._management_url}/api/policies/{self._vhost_path}/{quote(name, safe='')}",
            auth=MANAGEMENT_AUTH,
            timeout=_TIMEOUT_S,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def connection_names(self) -> set[str]:
        """The ``connection_name`` of every client connected to this vhost, as the console lists them.

        The list comes from statistics that lag a second or so behind new connections.
        """
        connections: list[dict[str, Any]] = self._request(
            "GET", f"vhosts/{self._vhost_path}/connections"
        ).json()
        return {
            str(connection.get("client_properties", {}).get("connection_name", ""))
            for connection in connections
        }

    def close_consumer_connections(self, queue: str) -> int:
        """Close every connection consuming from ``queue``, as a network blip would; return how many.

        Their unacknowledged messages go back to the queue, ready, until the consumers reconnect.
        A consumer whose channel the statistics do not know yet (``channel_details`` is then an
        empty list, not an object) is left for the caller's next look.
        """
        names = {
            consumer["channel_details"]["connection_name"]
            for consumer in self.consumers()
            if consumer["queue"]["name"] == queue and isinstance(consumer["channel_details"], dict)
        }
        for name in names:
            self._request("DELETE", f"connections/{quote(name, safe='')}")
        return len(names)

    def consumers(self) -> list[dict[str, Any]]:
        """Every consumer of this vhost as the management API lists them (tag, queue, ``active``)."""
        consumers: list[dict[str, Any]] = self._request("GET", f"consumers/{self._vhost_path}").json()
        return consumers

    def delete_queue(self, name: str) -> None:
        """Delete queue ``name`` and what it holds, as an operator or a lost node would."""
        self._request("DELETE", f"queues/{self._vhost_path}/{quote(name, safe='')}")

    def delete_queues_if_present(self, *names: str) -> None:
        """Delete each of ``names`` that exists, with what it holds; missing ones are no error."""
        self._delete_if_present("queues", names)

    def _delete_if_present(self, kind: str, names: tuple[str, ...]) -> None:
        for name in names:
            response = requests.delete(
                f"{self._management_url}/api/{kind}/{self._vhost_path}/{quote(name, safe='')}",
                auth=MANAGEMENT_AUTH,
                timeout=_TIMEOUT_S,
            )
            if response.status_code != 404:
                response.raise_for_status()

    def queue(self, name: str) -> dict[str, Any]:
        """Queue ``name`` as the management API shows it: arguments, policy, message counts."""
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
        """The JSON bodies of the messages :meth:`peek` reads."""
        return [json.loads(message["payload"]) for message in self.peek(queue)]
