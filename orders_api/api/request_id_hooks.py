"""The request id of each HTTP request: read or made on the way in, returned on the way out.

The id is bound for the whole request (:mod:`orders_api.request_ids`), so every log line of the
request carries it, and so does the placement message of the order it creates. It is returned in
the ``X-Request-ID`` header of every response, errors included: Flask runs ``after_request``
functions on the responses of error handlers too, the fixed ``500`` among them.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from orders_api import request_ids


def init_app(app: Flask) -> None:
    """Install the hooks on ``app``; the first ``before_request`` hook, so every later one has the id."""
    app.before_request_funcs.setdefault(None, []).insert(0, _bind_request_id)
    app.after_request(_return_request_id)
    app.teardown_request(_unbind_request_id)


def _bind_request_id() -> None:
    request_id = request_ids.sanitised(request.headers.get(request_ids.HEADER))
    g.request_id = request_id
    request_ids.set_current(request_id)


def _return_request_id(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[request_ids.HEADER] = request_id
    return response


def _unbind_request_id(_error: BaseException | None) -> None:
    # The thread goes on to serve other requests: none of them may inherit this id.
    request_ids.set_current(None)
