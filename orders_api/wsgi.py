"""The one module-level app, for gunicorn: ``gunicorn orders_api.wsgi:app``."""

import logging

from orders_api.entrypoints.app import create_app

logging.basicConfig(
    level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
)

app = create_app()
