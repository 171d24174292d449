"""The one module-level app, for gunicorn: ``gunicorn orders_api.wsgi:app``."""

from orders_api.entrypoints.app import create_app

app = create_app()
