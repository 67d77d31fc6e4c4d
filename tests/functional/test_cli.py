"""The ``dui`` command: one clear line and a non-zero exit on errors; demo data idempotent."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner
from flask import Flask

from dui.cli import cli
from dui.db import make_engine
from tests.conftest import TEST_AUDIT_KEY_FILE, TEST_MASTER_KEY_FILE, empty_database

DUI = str(Path(sys.executable).with_name("dui"))


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DUI, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def test_db_upgrade_and_current_on_a_new_sqlite_file(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DUI_DATABASE_URL": f"sqlite:///{tmp_path / 'new' / 'dui.sqlite'}"}
    upgrade = _run("db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database at revision" in upgrade.stdout
    current = _run("db", "current", env=env)
    assert current.returncode == 0
    assert "up to date" in current.stdout


def test_bad_configuration_is_one_line_and_exit_2() -> None:
    result = _run("db", "current", env={"PATH": "/usr/bin:/bin", "DUI_ENV": "staging"})
    assert result.returncode == 2
    expected = "dui: configuration error: DUI_ENV must be one of dev, prod, not 'staging'"
    assert result.stderr.strip().splitlines() == [expected]


def test_serve_refuses_an_unknown_server_in_one_line() -> None:
    result = _run("serve", "--server", "nginx", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: Invalid value for '--server': 'nginx' is not one of 'gunicorn', 'granian'."]


def test_demo_load_is_idempotent(app: Flask) -> None:
    empty_database(app)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo", "load", "--residents", "3"])
    assert first.exit_code == 0, first.output
    assert "3 residents" in first.output
    engine = make_engine(app.extensions["dui"].settings.database_url)
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT count(*) FROM resource_version").scalar_one()
            resources = conn.exec_driver_sql("SELECT count(*) FROM resource").scalar_one()
        second = runner.invoke(args=["demo", "load", "--residents", "3"])
        assert second.exit_code == 0
        assert "0 resources created" in second.output
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM resource_version").scalar_one() == versions
        assert versions == resources
    finally:
        engine.dispose()


def test_demo_residents_have_valid_test_ins_and_are_searchable(app: Flask) -> None:
    from ins import InsKind, is_valid
    from tests.helpers import FhirClient

    empty_database(app)
    assert app.test_cli_runner().invoke(args=["demo", "load", "--residents", "6"]).exit_code == 0
    client = FhirClient(app.test_client())
    bundle = client.search("Patient?_count=50")
    assert bundle["total"] == 6
    values = [i["value"] for e in bundle["entry"] for i in e["resource"].get("identifier", [])
              if i.get("system") == InsKind.TEST.system]
    assert values and all(is_valid(v) for v in values)
    assert all(i["system"] != InsKind.NIR.system for e in bundle["entry"] for i in e["resource"]["identifier"])
    assert client.search("Organization")["total"] == 3
    assert client.search("Observation?code=http://loinc.org|85354-9")["total"] > 0
    assert client.search("Patient?_tag=http://terminology.hl7.org/CodeSystem/v3-ActReason|HTEST")["total"] == 6


def test_demo_load_is_refused_in_production(app: Flask) -> None:
    settings = app.extensions["dui"].settings
    prod = settings.with_(env="prod", base_url="https://dui.example.org")
    from dui.app import create_app

    prod_app = create_app(prod)
    try:
        result = prod_app.test_cli_runner().invoke(args=["demo", "load"])
        assert result.exit_code != 0
        assert "refused when DUI_ENV=prod" in result.output
    finally:
        prod_app.extensions["dui"].dispose()


def test_help_of_every_command() -> None:
    runner = CliRunner()
    for args in (["--help"], ["serve", "--help"], ["db", "--help"], ["db", "upgrade", "--help"],
                 ["demo", "load", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_health_and_readiness(app: Flask, tmp_path: Path) -> None:
    client = app.test_client()
    assert client.get("/healthz").get_json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    from dui.app import create_app
    from dui.settings import Settings

    empty = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    try:
        response = empty.test_client().get("/readyz")
        assert response.status_code == 503
        assert "dui db upgrade" in response.get_json()["database"]
    finally:
        empty.extensions["dui"].dispose()


def test_reindex_rebuilds_resumes_and_records_the_fingerprint(app: Flask) -> None:
    from sqlalchemy import text

    from dui.fhir import maintenance
    from tests.helpers import FhirClient, observation, patient

    empty_database(app)
    svc = app.extensions["dui"]
    client = FhirClient(app.test_client())
    subject = client.create(patient(family="Réindexée"))["id"]
    for i in range(5):
        client.create(observation(f"Patient/{subject}", value=50 + i))
    with svc.engine.begin() as conn:  # an index lost (as after a change of search parameters)
        conn.execute(text("DELETE FROM search_string"))
        conn.execute(text("DELETE FROM search_quantity"))
        conn.execute(text("DELETE FROM maintenance_state"))
    assert client.search("Patient?family=reindexee")["total"] == 0
    runner = app.test_cli_runner()
    assert runner.invoke(args=["reindex", "--check"]).exit_code == 1
    # a rebuild interrupted after the first batch of 2 resumes from its position
    with svc.session_factory() as session:
        maintenance.write_state(session, maintenance.REINDEX, {"after": 0, "types": []}, svc.clock())
        rids = maintenance.reindex_batch(svc.repository(session), (), 0, 2)
        maintenance.write_state(session, maintenance.REINDEX, {"after": rids[-1], "types": []}, svc.clock())
        session.commit()
    result = runner.invoke(args=["reindex", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "resuming the rebuild after row" in result.output
    assert "4 resources" in result.output
    assert client.search("Patient?family=reindexee")["total"] == 1
    assert client.search("Observation?value-quantity=ge52")["total"] == 3
    assert runner.invoke(args=["reindex", "--check"]).exit_code == 0
    assert runner.invoke(args=["reindex", "--type", "Nope"]).exit_code != 0
    only = runner.invoke(args=["reindex", "--type", "Observation"])
    assert "5 resources" in only.output


def test_demo_accounts_see_their_establishment_only(app: Flask) -> None:
    from tests.helpers import FhirClient

    empty_database(app)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo", "load", "--residents", "4"])
    assert first.exit_code == 0, first.output
    assert "demo accounts at EHPAD Les Tilleuls (démo) (5 created)" in first.output
    again = runner.invoke(args=["demo", "load", "--residents", "4"])
    assert "(0 created)" in again.output
    web = app.test_client()
    token = web.post("/auth/token", data={"grant_type": "password", "username": "demo.infirmier",
                                          "password": "Demo-Tilleuls-2026"}).get_json()["access_token"]
    everyone = FhirClient(web).search("Patient?_count=50")["entry"]
    mine = web.get("/fhir/Patient?_count=50", headers={"Authorization": f"Bearer {token}",
                                                        "Accept": "application/fhir+json"}).get_json()["entry"]
    homes = {e["resource"]["managingOrganization"]["reference"] for e in mine}
    assert homes == {"Organization/demo-ehpad-les-tilleuls"} and 0 < len(mine) < len(everyone)


def test_a_database_the_command_cannot_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Missing, unreachable, not migrated, or a database the service does not support: one line naming the
    problem, never a traceback."""
    cases = {
        "mysql://dui@127.0.0.1/dui": "a mysql:// database is not supported",
        "postgresql://postgres@127.0.0.1:1/dui": "cannot use the database (postgresql",
        f"sqlite:///{tmp_path / 'empty.sqlite'}": "not migrated): run `dui db upgrade` first",
    }
    commands = (("users", "list"), ("audit", "verify"), ("outbox", "list"))
    with ThreadPoolExecutor(max_workers=3) as pool:  # nine short processes: side by side
        results = {(url, command): pool.submit(_run, *command, env={
            "PATH": "/usr/bin:/bin", "DUI_DATABASE_URL": url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
            "DUI_AUDIT_KEY_FILE": str(TEST_AUDIT_KEY_FILE)}) for url in cases for command in commands}
    for (url, command), future in results.items():
        result, said = future.result(), cases[url]
        assert result.returncode == 1, (url, command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dui: ") and said in lines[0], (url, command, lines)


def test_warnings_are_one_line_and_flasks_own_commands_are_hidden(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DUI_DATABASE_URL": f"sqlite:///{tmp_path / 'dui.sqlite'}"}
    assert _run("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    # no DUI_MASTER_KEY_FILE: a development master key (under tmp_path/var), warned
    loaded = _run("demo", "load", "--residents", "1", env=env, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    lines = [line for line in (loaded.stdout + loaded.stderr).splitlines() if line.strip()]
    warned = [line for line in lines if "DUI_MASTER_KEY_FILE is not set" in line]
    assert len(warned) == 1 and "WARNING dui.warnings" in warned[0], lines  # one log line
    assert not any("warnings.warn" in line or "UserWarning" in line or "Warning:" in line for line in lines), lines
    help_text = _run("--help", env=env, cwd=tmp_path).stdout
    commands = [line.split()[0] for line in help_text.split("Commands:")[1].splitlines() if line.strip()]
    assert "serve" in commands and "routes" not in commands and "shell" not in commands


def test_help_lists_every_command_without_loading_the_app(app: Flask) -> None:
    """`dui --help` reads the command table, not the app: no FHIR engine, no database (fast); each line of the
    table says what the command's own help says."""
    probe = ("import sys\nfrom dui.cli import cli\n"
             "try:\n    cli.main(['--help'], prog_name='dui')\nexcept SystemExit:\n    pass\n"
             "print('LOADED:' + ','.join(m for m in ('dui.services', 'dui.app', 'sqlalchemy', 'dui.fhir.registry')"
             " if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("LOADED:"), result.stdout.splitlines()[-1]
    from dui.cli import COMMANDS, _load

    for name, (_, _, on_app, short) in COMMANDS.items():
        command = _load(name)
        assert short == command.get_short_help_str(1000), name
        assert (name in app.cli.commands) == on_app, name
    assert set(COMMANDS) >= set(app.cli.commands)


def test_keys_are_generated_before_anything_is_configured_even_in_prod(tmp_path: Path) -> None:
    """A new production host has no key yet: `dui keys generate` must not need the app (which refuses to start
    without them)."""
    from dui.auth.keys import load_signing_key
    from dui.crypto.master import read_key_file

    env = {"PATH": "/usr/bin:/bin", "DUI_ENV": "prod", "DUI_BASE_URL": "https://dui.example.org"}
    for args, file in ((["keys", "generate"], "master.key"), (["keys", "generate", "--audit"], "audit.key"),
                       (["keys", "generate", "--signing"], "token-signing.pem")):
        made = _run(*args, str(tmp_path / "etc" / file), env=env, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert (tmp_path / "etc" / file).stat().st_mode & 0o777 == 0o600
    again = _run("keys", "generate", str(tmp_path / "etc" / "master.key"), env=env, cwd=tmp_path)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    assert not read_key_file(tmp_path / "etc" / "master.key").development
    load_signing_key(str(tmp_path / "etc" / "token-signing.pem"), str(tmp_path / "dev"), prod=True)
    needs_app = _run("keys", "status", env=env, cwd=tmp_path)  # the rest of `dui keys` still needs the app
    assert needs_app.returncode == 2 and needs_app.stderr.startswith("dui: configuration error")
