"""The PostgreSQL site of deploy/README.md, built for real: the roles of deploy/postgresql/roles.sql in a database of
their own, the migrations run as the owner, deploy/postgresql/grants.sql, then the service's work as its role (the
demo load, FHIR reads, searches and a create through the app, the audit seal and verify), what that role may not do
to the audit trail, and the restore drill: deploy/backup.sh, deploy/restore.sh into a new database, `dui audit
verify` and `dui keys status` there, and every resident read back as it was.

PostgreSQL only (``DUI_TEST_DATABASE_URL``, a superuser: it creates roles and databases); skipped otherwise, failed
when ``DUI_REQUIRE_POSTGRESQL=1``.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dui.app import create_app
from dui.db import make_engine
from dui.settings import AuditSettings
from tests import conftest
from tests.conftest import PG_URL, REQUIRE_PG, TEST_AUDIT_KEY_FILE, TEST_MASTER_KEY_FILE
from tests.helpers import FhirClient, observation

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DUI = str(Path(sys.executable).with_name("dui"))


@dataclass
class Site:
    database: str
    owner: str
    service: str
    owner_url: str
    service_url: str
    heads: Path
    work: Path
    restored: list[str]

    def url(self, database: str, role: str) -> str:
        assert PG_URL
        password = self.passwords[role]
        return make_url(PG_URL).set(username=role, password=password, database=database).render_as_string(
            hide_password=False)

    passwords: dict[str, str]


def libpq_env(url: str | None = None) -> dict[str, str]:
    """PG* variables for the command-line tools (pg_dump, psql...): the test database's superuser by default."""
    parsed = make_url(url or PG_URL or "")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DUI_"))}
    env.update({"PGHOST": parsed.host or "127.0.0.1", "PGPORT": str(parsed.port or 5432),
                "PGUSER": parsed.username or "postgres", "PGDATABASE": parsed.database or "postgres"})
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return env


def dui_env(site: Site, url: str) -> dict[str, str]:
    """The service's environment for a `dui` command: this test session's master and audit keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DUI_"))}
    env.update({"DUI_DATABASE_URL": url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
                "DUI_AUDIT_KEY_FILE": str(TEST_AUDIT_KEY_FILE), "DUI_AUDIT_HEADS_FILE": str(site.heads),
                "DUI_INSI_SIMULATOR_DIR": str(site.work / "insi"), "DUI_LOG_LEVEL": "WARNING"})
    return env


def run(command: list[str], env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def dui(site: Site, url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([DUI, *args], dui_env(site, url), site.work, check)


def psql(sql_file: Path, env: dict[str, str], cwd: Path, *variables: str, renames: dict[str, str]) -> None:
    """A deploy/postgresql file through psql, with this test's role names for the documented ones."""
    script = sql_file.read_text()
    for documented, actual in renames.items():
        script = script.replace(documented, actual)
    copy = cwd / sql_file.name
    copy.write_text(script)
    run(["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", *variables, "-f", str(copy)], env, cwd)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """roles.sql run as the superuser (with role and database names of this test), `dui db upgrade` as the owner,
    grants.sql as the owner, `dui demo load --residents 5` as the service."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("DUI_REQUIRE_POSTGRESQL=1 but DUI_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need DUI_TEST_DATABASE_URL (see README, 'Tests')")
    suffix = uuid.uuid4().hex[:8]
    owner, service, database = f"dui_owner_{suffix}", f"dui_service_{suffix}", f"dui_site_{suffix}"
    passwords = {owner: secrets.token_hex(16), service: secrets.token_hex(16)}
    work = tmp_path_factory.mktemp("site")
    site = Site(database, owner, service, "", "", work / "audit-heads.jsonl", work, [], passwords)
    site.owner_url, site.service_url = site.url(database, owner), site.url(database, service)
    renames = {"dui_owner": owner, "dui_service": service}
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        psql(DEPLOY / "postgresql" / "roles.sql", libpq_env(), work, "-v", f"owner_password={passwords[owner]}",
             "-v", f"service_password={passwords[service]}", "-v", f"database={database}", renames=renames)
        upgraded = dui(site, site.owner_url, "db", "upgrade")
        assert "database at revision" in upgraded.stdout
        psql(DEPLOY / "postgresql" / "grants.sql", libpq_env(site.owner_url), work, renames=renames)
        loaded = dui(site, site.service_url, "demo", "load", "--residents", "5")
        assert "demo data: 5 residents" in loaded.stdout, loaded.stdout
        yield site
    finally:
        with admin.connect() as conn:
            for name in (database, *site.restored):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in (service, owner):
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def app_on(site: Site, url: str) -> Flask:
    return create_app(conftest.test_settings(url, audit=AuditSettings(key_file=str(TEST_AUDIT_KEY_FILE),
                                                             heads_file=str(site.heads))))


def residents(client: FhirClient) -> dict[str, Any]:
    """Every Patient by id, each read on its own (GET Patient/{id}), with its body."""
    bundle = client.search("Patient?_count=1000&_elements=id")
    found = {}
    for entry in bundle.get("entry", []):
        pid = entry["resource"]["id"]
        response = client.get(f"Patient/{pid}")
        assert response.status_code == 200, response.get_data(as_text=True)
        found[pid] = response.get_json()
    return found


def seal(site: Site, url: str) -> None:
    """`dui audit seal` until nothing is left unsealed (a seal takes only what every running transaction of the
    server has seen committed: another test run may hold it back a moment), each seal and its check run as the
    service's role, in this process, on an app of the service's keys and heads file. What the drill checks runs as
    processes: backup.sh, restore.sh, and `dui audit verify` and `dui keys status` on the restored copy; a `dui`
    process for every seal and every check cost about 2 s each (its imports and its app)."""
    app = app_on(site, url)
    runner = app.test_cli_runner()
    deadline = time.monotonic() + 60  # by time, not by tries: 60 quick tries passed within another shard's transaction
    try:
        while True:
            sealed = runner.invoke(args=["audit", "seal"])
            assert sealed.exit_code == 0, sealed.output
            verified = runner.invoke(args=["audit", "verify", "--grace", "0"])
            assert verified.exit_code == 0, verified.output
            if " 0 not sealed yet" in verified.stdout:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        app.extensions["dui"].dispose()
    pytest.fail(f"entries still unsealed: {verified.stdout}")


def test_the_roles_are_no_superusers(site: Site) -> None:
    engine = make_engine(site.owner_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                                     "rolbypassrls FROM pg_roles WHERE rolname IN (:o, :s)"),
                                {"o": site.owner, "s": site.service}).all()
            owner_of_tables = conn.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = "
                                                "'public'")).scalars().all()
    finally:
        engine.dispose()
    assert len(rows) == 2 and not any(any(row[1:]) for row in rows), rows
    assert owner_of_tables == [site.owner]


def test_the_service_role_runs_the_service(site: Site) -> None:
    app = app_on(site, site.service_url)
    try:
        client = FhirClient(app.test_client())
        found = residents(client)
        assert len(found) == 5
        pid = sorted(found)[0]
        created = client.create(observation(f"Patient/{pid}"))
        assert client.get(f"Observation/{created['id']}").status_code == 200
        search = client.search(f"Observation?subject=Patient/{pid}&code=http://loinc.org|29463-7&_count=100")
        assert created["id"] in [e["resource"]["id"] for e in search["entry"]]
        assert client.get(f"Patient/{pid}/$everything?_count=50").status_code == 200
        assert app.test_client().get("/readyz").status_code == 200  # reads alembic_version
    finally:
        app.extensions["dui"].dispose()
    seal(site, site.service_url)
    verified = dui(site, site.service_url, "audit", "verify")
    chained = int(re.search(r"(\d+) entries chained", verified.stdout).group(1))  # type: ignore[union-attr]
    assert chained > 5, verified.stdout
    assert dui(site, site.service_url, "keys", "status").returncode == 0


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET actor_id = 'someone-else'",
    "UPDATE audit_event_patient SET patient_id = 'another'",
    "DELETE FROM audit_event",
    "DELETE FROM audit_event_patient",
    "TRUNCATE audit_event CASCADE",
    "UPDATE alembic_version SET version_num = '0001'",
    "CREATE TABLE mine (id int)",
    "ALTER TABLE audit_event DISABLE TRIGGER ALL",
    "SET session_replication_role = replica",
])
def test_what_the_service_role_may_not_do(site: Site, statement: str) -> None:
    """Refused by the privileges themselves ("permission denied", "must be owner"), before any trigger runs."""
    engine = make_engine(site.service_url)
    try:
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"), engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_the_restore_drill(site: Site, tmp_path: Path) -> None:
    """Back up with deploy/backup.sh, restore with deploy/restore.sh into a new database, then `dui audit verify`,
    `dui keys status` and every resident read there, each the same as in the original."""
    app = app_on(site, site.service_url)
    try:
        before = residents(FhirClient(app.test_client()))
    finally:
        app.extensions["dui"].dispose()
    assert len(before) == 5
    seal(site, site.service_url)

    backups = tmp_path / "backups"
    dumped = run(["bash", str(DEPLOY / "backup.sh"), "--database", site.database, "--dir", str(backups),
                  "--keep", "14", "--heads", str(site.heads)], libpq_env(), tmp_path)
    dump = Path(dumped.stdout.strip().splitlines()[-1])
    assert dump.parent == backups and dump.name.startswith(f"{site.database}-") and dump.suffix == ".dump"
    assert dump.stat().st_mode & 0o077 == 0 and Path(f"{dump}.sha256").exists()
    heads_then = dump.with_suffix(".heads.jsonl")
    assert heads_then.read_text() == site.heads.read_text()

    # The service goes on after the dump: more entries, sealed, their heads appended to the live heads file.
    app = app_on(site, site.service_url)
    try:
        assert FhirClient(app.test_client()).get(f"Patient/{sorted(before)[0]}").status_code == 200
    finally:
        app.extensions["dui"].dispose()
    seal(site, site.service_url)
    assert len(site.heads.read_text().splitlines()) > len(heads_then.read_text().splitlines())

    restored = f"{site.database}_restored"
    site.restored.append(restored)
    run(["bash", str(DEPLOY / "restore.sh"), str(dump), restored, "--owner", site.owner, "--service", site.service],
        libpq_env(), tmp_path)
    again = run(["bash", str(DEPLOY / "restore.sh"), str(dump), restored, "--owner", site.owner, "--service",
                 site.service], libpq_env(), tmp_path, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr  # never over an existing database

    url = site.url(restored, site.service)
    drill_heads = tmp_path / "drill-heads.jsonl"  # the restored copy's own seals go here, not to the live file
    env = {**dui_env(site, url), "DUI_AUDIT_HEADS_FILE": str(drill_heads)}
    verified = run([DUI, "audit", "verify", "--heads", str(heads_then)], env, site.work)
    chained = re.search(r"audit trail intact: (\d+) entries chained; .* (\d+) heads of .* matched", verified.stdout)
    assert chained and int(chained.group(1)) > 5 and int(chained.group(2)) >= 1, verified.stdout
    # Against the live heads, the restored trail is seen to end before the newest head: the entries since are lost.
    rolled_back = run([DUI, "audit", "verify", "--heads", str(site.heads)], env, site.work, check=False)
    assert rolled_back.returncode == 1 and "removed from the end" in rolled_back.stderr, rolled_back.stderr
    assert dui(site, url, "keys", "status").returncode == 0

    app = app_on(site, url)
    try:
        after = residents(FhirClient(app.test_client()))
    finally:
        app.extensions["dui"].dispose()
    assert after == before

    engine = make_engine(url)  # the service's grants came back with the tables
    try:
        with pytest.raises(DBAPIError, match="permission denied"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event"))
    finally:
        engine.dispose()


def _statements(sql: str) -> list[str]:
    lines = [line.split("--", 1)[0].strip() for line in sql.splitlines()]
    return [" ".join(part.split()) for part in " ".join(lines).split(";") if part.strip()]


def test_grants_sql_is_what_docs_security_documents() -> None:
    """deploy/postgresql/grants.sql and the grants of docs/security.md (which tests/functional/test_audit_chain.py
    applies) are the same statements."""
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    block = doc.split("<!-- service role grants -->", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    assert _statements((DEPLOY / "postgresql" / "grants.sql").read_text()) == _statements(block)
