"""RabbitMQ's management HTTP API, for the few things AMQP cannot do: policies and a queue's arguments.

Only the broker setup command and the workers' boot check use it (never the API's request
path), so a management API that is down delays a deployment, not an order. The URL is
``RABBITMQ_MANAGEMENT_URL`` if set, else derived from ``RABBITMQ_URL``: the same hosts and
credentials, port 15672, plain http. Several nodes, separated by ``;`` as in ``RABBITMQ_URL``,
are tried in order, each request going to the first that answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import requests

from orders_api.adapters.rabbitmq.connections import node_urls

logger = logging.getLogger(__name__)

#: The management plugin's port when ``RABBITMQ_MANAGEMENT_URL`` does not say otherwise.
MANAGEMENT_PORT = 15672


class ManagementError(Exception):
    """The management API could not be reached or refused the request."""


@dataclass(frozen=True)
class ManagementNode:
    """One node's management API: its base URL, without credentials, and the credentials apart."""

    url: str
    username: str
    password: str


def management_nodes(rabbitmq_url: str, management_url: str | None = None) -> list[ManagementNode]:
    """The management API of each node, from ``management_url`` if given, else from ``rabbitmq_url``.

    Credentials written in ``management_url`` win; without them, those of ``rabbitmq_url``'s
    first node (pika's ``guest``/``guest`` if it names none) are used.
    """
    amqp_nodes = [pika.URLParameters(url) for url in node_urls(rabbitmq_url)]
    credentials = amqp_nodes[0].credentials
    username, password = str(credentials.username), str(credentials.password)
    if management_url is None:
        return [
            ManagementNode(f"http://{_host(node.host)}:{MANAGEMENT_PORT}", username, password)
            for node in amqp_nodes
        ]
    nodes = []
    for url in node_urls(management_url):
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        netloc = _host(netloc) + (f":{parts.port}" if parts.port else "")
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if parts.username is not None:
            nodes.append(ManagementNode(base, unquote(parts.username), unquote(parts.password or "")))
        else:
            nodes.append(ManagementNode(base, username, password))
    return nodes


def vhost_of(rabbitmq_url: str) -> str:
    """The vhost ``rabbitmq_url`` connects to (``/`` when it names none), as pika reads it."""
    return str(pika.URLParameters(node_urls(rabbitmq_url)[0]).virtual_host)


def _host(host: str) -> str:
    """``host`` as a URL's authority needs it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RabbitManagement:
    """Requests about one vhost to the management API of the first node that answers.

    Every request is bounded by ``timeout_s``; a node that cannot be reached costs one attempt
    before the next is tried. An HTTP error from a node that answered is final.
    """

    def __init__(self, nodes: list[ManagementNode], vhost: str, *, timeout_s: float) -> None:
        if not nodes:
            raise ValueError("no management API to talk to")
        self._nodes = nodes
        self.vhost = vhost
        self._vhost_path = quote(vhost, safe="")
        self._timeout_s = timeout_s
        self._session = requests.Session()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._session.close()

    def policy(self, name: str) -> dict[str, Any] | None:
        """The policy ``name`` of the vhost, or ``None`` if there is none."""
        return self._get_or_none(f"policies/{self._vhost_path}/{quote(name, safe='')}")

    def put_policy(self, name: str, body: dict[str, Any]) -> None:
        """Create or replace policy ``name``; RabbitMQ applies it to the matching queues."""
        self._request("PUT", f"policies/{self._vhost_path}/{quote(name, safe='')}", json=body)

    def queue(self, name: str) -> dict[str, Any] | None:
        """What the management API knows of queue ``name`` (arguments, policy, counts), or ``None``.

        Its counts come from statistics that lag up to a few seconds; its arguments do not.
        """
        return self._get_or_none(f"queues/{self._vhost_path}/{quote(name, safe='')}")

    def consumers(self) -> list[dict[str, Any]]:
        """Every consumer in the vhost: its queue, its tag, and whether it is the queue's active one.

        The ``active`` flag comes from statistics that lag up to a few seconds.
        """
        consumers: list[dict[str, Any]] = self._request("GET", f"consumers/{self._vhost_path}").json()
        return consumers

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        response = self._request("GET", path, missing_ok=True)
        if response.status_code == requests.codes.not_found:
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def _request(
        self, method: str, path: str, *, missing_ok: bool = False, json: dict[str, Any] | None = None
    ) -> requests.Response:
        unreachable: list[str] = []
        for node in self._nodes:
            try:
                response = self._session.request(
                    method,
                    f"{node.url}/api/{path}",
                    auth=(node.username, node.password),
                    timeout=self._timeout_s,
                    json=json,
                )
            except requests.RequestException as error:
                logger.debug("management API at %s unreachable", node.url, exc_info=True)
                unreachable.append(f"{node.url}: {error}")
                continue
            if response.status_code == requests.codes.not_found and missing_ok:
                return response
            if not response.ok:
                raise ManagementError(
                    f"{method} {path} on {node.url} answered {response.status_code}: {response.text[:200]}"
                )
            return response
        raise ManagementError("no management API answered: " + "; ".join(unreachable))
