"""The service through pgbouncer in transaction mode (docs/scaling.md, "pgbouncer"): a pgbouncer started here in
front of the test PostgreSQL server, configured as docs/scaling.md says (``ignore_startup_parameters = options``,
the session settings on the database instead, ``?prepare_threshold=none`` in the service's URL), and concurrent
creates, reads and searches through a pool smaller than the threads, so that transactions change server
connections all the time. Skips, saying why, without pgbouncer or PostgreSQL."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from dui import migrations
from dui.app import create_app
from dui.db import make_engine
from dui.settings import InsiSettings
from tests.conftest import PG_URL
from tests.conftest import test_settings as settings_for
from tests.helpers import patient
from tests.replication import free_port

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
THREADS, ROUNDS = 6, 8


@pytest.fixture(scope="module")
def pooled_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (scripts/ensure-test-servers installs it: apt-get install pgbouncer)")
    if not PG_URL:
        pytest.skip("the pgbouncer test needs DUI_TEST_DATABASE_URL (a PostgreSQL server to pool)")
    admin = make_engine(PG_URL)
    name = f"dui_pgbouncer_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # what the engine's startup options set, which pgbouncer cannot pass on: on the database instead
        conn.execute(text(f'ALTER DATABASE "{name}" SET max_parallel_workers_per_gather = 0'))
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET statement_timeout = '20s'"))
    direct = admin.url.set(database=name)
    tmp = Path(tempfile.mkdtemp(prefix="dui-pgbouncer-"))
    process = None
    try:
        migrations.upgrade(direct.render_as_string(hide_password=False))
        port = free_port()
        (tmp / "users.txt").write_text(f'"{direct.username}" ""\n')
        (tmp / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{name} = host={direct.host or '127.0.0.1'} port={direct.port or 5432} dbname={name}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {tmp / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 200\n"
            "ignore_startup_parameters = options\n"
            f"logfile = {tmp / 'pgbouncer.log'}\n")
        command = [PGBOUNCER, str(tmp / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            account = pwd.getpwnam("postgres")
            for path in (tmp, *tmp.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            command = ["runuser", "-u", "postgres", "--", *command]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        pooled = direct.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        while True:
            try:
                probe = make_engine(pooled)
                with probe.connect() as conn:
                    conn.execute(text("SELECT 1"))
                probe.dispose()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = (tmp / "pgbouncer.log").read_text() if (tmp / "pgbouncer.log").exists() else ""
                    pytest.fail(f"pgbouncer did not start: {log[-500:]}")
                time.sleep(0.1)
        yield pooled + ("&" if "?" in pooled else "?") + "prepare_threshold=none"
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def app(pooled_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    application = create_app(settings_for(pooled_url, insi=InsiSettings(
        simulator_dir=str(tmp_path_factory.mktemp("insi")), timeout=3.0)))
    yield application
    application.extensions["dui"].dispose()


def test_concurrent_writes_reads_and_searches_through_pgbouncer_in_transaction_mode(app: Flask) -> None:
    failures: list[str] = []
    created: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def client(number: int) -> None:
        web = app.test_client()
        fhir = {"Content-Type": "application/fhir+json"}
        barrier.wait()
        for round_ in range(ROUNDS):
            family = f"Pool{number}x{round_}"
            made = web.post("/fhir/Patient", json=patient(family=family), headers=fhir)
            if made.status_code != 201:
                failures.append(f"create {made.status_code} {made.get_data(as_text=True)[:200]}")
                continue
            rid = made.get_json()["id"]
            with lock:
                created.append(rid)
            for path in (f"/fhir/Patient/{rid}", f"/fhir/Patient?family={family}", f"/fhir/Patient/{rid}/_history"):
                answer = web.get(path)
                if answer.status_code != 200:
                    failures.append(f"{path} {answer.status_code} {answer.get_data(as_text=True)[:200]}")
            found = web.get(f"/fhir/Patient?family={family}").get_json()
            if [e["resource"]["id"] for e in found.get("entry", [])] != [rid]:
                failures.append(f"search {family}: {found.get('total')}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(created) == THREADS * ROUNDS
    assert app.test_client().get("/fhir/Patient?_summary=count").get_json()["total"] == THREADS * ROUNDS
    engine = app.extensions["dui"].engine
    with engine.connect() as conn:
        # each request's audit entry: a create, 3 reads or searches and one more search per round, the count
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar_one() == THREADS * ROUNDS * 5 + 1
        # the settings the engine could not pass through pgbouncer hold, from the database's own
        assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar_one() == "0"
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "20s"

