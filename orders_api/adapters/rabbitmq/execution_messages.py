"""The body of a message on a partition queue: the feed's report objects, as a JSON array, in feed order.

The ingestor publishes one message per partition and run of reports rather than one per report:
at thousands of reports a second, a message per report made the broker's per-message work
(routing, quorum log entry, confirm, delivery, ack) and pika's framing on both sides the larger
part of the pipeline's cost. Order is kept: the reports of one order all go to one partition,
in ``feed_seq`` order within a message, and a partition's messages are consumed in the order
they were confirmed.

A body holding one JSON object is one report: what the ingestor published before batching,
still taken so that messages queued across an upgrade are applied rather than dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


class MalformedMessageError(ValueError):
    """A message's body is neither a JSON array of reports nor a single report object."""


def encode_reports(reports: Sequence[Mapping[str, Any]]) -> bytes:
    """One message's body: ``reports`` as a compact JSON array, in the given order."""
    return json.dumps(reports, separators=(",", ":")).encode()


def decode_reports(body: bytes) -> list[object]:
    """The report objects of a message's body, in order; each still to be validated as a report.

    :raises MalformedMessageError: the body is not JSON, or neither an array nor an object.
    """
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedMessageError(f"not JSON: {error}") from None
    if isinstance(decoded, dict):
        return [decoded]
    if not isinstance(decoded, list):
        raise MalformedMessageError("neither a JSON array of reports nor a report object")
    return decoded
