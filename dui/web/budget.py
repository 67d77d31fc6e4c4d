"""The per-request budget (``DUI_REQUEST_BUDGET``): a FHIR request still running past it is stopped, answered 503
and rolled back, instead of holding a worker until gunicorn kills it (and every request it was serving).

gunicorn's gthread workers run requests in threads, where signals cannot reach. One watchdog thread per process
keeps the deadlines of the armed requests; at a deadline it raises ``BudgetExceeded`` in the request's thread
with ``PyThreadState_SetAsyncExc``. The exception lands at the next bytecode the thread runs, so C calls must be
bounded on their own: regular expressions run on RE2 with a capped cost (``dui.fhir.regex``), and PostgreSQL
statements under a statement timeout no longer than the budget (``Settings.statement_timeout_ms``).

``BudgetExceeded`` is a ``BaseException``: library code that catches ``Exception`` lets it through, and the
unit of work around the request rolls back on it. ``run`` turns it into ``RequestStopped`` (503, ``Retry-After``),
which the FHIR edge records in the audit trail like any other refusal.

It can never land after the request has left ``run``: the watchdog fires at most once per request, and a request
that disarms after its exception was fired but before it landed clears it (``PyThreadState_SetAsyncExc(id,
NULL)``) before leaving. Wherever it lands between arming and that point (inside the work, or inside the
disarming itself), it is caught by the handler of ``run``, which was entered before arming and disarms again.
Disarming takes no lock: an exception landing just after a lock was acquired would leave it held for ever (the
request's next disarm, the watchdog and every later request would wait on it). The request and the watchdog meet
through two flags instead: the request sets ``done`` then waits while ``firing``; the watchdog sets ``firing``
then fires only if not ``done``. Whichever order the interpreter runs them in, a request that has left ``run``
was either never fired at or has cleared what was. As for Ctrl-C, code interrupted between two bytecodes may be left
half-way: what the request opened (its transaction, its session) is discarded by the unit of work around it.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from dui.errors import RequestStopped

T = TypeVar("T")
RETRY_AFTER = "10"

_fire = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class BudgetExceeded(BaseException):
    """Raised in a request's thread by the watchdog when the request's budget is spent."""


class _Armed:
    __slots__ = ("deadline", "done", "fired", "firing", "thread")

    def __init__(self, thread: int, deadline: float) -> None:
        self.thread = thread
        self.deadline = deadline
        self.done = False  # set by the request when it disarms
        self.firing = False  # set by the watchdog around its check of ``done`` and its fire
        self.fired = False


class Watchdog:
    """The deadlines of the armed requests of this process, and the thread that enforces them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._armed: set[_Armed] = set()
        self._latest: dict[int, _Armed] = {}  # each thread's last entry: a thread's earlier one is done
        self._pid = 0
        self._wake_at = float("inf")  # when the watchdog wakes next, unless notified

    def arm(self, entry: _Armed) -> None:
        # The lock is safe here: nothing can be fired at this thread before its entry is in the set.
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (a gunicorn worker forks after import)
                self._pid = os.getpid()
                threading.Thread(target=self._watch, name="dui-budget-watchdog", daemon=True).start()
            # The thread's previous entry is done (a thread serves one request at a time): dropped now, so that the
            # set holds the requests in flight, not every request since the watchdog last woke.
            previous = self._latest.get(entry.thread)
            if previous is not None:
                self._armed.discard(previous)
            self._latest[entry.thread] = entry
            self._armed.add(entry)
            # Woken only for a deadline earlier than the one it waits for: under load, about once per budget, not
            # once per request (waking it costs a thread switch and the interpreter lock: 0.3 ms per request).
            if entry.deadline < self._wake_at:
                self._wake_at = entry.deadline
                self._cond.notify()

    @staticmethod
    def disarm(entry: _Armed) -> None:
        """No lock (see the module's docstring); the watchdog drops the entry from its set when it next wakes."""
        entry.done = True
        while entry.firing:  # the watchdog is between its check of ``done`` and its fire: let it finish
            time.sleep(0)
        if entry.fired:  # fired, and perhaps not landed yet: it must not land after the request has left
            _clear(entry.thread, None)

    def armed(self) -> int:
        with self._cond:
            return sum(1 for e in self._armed if not e.done)

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry in list(self._armed):
                    if entry.done:
                        self._armed.discard(entry)
                    elif entry.deadline <= now:
                        self._armed.discard(entry)
                        entry.firing = True
                        if not entry.done:
                            entry.fired = True
                            _fire(entry.thread, BudgetExceeded)
                        entry.firing = False
                self._wake_at = min((e.deadline for e in self._armed), default=float("inf"))
                self._cond.wait(None if self._wake_at == float("inf") else max(self._wake_at - now, 0.001))


WATCHDOG = Watchdog()


def run(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, stopped with ``RequestStopped`` (503) when it runs longer than ``seconds`` (0: no limit)."""
    if seconds <= 0:
        return fn(*args)
    entry = _Armed(threading.get_ident(), time.monotonic() + seconds)
    try:
        WATCHDOG.arm(entry)
        try:
            result = fn(*args)
        finally:
            WATCHDOG.disarm(entry)
    except BudgetExceeded:
        WATCHDOG.disarm(entry)  # again, in case the exception landed inside the first disarm
        raise _stopped(seconds) from None
    except OperationalError as exc:
        if type(exc.orig).__name__ != "QueryCanceled":
            raise
        raise RequestStopped(  # the statement timeout, bounded by the budget: the same refusal
            "A database statement of the request ran past its time limit and was stopped; nothing the request did "
            "was kept. Narrow it (fewer results, fewer _include or chained parameters) or retry later",
            code="timeout", headers={"Retry-After": RETRY_AFTER}) from None
    if entry.fired:
        # Fired, yet the work returned: the exception landed where Python swallows it (a finalizer, a weakref
        # callback run by the garbage collector reports it as "unraisable" and goes on), or it was cleared on the
        # way out. Past its budget all the same: stopped here, in the caller's unit of work, which rolls back.
        raise _stopped(seconds)
    return result


def _stopped(seconds: float) -> RequestStopped:
    return RequestStopped(
        f"The request was stopped after {seconds:g} s (DUI_REQUEST_BUDGET); nothing it did was kept. Narrow "
        "it before retrying: fewer search parameters, values, _include or results per page; a simpler "
        "FHIRPath Patch path; fewer entries per bundle", headers={"Retry-After": RETRY_AFTER})
