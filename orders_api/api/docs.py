"""``GET /openapi.json`` and its interactive page ``GET /docs``, which work with no internet.

Swagger UI's files come from the ``swagger-ui-bundle`` package (Swagger UI 4.15.5) and are
served by the app itself under ``/docs/assets/``: the page links nothing outside the service,
so it works where the cluster has no way out, and no third party learns who reads the docs.
Only the files the page uses are served; the package also ships a demo page that points at an
outside document. The online validator badge, Swagger UI's one call home, is switched off.
"""

from __future__ import annotations

from typing import Final

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    render_template_string,
    send_from_directory,
)
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound

from orders_api.api import openapi

#: The files of the Swagger UI distribution that the page loads.
ASSETS: Final = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)

blueprint = Blueprint("openapi", __name__)

# BaseLayout without the standalone preset: no top bar inviting readers to load other documents.
_PAGE: Final = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Orders API</title>
  <link rel="stylesheet" href="{{ url_for('openapi.asset', name='swagger-ui.css') }}">
  <link rel="icon" type="image/png" sizes="32x32"
        href="{{ url_for('openapi.asset', name='favicon-32x32.png') }}">
  <link rel="icon" type="image/png" sizes="16x16"
        href="{{ url_for('openapi.asset', name='favicon-16x16.png') }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('openapi.asset', name='swagger-ui-bundle.js') }}"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: {{ url_for('openapi.document') | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


def init_app(app: Flask) -> None:
    """Serve ``app``'s OpenAPI document and the page that renders it."""
    openapi.init_app(app)
    app.register_blueprint(blueprint)


@blueprint.get("/openapi.json")
def document() -> Response:
    """The OpenAPI document of every route the API serves."""
    return jsonify(openapi.api_document(current_app).as_dict())


@blueprint.get("/docs")
def docs() -> str:
    """Swagger UI, rendering ``/openapi.json``; every file it loads is served by this app."""
    return render_template_string(_PAGE)


@blueprint.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    """One of Swagger UI's files, from the installed ``swagger-ui-bundle`` package."""
    if name not in ASSETS:
        raise NotFound(f"No documentation asset {name!r}.")
    return send_from_directory(str(swagger_ui_path), name)
