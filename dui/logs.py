"""Logging: one configuration, the request id on every line, and no health data.

What may appear in a log line: event names, resource types and ids, HTTP methods, status codes,
durations, the actor id and the request id. What may not: names, birth dates, INS/NIR values,
search values, bodies, query strings. Hence the access log records the path without its query
string, and database errors are logged without their parameters (``hide_parameters`` on the
engine).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields given with ``extra={...}`` are kept."""

    RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "request_id", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in JsonFormatter.RESERVED}
        line = super().format(record)
        return line + ("" if not extras else " " + " ".join(f"{k}={v}" for k, v in extras.items()))


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dui", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._dui = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if as_json else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate their start-up at INFO; their warnings still show.
    for name in ("alembic", "gunicorn.error"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
