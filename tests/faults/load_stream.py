"""A steady stream of ``POST /orders`` from a process of its own, recording every answer as one JSON line.

``python -m tests.faults.load_stream --base-url http://127.0.0.1:PORT --rate 25 --duration 16
--out responses.jsonl`` sends request ``i`` at ``start + i / rate`` (open loop: a slow answer
does not slow the stream down, up to ``--clients`` requests in flight), stops after
``--duration`` seconds or ``--max-requests`` requests, whichever comes first, or earlier once
the ``--stop-file`` exists and the Unix time written in it has passed (the suite writes it when a
fault ends, so that the stream outlasts faults of any length by the same margin), and gives each
request ``--timeout`` seconds. A separate process, so that the faults the suite injects into the
servers and the service never stall or share a GIL with the client that observes them.

Each line: ``{"index", "sent_at" (Unix time), "latency_s", "status" (null if no answer),
"order_id" (for a 201), "error" (the exception's name when there was no answer)}``. A request
that got no ``201`` learns no order id, so each request's order carries its index: its
``quantity`` is ``1 + index`` (:func:`request_index` reads it back), which lets the ledger find
the order of a ``500`` or of a request never answered, if one was committed anyway.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests

#: Real ISINs: the schema checks their shape only.
INSTRUMENTS = ("US0378331005", "US5949181045", "DE0007164600", "GB0002634946", "NL0010273215")


def order(index: int) -> dict[str, Any]:
    """The ``index``-th order of the stream: market and limit, buy and sell, its quantity unique."""
    body: dict[str, Any] = {
        "type": "limit" if index % 2 else "market",
        "side": "sell" if index % 4 >= 2 else "buy",
        "instrument": INSTRUMENTS[index % len(INSTRUMENTS)],
        "quantity": 1 + index,
    }
    if body["type"] == "limit":
        body["limit_price"] = f"{100 + index % 50}.{index % 100:02d}"
    return body


def request_index(quantity: int) -> int:
    """The index of the request that sent an order of this ``quantity``: :func:`order` inverted."""
    return quantity - 1


class _StopFile:
    """The stream's end, once the suite names it: a Unix time in a file that may not exist yet."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stop_at: float | None = None

    def passed(self) -> bool:
        if self._path is None:
            return False
        if self._stop_at is None:
            try:
                self._stop_at = float(self._path.read_text(encoding="ascii"))
            except (FileNotFoundError, ValueError):
                return False  # not written yet (the suite writes it whole, by rename)
        return time.time() >= self._stop_at


class _Recorder:
    """Appends one JSON line per answer, whole lines only, flushed at once so a reader sees progress."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def record(self, line: dict[str, Any]) -> None:
        text = json.dumps(line) + "\n"
        with self._lock:
            self._out.write(text)
            self._out.flush()


def _post(
    session_of: threading.local, base_url: str, index: int, timeout_s: float, recorder: _Recorder
) -> None:
    session: requests.Session | None = getattr(session_of, "session", None)
    if session is None:
        session = session_of.session = requests.Session()
    sent_at = time.time()
    started = time.monotonic()
    line: dict[str, Any] = {
        "index": index,
        "sent_at": sent_at,
        "status": None,
        "order_id": None,
        "error": None,
    }
    try:
        response = session.post(f"{base_url}/orders", json=order(index), timeout=timeout_s)
        line["status"] = response.status_code
        if response.status_code == 201:
            line["order_id"] = response.json()["id"]
    except (requests.RequestException, ValueError, KeyError) as error:
        line["error"] = type(error).__name__
    line["latency_s"] = round(time.monotonic() - started, 4)
    recorder.record(line)


def stream(
    base_url: str,
    rate: float,
    duration_s: float,
    max_requests: int,
    timeout_s: float,
    clients: int,
    out: Path,
    stop_file: Path | None = None,
) -> int:
    """Send the stream and record it in ``out``; return how many requests were sent."""
    total = min(max_requests, int(rate * duration_s))
    stop = _StopFile(stop_file)
    session_of = threading.local()
    sent = 0
    with out.open("w", encoding="utf-8") as file, ThreadPoolExecutor(max_workers=clients) as pool:
        recorder = _Recorder(file)
        start = time.monotonic()
        for index in range(total):
            pause = start + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if stop.passed():
                break
            pool.submit(_post, session_of, base_url, index, timeout_s, recorder)
            sent += 1
    return sent


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the API, on 127.0.0.1")
    parser.add_argument("--rate", type=float, default=25.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=16.0, help="seconds of sending")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one request may take")
    parser.add_argument("--clients", type=int, default=64, help="most requests in flight at once")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON lines go")
    parser.add_argument(
        "--stop-file", type=Path, help="once it exists, stop sending at the Unix time written in it"
    )
    args = parser.parse_args(argv)
    if urlsplit(args.base_url).hostname != "127.0.0.1":
        parser.error("the stream only ever targets 127.0.0.1")
    stream(
        args.base_url,
        args.rate,
        args.duration,
        args.max_requests,
        args.timeout,
        args.clients,
        args.out,
        args.stop_file,
    )


if __name__ == "__main__":
    main()
