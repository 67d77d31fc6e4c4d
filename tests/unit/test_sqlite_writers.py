"""SQLite's writers queue on a file lock of their own (``dui.db``): held from BEGIN IMMEDIATE until the connection
goes back to the pool, whatever ended the transaction."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from dui.db import make_engine, make_session_factory, unit_of_work


def _locked(path: Path) -> bool:
    """Whether another open file description holds the lock (as another process would find it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases what this probe took
    return False


def test_a_write_unit_holds_the_writers_lock_until_it_ends(tmp_path: Path) -> None:
    database = tmp_path / "dui.sqlite"
    engine = make_engine(f"sqlite:///{database}")
    sessions = make_session_factory(engine)
    lock = Path(f"{database}-writers.lock")
    try:
        with unit_of_work(sessions, write=True) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            assert _locked(lock)
        assert not _locked(lock)
        with pytest.raises(RuntimeError), unit_of_work(sessions, write=True) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            assert _locked(lock)
            raise RuntimeError("rolled back")
        assert not _locked(lock)  # released after a rollback too
        with unit_of_work(sessions, write=False) as session:  # readers never take it
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
            assert not _locked(lock)
    finally:
        engine.dispose()
    assert not _locked(lock)


def test_a_thread_that_writes_already_does_not_wait_for_itself(tmp_path: Path) -> None:
    database = tmp_path / "dui.sqlite"
    engine = make_engine(f"sqlite:///{database}")

    @event.listens_for(engine, "connect")
    def short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:  # after dui.db's 30 s
        dbapi_connection.execute("PRAGMA busy_timeout=200")

    sessions = make_session_factory(engine)
    try:
        with unit_of_work(sessions, write=True) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            # A second writing unit of this thread, on another connection: SQLite's own lock answers (busy, after its
            # timeout) instead of a wait for ever on the file lock this very thread holds.
            with pytest.raises(OperationalError, match="locked"), unit_of_work(sessions, write=True) as other:
                other.execute(text("INSERT INTO t VALUES (2)"))
        with unit_of_work(sessions, write=True) as session:  # and the lock is free again for the next writer
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        engine.dispose()
