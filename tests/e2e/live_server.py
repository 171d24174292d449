"""The real app on a real HTTP server in a thread of the test process, for tests that need a URL.

Lighter than :mod:`orders_testkit.processes` (no gunicorn, no workers), for tests that look at the
API's HTTP surface (its document, its docs page) rather than at placing orders end to end: the
app is the one ``create_app`` builds, on the run's own database and vhost, behind werkzeug's
threaded server on a free port of 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher
from orders_api.api.app import create_app, db
from orders_api.settings.shared import Settings

#: Seconds the server thread has to stop once asked to.
STOP_TIMEOUT_S = 10.0


@contextmanager
def live_api(settings: Settings) -> Iterator[str]:
    """Serve the app for ``settings`` until the block ends; yield its base URL.

    On the way out the server stops, and the app's broker connection and database pool close, so
    the test leaves no connection behind.
    """
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(STOP_TIMEOUT_S)
        server.server_close()
        publisher: ConfirmedPublisher = app.extensions["orders.publisher"]
        publisher.close()
        with app.app_context():
            db.engine.dispose()
