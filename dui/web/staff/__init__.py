"""The staff API (``/api``): task-shaped JSON for the EHPAD's integrated client (docs/staff-api.md).

``edge`` serves every endpoint the same way; ``residents``, ``care``, ``alerts``, ``evaluations`` and ``indicators``
declare them; ``openapi`` and ``docs`` describe them. The use cases themselves are in ``dui.staff``, free of Flask.
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from dui.web.staff import (  # noqa: F401  (each declares its endpoints)
        alerts,
        care,
        docs,
        evaluations,
        indicators,
        residents,
    )
    from dui.web.staff.edge import bp

    app.register_blueprint(bp)
