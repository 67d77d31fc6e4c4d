"""The time source. Use cases take a clock argument rather than calling ``datetime.now`` themselves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond (the precision of ``meta.lastUpdated``)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)
