"""Chain heads kept outside the database: what a truncated or re-chained trail can no longer match.

Each seal that chains entries writes its head (``position``, ``hash``, ``key_id``, ``time``, ``sealed``: the
entries it chained) as one JSON line, appended to ``DUI_AUDIT_HEADS_FILE`` (opened with ``O_APPEND``, written in
one ``write``, fsync'd), and logs it (``dui.audit``, event ``audit head``). ``dui audit verify --heads FILE``
checks every head of such a file, or of the service's JSON log, against the chain.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("dui.audit")
LOG_EVENT = "audit head"


class HeadsError(ValueError):
    """A heads file that cannot be read or holds something that is not a head."""


@dataclass(frozen=True)
class Head:
    position: int
    hash: str
    key_id: str | None
    time: str
    sealed: int
    line: int = 0  # where it was read from (1-based), for messages

    def json(self) -> dict[str, Any]:
        return {"position": self.position, "hash": self.hash, "key_id": self.key_id, "time": self.time,
                "sealed": self.sealed}


def make(position: int, digest: str, key_id: str | None, now: datetime, sealed: int) -> Head:
    return Head(position, digest, key_id, now.isoformat(timespec="seconds"), sealed)


def publish(head: Head, path: str | None) -> None:
    """Log the head and, when a heads file is configured, append it there (``OSError`` if that fails)."""
    logger.info(LOG_EVENT, extra={"position": head.position, "hash": head.hash, "key_id": head.key_id,
                                  "sealed": head.sealed, "sealed_at": head.time})
    if path:
        append(path, head)


def append(path: str | Path, head: Head) -> None:
    """One line, appended with ``O_APPEND`` in a single write, then fsync'd (and the folder, when created)."""
    target = Path(path)
    created = not target.exists()
    if created:
        target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(head.json(), separators=(",", ":")) + "\n").encode("ascii")
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def read(path: str | Path) -> list[Head]:
    """The heads of a heads file, or of a JSON log (lines of other events are skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadsError(f"cannot read the heads file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return list(parse(text.splitlines(), str(path)))


def parse(lines: Iterable[str], source: str) -> Iterable[Head]:
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            raise HeadsError(f"{source} line {number} is not JSON: not a heads file") from None
        if not isinstance(item, dict):
            raise HeadsError(f"{source} line {number} is not a head")
        if "event" in item:  # a line of the service's JSON log
            if item.get("event") != LOG_EVENT:
                continue
            item = {**item, "time": item.get("sealed_at")}
        try:
            position, digest = item["position"], item["hash"]
            if not isinstance(position, int) or position < 1 or not isinstance(digest, str) or len(digest) != 64:
                raise ValueError
            key_id = item.get("key_id")
            yield Head(position, digest, str(key_id) if key_id else None, str(item.get("time") or "-"),
                       int(item.get("sealed") or 0), number)
        except (KeyError, ValueError, TypeError):
            raise HeadsError(f"{source} line {number} is not a head (position, hash)") from None
