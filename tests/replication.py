"""Two local PostgreSQL clusters in streaming replication, for the read-replica tests (docs/scaling.md).

``running_pair`` initdb's a primary in a temporary folder on a free port (``wal_level=replica``), copies it with
``pg_basebackup -R`` into a hot standby on another free port, starts both, and always stops and removes them. The
servers run as the ``postgres`` account when the tests run as root (initdb refuses root), else as the current user.
Skips, saying why, where the PostgreSQL server binaries are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def server_bindir() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *args], check=check, capture_output=True, text=True, timeout=120)

    def ctl(self, action: str, *extra: str) -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", "-l",
                 str(self.datadir.parent / f"{self.datadir.name}.log"), action, *extra)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = self.run(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                        database, "-Atqc", statement)
        return done.stdout.strip()


@dataclass
class Pair:
    primary: Cluster
    standby: Cluster

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.primary.sql("SELECT pg_current_wal_lsn() - '0/0'")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self.standby.sql("SELECT pg_last_wal_replay_lsn() - '0/0'") or 0) >= int(target):
                return
            time.sleep(0.05)
        raise AssertionError("the standby did not catch up with the primary")


def _as_user(tmp: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("streaming replication tests run as root need a postgres account to run the servers (initdb "
                    "refuses root)")
    os.chown(tmp, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def running_pair() -> Iterator[Pair]:
    bindir = server_bindir()
    if bindir is None or not (bindir / "pg_basebackup").exists():
        pytest.skip("streaming replication tests need the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup; "
                    "Debian: postgresql-15)")
    tmp = Path(tempfile.mkdtemp(prefix="dui-replication-"))
    started: list[Cluster] = []
    try:
        as_user = _as_user(tmp)
        tmp.chmod(0o700)
        primary = Cluster(bindir, tmp / "primary", free_port(), as_user)
        primary.run(str(bindir / "initdb"), "-D", str(primary.datadir), "-A", "trust", "-U", "postgres", "--no-sync",
                    "-E", "UTF8", "--locale", "C")
        with (primary.datadir / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {primary.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{tmp}'\nwal_level = replica\nmax_wal_senders = 5\n"
                       "fsync = off\nshared_buffers = 32MB\nmax_connections = 60\n")
        primary.ctl("start")
        started.append(primary)
        standby = Cluster(bindir, tmp / "standby", free_port(), as_user)
        primary.run(str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                    "-D", str(standby.datadir), "-R", "-X", "stream", "--no-sync")
        with (standby.datadir / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {standby.port}\nhot_standby = on\n")
        standby.ctl("start")
        started.append(standby)
        yield Pair(primary, standby)
    finally:
        for cluster in reversed(started):
            cluster.run(str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-w", "-t", "30", "stop", "-m",
                        "immediate", check=False)
        shutil.rmtree(tmp, ignore_errors=True)
