"""POST /orders with a body cut short or badly framed, sent byte by byte to the real gunicorn.

Only a real gunicorn parses chunked transfer coding and reads a body of known length from a
socket the client may half-close, so these requests go over a raw socket, not the Flask test
client. Each one must get a 400 in the JSON error shape whose message names what is wrong with
the body, and the API must log no error or traceback for it: the fault is the client's.

The cases share one API (and its workers): a malformed request leaves nothing behind but the
400, so one start serves the whole table, as the hostile bodies of ``test_input_fuzzing`` share
one app.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import closing
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orders_api.settings.shared import Settings
from orders_testkit.processes import ProcessOptions, RunningService, running_service

pytestmark = pytest.mark.e2e

#: Seconds the API has to answer one request.
ANSWER_TIMEOUT_S = 10.0

#: A whole, valid order: the cases cut it short or frame it badly.
ORDER = b'{"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}'

#: What the message of each kind of 400 must say (one of them, where either is fair).
MALFORMED = ("framing is malformed",)
CUT_SHORT = ("cut short",)
EITHER = MALFORMED + CUT_SHORT

_HEAD = b"POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\n"


def chunked(body: bytes) -> bytes:
    """A request whose body is ``body`` as sent, under ``Transfer-Encoding: chunked``."""
    return _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body


def sized(content_length: int, body: bytes) -> bytes:
    """A request that announces ``content_length`` bytes and sends ``body``."""
    return _HEAD + b"Content-Length: %d\r\n\r\n" % content_length + body


_CHUNK = b"%x\r\n%s\r\n" % (len(ORDER), ORDER)

#: Requests whose framing is broken, each with what its 400's message must say.
BROKEN_FRAMING = [
    pytest.param(chunked(b"zz\r\n" + ORDER + b"\r\n0\r\n\r\n"), MALFORMED, id="chunk_size_not_hex"),
    pytest.param(
        chunked(b"%x;=x\r\n%s\r\n0\r\n\r\n" % (len(ORDER), ORDER)), MALFORMED, id="chunk_extension_nameless"
    ),
    pytest.param(
        chunked(b"%x\r\n%sXX0\r\n\r\n" % (len(ORDER), ORDER)), MALFORMED, id="chunk_data_without_crlf"
    ),
    pytest.param(chunked(_CHUNK + b"0\r\nnot a header\r\n\r\n"), MALFORMED, id="trailer_malformed"),
    pytest.param(chunked(_CHUNK), CUT_SHORT, id="no_last_chunk_then_eof"),
    # gunicorn 27 calls this a missing terminator; a cut-short body is as true.
    pytest.param(chunked(_CHUNK + b"0\r\n"), EITHER, id="last_chunk_without_final_crlf_then_eof"),
    pytest.param(sized(len(ORDER) + 10, ORDER), CUT_SHORT, id="whole_order_short_of_content_length"),
    pytest.param(sized(len(ORDER), ORDER[:20]), CUT_SHORT, id="half_an_order_then_eof"),
]


@pytest.fixture(scope="module")
def api(
    database_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """One API, small, for every case of this module."""
    settings = Settings(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        placement_queue=f"order-placement.request-framing.{uuid.uuid4().hex[:6]}",
    )
    options = ProcessOptions(web_workers=1, web_threads=4, worker_processes=1, worker_threads=2)
    with running_service(settings, tmp_path_factory.mktemp("request-framing"), options) as running:
        yield running


def send_then_half_close(base_url: str, request: bytes) -> tuple[HTTPResponse, bytes]:
    """Send ``request`` raw, close our side as a client with nothing more to send, read the answer."""
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    with closing(
        socket.create_connection((address.hostname, address.port), timeout=ANSWER_TIMEOUT_S)
    ) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = HTTPResponse(sock)
        response.begin()
        return response, response.read()


def log_since(log: Path, offset: int) -> str:
    with log.open("rb") as file:
        file.seek(offset)
        return file.read().decode("utf-8", errors="replace")


@pytest.mark.parametrize(("request_bytes", "said"), BROKEN_FRAMING)
def test_a_body_cut_short_or_badly_framed_is_a_json_400_and_logs_no_error(
    api: RunningService, request_bytes: bytes, said: tuple[str, ...]
) -> None:
    log_offset = api.api_log.stat().st_size

    response, answer = send_then_half_close(api.base_url, request_bytes)

    logged = log_since(api.api_log, log_offset)
    assert response.status == 400, (response.status, logged)
    assert response.getheader("Content-Type") == "application/json"
    body = json.loads(answer)
    assert (body["code"], body["status"]) == (400, "Bad Request"), body
    assert any(fragment in body["message"] for fragment in said), body
    assert set(body) <= {"code", "status", "message", "errors"}, body
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged
