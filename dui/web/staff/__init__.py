"""The staff API (``/api``): task-shaped JSON for the EHPAD's integrated client (docs/staff-api.md).

    from dui.web.staff import (  # noqa: F401  (each declares its endpoints)
        admissions, alerts, care, docs, evaluations, indicators, medications, residents)
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from dui.web.staff import admissions, alerts, care, docs, evaluations, indicators, medications, residents  # noqa: F401  (each declares its endpoints)
    from dui.web.staff.edge import bp

    app.register_blueprint(bp)
