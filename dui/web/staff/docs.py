"""``/api/openapi.json`` and ``/api/docs``: the OpenAPI document, and Swagger UI to browse it.

Swagger UI's files (version 5, which reads OpenAPI 3.1) come from the ``swagger-ui-py`` package and are served
from here: the page loads with no
network beyond this server (no CDN), under a Content-Security-Policy that allows this server's scripts only.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import orjson
from flask import Response, abort

from dui.web.staff.edge import bp
from dui.web.staff.openapi import document

ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png",
                    "favicon-16x16.png"})
TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "png": "image/png"}
PAGE = """<!DOCTYPE html>
<html lang="fr">
<head>
<meta charset="utf-8">
<title>DUI — API du personnel</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"""
INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(orjson.dumps(document()), content_type="application/json")


@bp.get("/docs")
def docs_page() -> Response:
    return Response(PAGE, content_type="text/html; charset=utf-8")


@bp.get("/docs/init.js")
def docs_init() -> Response:
    return Response(INIT, content_type="text/javascript; charset=utf-8")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    response = Response(_asset(name), content_type=TYPES[name.rsplit(".", 1)[1]])
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@cache
def _asset(name: str) -> bytes:
    return (files("swagger_ui") / "static" / name).read_bytes()
