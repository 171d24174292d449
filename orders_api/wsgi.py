"""The one module-level app, for gunicorn: ``gunicorn orders_api.wsgi:app``.

gunicorn has configured logging before it loads this module; the operator commands
(``flask --app orders_api.wsgi ...``) have not, so they get the same JSON lines here.
"""

from orders_api.entrypoints.app import create_app
from orders_api.logging_setup import ensure_logging

ensure_logging()

app = create_app()
