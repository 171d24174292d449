"""The request body, read whole, so that a body cut short or badly framed is the client's 400.

Two gaps between gunicorn and werkzeug meet here. gunicorn reports a malformed chunked body (a
bad chunk size or extension, a missing CRLF, a bad trailer) by raising its ``ParseException``
from ``wsgi.input``, and werkzeug turns only an ``OSError`` from the stream into a 400: the
rest would reach the catch-all handler as a 500. And gunicorn declares its input terminated, so
werkzeug takes a body that ends before its ``Content-Length`` for a whole one: a prefix that
happens to be a valid order would be placed. Both can only be seen where the body is read.
"""

from __future__ import annotations

from flask import request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected

#: Characters of the server's account of a framing error passed on to the client, at most.
MAX_DETAIL_CHARS = 120

_CUT_SHORT = "The body was cut short: the connection ended before its Content-Length or its last chunk."


def read_body() -> bytes:
    """The whole body of the current request, cached for ``request.get_json``.

    :raises BadRequest: the body was cut short, or its chunked framing is malformed.
    """
    try:
        data = request.get_data(cache=True)
    except ParseException as error:
        detail = str(error)[:MAX_DETAIL_CHARS]
        raise BadRequest(f"The body's framing is malformed: {detail}") from None
    except ClientDisconnected:
        # werkzeug's own 400 for an OSError from the stream (gunicorn's NoMoreData), reworded.
        raise BadRequest(_CUT_SHORT) from None
    if request.content_length is not None and len(data) < request.content_length:
        raise BadRequest(_CUT_SHORT)
    return data
