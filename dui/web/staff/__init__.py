"""The staff API (``/api``): task-shaped JSON for the EHPAD's integrated client (docs/staff-api.md).

``edge`` serves every endpoint the same way; ``residents``, ``care``, ``medications``, ``admissions``,
``evaluations``, ``indicators``, ``alerts``, ``transfers`` and ``documents`` declare them; ``openapi`` and ``docs``
describe them. The use cases themselves are in ``dui.staff``, free of Flask.
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    # each module declares its endpoints as it is imported
    from dui.web.staff import (  # noqa: F401
        admissions,
        alerts,
        care,
        docs,
        documents,
        evaluations,
        indicators,
        medications,
        residents,
        transfers,
    )
    from dui.web.staff.edge import bp

    app.register_blueprint(bp)
