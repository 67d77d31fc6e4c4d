"""The watchdog of the per-request budget: it stops Python work past the deadline, is not swallowed by
``except Exception``, and never lands after ``run`` has returned, however close to the deadline the work ends."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

import pytest

from dui.errors import RequestStopped
from dui.web import budget


def spin(seconds: float) -> int:
    """Pure-Python work for ``seconds``."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def test_work_past_the_budget_is_stopped_even_through_except_exception() -> None:
    def stubborn() -> None:
        for _ in range(100):
            try:  # noqa: SIM105 (written as a library would)
                spin(0.05)
            except Exception:  # a library's handler: must not swallow the stop
                pass

    started = time.perf_counter()
    with pytest.raises(RequestStopped) as stopped:
        budget.run(0.2, stubborn)
    assert 0.2 <= time.perf_counter() - started < 0.5
    assert stopped.value.status == 503 and stopped.value.code == "too-costly"
    assert stopped.value.headers["Retry-After"] == budget.RETRY_AFTER
    assert budget.WATCHDOG.armed() == 0


def test_work_within_the_budget_returns_its_value() -> None:
    assert budget.run(5, lambda x: x * 2, 21) == 42
    assert budget.run(0, lambda: "no budget") == "no budget"
    assert budget.WATCHDOG.armed() == 0


def test_the_stop_never_lands_after_run_has_returned() -> None:
    """Work ending around its deadline, 1,000 times, threads switching every microsecond: each call ends either
    with its value or with RequestStopped, and the Python work that follows (outside ``run``) is never
    interrupted."""
    outcomes: Counter[str] = Counter()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the watchdog gets the interpreter at any moment, not every 5 ms
    try:
        for i in range(1000):
            try:
                try:
                    # 90 % to 110 % of the budget (the race), and up to 3 times it (a stop however late the
                    # watchdog wakes on a loaded machine)
                    budget.run(0.002, spin, 0.002 * (0.9, 1.0, 1.1, 2.0, 3.0)[i % 5])
                    outcomes["done"] += 1
                except RequestStopped:
                    outcomes["stopped"] += 1
                spin(0.001)  # where a stray stop would land
            except budget.BudgetExceeded:
                outcomes["stray"] += 1
    finally:
        sys.setswitchinterval(interval)
    watchdog = [t.is_alive() for t in threading.enumerate() if t.name == "dui-budget-watchdog"]
    assert outcomes["done"] and outcomes["stopped"] and not outcomes["stray"], (outcomes, f"watchdog: {watchdog}")
    assert budget.WATCHDOG.armed() == 0


def test_threads_are_stopped_each_on_its_own() -> None:
    results: dict[str, str] = {}

    def request(name: str, seconds: float) -> None:
        try:
            budget.run(0.3, spin, seconds)
            results[name] = "done"
        except RequestStopped:
            results[name] = "stopped"

    threads = [threading.Thread(target=request, args=(f"short{i}", 0.05)) for i in range(4)]
    threads += [threading.Thread(target=request, args=(f"long{i}", 5)) for i in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started < 2
    assert results == {**{f"short{i}": "done" for i in range(4)}, **{f"long{i}": "stopped" for i in range(4)}}


def test_disarming_takes_no_lock() -> None:
    """A stop landing just after a lock was acquired would leave it held for ever: disarming must not need the
    watchdog's lock (here held by another thread for the whole call)."""
    entry = budget._Armed(threading.get_ident(), time.monotonic() + 60)
    budget.WATCHDOG.arm(entry)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.WATCHDOG._cond:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    returned = threading.Event()
    disarming = threading.Thread(target=lambda: (budget.WATCHDOG.disarm(entry), returned.set()))
    disarming.start()
    disarming.join(2)
    release.set()
    holder.join(5)
    assert returned.is_set(), "disarm waited for the watchdog's lock"
    assert budget.WATCHDOG.armed() == 0


def test_a_stop_swallowed_by_a_finalizer_still_stops_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exception lands at whatever bytecode the thread runs next: inside a finalizer (``__del__``, a weakref
    callback of the garbage collector), Python reports it as unraisable and goes on. The request must not go on
    as if it had its budget: ``run`` stops it when the work returns."""
    swallowed: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: swallowed.append(info.exc_type))

    class Slow:
        def __del__(self) -> None:
            spin(0.3)  # past the budget, inside a finalizer

    def work() -> str:
        Slow()  # collected at once: its finalizer runs here, the budget is spent during it
        return "finished"

    with pytest.raises(RequestStopped):
        budget.run(0.1, work)
    assert swallowed == [budget.BudgetExceeded]  # it did land in the finalizer, and was swallowed there
    assert budget.WATCHDOG.armed() == 0
