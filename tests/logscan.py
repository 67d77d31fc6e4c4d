"""The log scan of the whole test session: every log record goes to one file, which the last test
(tests/zzz/test_log_scan.py) searches for the identifying values the tests use.

``SessionLogHandler`` is installed on the root logger by tests/conftest.py for the whole session. It writes
each record whole (message, extra fields, traceback) on one line, without escaping non-ASCII text, so that a
name such as Hélène is found as written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from dui.logs import JsonFormatter

SESSION_LOG = Path(tempfile.mkdtemp(prefix="dui-test-logs-")) / "session.log"


class SessionLogHandler(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(logging.NOTSET)
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extras = {k: v for k, v in vars(record).items() if k not in JsonFormatter.RESERVED}
            parts = [record.levelname, record.name, record.getMessage(), str(extras) if extras else ""]
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            if record.stack_info:
                parts.append(record.stack_info)
            self._file.write(" ".join(parts).replace("\n", " | ") + "\n")
            self._file.flush()
            self.records += 1
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._file.close()
        super().close()


def install() -> SessionLogHandler:
    handler = SessionLogHandler(SESSION_LOG)
    logging.getLogger().addHandler(handler)
    return handler


def uninstall(handler: SessionLogHandler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
    shutil.rmtree(SESSION_LOG.parent, ignore_errors=True)
