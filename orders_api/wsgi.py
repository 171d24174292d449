"""The one module-level app, for gunicorn: ``gunicorn orders_api.wsgi:app``.

gunicorn has configured logging before it loads this module; the operator commands
(``flask --app orders_api.wsgi ...``) have not, so they get the same JSON lines here. Those
commands (the reconciliation sweep among them) start here, so their settings are read and checked
here (:func:`orders_api.settings.base.load`); gunicorn has checked the API's in its master.
"""

from orders_api.api.app import create_app
from orders_api.logging_setup import ensure_logging
from orders_api.settings.base import load
from orders_api.settings.shared import Settings

settings = load(Settings)
ensure_logging(settings)
app = create_app(settings)
