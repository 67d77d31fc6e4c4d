"""Encryption at rest of resource bodies (docs/security.md), on SQLite and PostgreSQL.

The tests that change keys work on a database of their own (``fresh_url``), so the key state of the
shared test database stays as every other test expects it.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from dui import migrations
from dui.app import create_app
from dui.crypto.errors import KeyUnavailable
from dui.crypto.keyring import Keyring
from dui.crypto.master import (
    KEY_BYTES,
    DevMasterKeyWarning,
    MasterKeyConfigError,
    development_keys,
    read_key_file,
    write_key_file,
)
from dui.fhir import maintenance, reencrypt
from dui.services import Services
from dui.settings import EncryptionSettings, Settings
from tests.conftest import TEST_AUDIT_KEY_FILE, migrated_schema
from tests.conftest import test_settings as settings_for
from tests.helpers import FhirClient, ins_identifier, observation, patient

FAMILY = "Quintal-Berthelot"
INS = "285031512345659"
_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}  # for `dui` subprocesses
PDF = b"%PDF-1.4 compte rendu de consultation: Zephirine Quintal-Berthelot, hypertension\n" * 20


def _bodies(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(b) for b in conn.execute(text("SELECT body FROM resource_version WHERE body IS NOT NULL "
                                                     "ORDER BY vid")).scalars()]


def _record(client: FhirClient) -> dict[str, str]:
    """A resident with an INS, an observation, a document as Binary; the ids."""
    pid = client.create(patient(family=FAMILY, given="Zéphirine", identifier=[ins_identifier(INS)]))["id"]
    oid = client.create(observation(f"Patient/{pid}"))["id"]
    binary = client.create({"resourceType": "Binary", "contentType": "application/pdf",
                            "data": base64.b64encode(PDF).decode()})["id"]
    return {"patient": pid, "observation": oid, "binary": binary}


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own, on the backend of ``database_url``."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'own.sqlite'}"
        migrations.upgrade(url)
        yield url
        return
    with migrated_schema("dui_enc") as url:
        yield url


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps built by a test, disposed at its end."""
    made: list[Flask] = []
    yield made
    for app in made:
        app.extensions["dui"].dispose()


def _app(apps: list[Flask], url: str, key: Path, previous: Path | None = None) -> Flask:
    encryption = EncryptionSettings(master_key_file=str(key),
                                    previous_master_key_file=str(previous) if previous else None)
    app = create_app(settings_for(url, encryption=encryption))
    apps.append(app)
    return app


def _key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    write_key_file(path, os.urandom(KEY_BYTES))
    return path


def _services(app: Flask) -> Services:
    svc: Services = app.extensions["dui"]
    return svc


def _readable(client: FhirClient, ids: dict[str, str]) -> None:
    assert client.get(f"Patient/{ids['patient']}").get_json()["name"][0]["family"] == FAMILY
    assert client.get(f"Observation/{ids['observation']}").status_code == 200
    assert base64.b64decode(client.get(f"Binary/{ids['binary']}").get_json()["data"]) == PDF


# -- encryption through the API ------------------------------------------------------------------


def test_every_interaction_round_trips_and_the_database_holds_no_plaintext(app: Flask, client: FhirClient) -> None:
    ids = _record(client)
    pid = ids["patient"]
    _readable(client, ids)
    updated = client.get(f"Patient/{pid}").get_json()
    updated["active"] = True
    assert client.put(f"Patient/{pid}", updated).status_code == 200
    assert client.get(f"Patient/{pid}/_history/1").get_json()["meta"]["versionId"] == "1"
    history = client.search(f"Patient/{pid}/_history")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert client.search("Patient?family=quintal")["total"] == 1
    assert client.search(f"Observation?subject=Patient/{pid}")["entry"][0]["resource"]["valueQuantity"]["value"] == 62.5
    everything = client.search(f"Patient/{pid}/$everything")
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Observation"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b1c9f5e-7a44-4f0e-9a53-1f2a3b4c5d6e", "resource": patient(family="Transactionnel"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:0b1c9f5e-7a44-4f0e-9a53-1f2a3b4c5d6e", value=71.25),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = client.post("", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    location = response.get_json()["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
    assert client.get(location).get_json()["valueQuantity"]["value"] == 71.25
    assert client.delete(f"Observation/{ids['observation']}").status_code == 204

    # The resident's record as the store holds it: the INS is there, inside the encryption.
    svc = _services(app)
    with svc.unit_of_work(write=False) as session:
        stored = svc.repository(session).read("Patient", pid)
        assert stored is not None and INS.encode() in (stored.body or b"")

    bodies = _bodies(svc.engine)
    assert len(bodies) == 6 and all(b[:2] == b"\xd1\x01" for b in bodies)
    pdf64 = base64.b64encode(PDF)
    for needle in (FAMILY.encode(), b"Quintal", INS.encode(), b"Transactionnel", b"resourceType", pdf64[:40],
                   b"hypertension"):
        assert not any(needle in body for body in bodies), needle


def test_a_tampered_body_or_a_body_moved_to_another_row_is_refused(app: Flask, client: FhirClient,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    first = client.create(patient(family=FAMILY))["id"]
    second = client.create(patient(family="Autre"))["id"]
    engine = _services(app).engine
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT vid, body FROM resource_version ORDER BY vid")).all()
        (vid1, _), (vid2, body2) = rows
        conn.execute(text("UPDATE resource_version SET body = :b WHERE vid = :v"), {"b": body2, "v": vid1})
    caplog.set_level(logging.ERROR, logger="dui.web")
    response = client.get(f"Patient/{first}")
    assert response.status_code == 500
    assert response.get_json()["issue"][0]["code"] == "exception"
    assert "request id" in response.get_json()["issue"][0]["diagnostics"]
    assert client.get(f"Patient/{second}").status_code == 200
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "BodyIntegrityError" in logged and "fails its integrity check" in logged
    assert FAMILY not in logged and "Autre" not in logged

    altered = bytearray(body2)
    altered[-20] ^= 0x40
    with engine.begin() as conn:
        conn.execute(text("UPDATE resource_version SET body = :b WHERE vid = :v"), {"b": bytes(altered), "v": vid2})
    assert client.get(f"Patient/{second}").status_code == 500
    assert client.get("Patient?family=autre").status_code == 500  # a search that meets it fails as loudly


def test_plaintext_rows_from_before_encryption_read_and_reencrypt_converts_them(app: Flask,
                                                                                 client: FhirClient) -> None:
    ids = _record(client)
    svc = _services(app)
    with svc.unit_of_work(write=False) as session:
        plain = {v.vid: v.body for v in svc.repository(session).history(count=100).versions}
    with svc.engine.begin() as conn:  # as a database written before this version would hold them
        for vid, body in plain.items():
            conn.execute(text("UPDATE resource_version SET body = :b WHERE vid = :v"), {"b": body, "v": vid})
    assert all(b.startswith(b"{") for b in _bodies(svc.engine))
    _readable(client, ids)
    result = app.test_cli_runner().invoke(args=["keys", "status"])
    assert result.exit_code == 0 and "plaintext (written before encryption): 3 bodies" in result.output

    result = app.test_cli_runner().invoke(args=["keys", "reencrypt", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "3 bodies re-encrypted" in result.output
    assert all(b[:2] == b"\xd1\x01" for b in _bodies(svc.engine))
    _readable(client, ids)
    again = app.test_cli_runner().invoke(args=["keys", "reencrypt"])
    assert again.exit_code == 0 and "0 bodies re-encrypted" in again.output


# -- key lifecycle, each on a database of its own ------------------------------------------------


def test_the_first_write_creates_one_active_data_key(fresh_url: str, tmp_path: Path, apps: list[Flask]) -> None:
    app = _app(apps, fresh_url, _key_file(tmp_path, "a.key"))
    client = FhirClient(app.test_client())
    status = app.test_cli_runner().invoke(args=["keys", "status"])
    assert status.exit_code == 0 and "no data key yet" in status.output
    ids = _record(client)
    status = app.test_cli_runner().invoke(args=["keys", "status"])
    assert status.exit_code == 0, status.output
    assert status.output.count("data key ") == 1 and ": active, " in status.output and "3 bodies" in status.output
    # Another process, starting cold, reads the same bodies.
    _readable(FhirClient(_app(apps, fresh_url, tmp_path / "a.key").test_client()), ids)


def test_master_key_rotation_without_downtime(fresh_url: str, tmp_path: Path, apps: list[Flask]) -> None:
    old, new = _key_file(tmp_path, "old.key"), tmp_path / "new.key"
    running = _app(apps, fresh_url, old)  # a server of the old configuration
    ids = _record(FhirClient(running.test_client()))
    result = running.test_cli_runner().invoke(args=["keys", "generate", str(new)])
    assert result.exit_code == 0 and read_key_file(new).key_id in result.output
    # Step 1: servers restart one by one holding both keys; they read what the old key wrapped.
    switching = _app(apps, fresh_url, new, previous=old)
    _readable(FhirClient(switching.test_client()), ids)
    # Step 2: every data key is wrapped again, by the new key, in one transaction.
    result = running.test_cli_runner().invoke(args=["keys", "rotate", "--new-key-file", str(new)])
    assert result.exit_code == 0, result.output
    assert f"1 data key(s) now wrapped by master key {read_key_file(new).key_id}" in result.output
    assert "DUI_MASTER_KEY_FILE=" in result.output
    # Servers of either configuration keep working: the old one has its data keys in memory.
    for app in (running, switching):
        client = FhirClient(app.test_client())
        _readable(client, ids)
        client.create(observation(f"Patient/{ids['patient']}", value=60))
    # Step 3: the previous key is dropped; a server holding the new key only reads everything.
    after = _app(apps, fresh_url, new)
    _readable(FhirClient(after.test_client()), ids)
    status = after.test_cli_runner().invoke(args=["keys", "status"])
    assert status.exit_code == 0 and f"wrapped by {read_key_file(new).key_id}" in status.output
    # A server restarted on the old key alone cannot unwrap any more, and says why.
    stale = _app(apps, fresh_url, old)
    status = stale.test_cli_runner().invoke(args=["keys", "status"])
    assert status.exit_code == 1 and "UNUSABLE" in status.output and "does not hold" in status.output
    assert FhirClient(stale.test_client()).get(f"Patient/{ids['patient']}").status_code == 500
    # Rotating again to the same key changes nothing.
    again = after.test_cli_runner().invoke(args=["keys", "rotate", "--new-key-file", str(new)])
    assert again.exit_code == 0 and "0 data key(s)" in again.output and "(1 already were)" in again.output


def test_data_key_rotation_then_reencrypt(fresh_url: str, tmp_path: Path, apps: list[Flask],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key_file(tmp_path, "a.key")
    app = _app(apps, fresh_url, key)
    other = _app(apps, fresh_url, key)  # another server process, with the active key cached
    client, other_client = FhirClient(app.test_client()), FhirClient(other.test_client())
    ids = _record(client)
    other_client.create(observation(f"Patient/{ids['patient']}", value=60))
    first = _bodies(_services(app).engine)[0][:6]
    result = app.test_cli_runner().invoke(args=["keys", "rotate", "--data-key"])
    assert result.exit_code == 0 and "retired" in result.output, result.output
    client.create(observation(f"Patient/{ids['patient']}", value=61))
    other_client.create(observation(f"Patient/{ids['patient']}", value=62))
    heads = [b[:6] for b in _bodies(_services(app).engine)]
    assert heads[:4] == [first] * 4 and heads[4] != first  # new writes use the new key at once here...
    assert heads[5] == first  # ...and in other processes once their cached answer expires
    _services(other).keyring.active_ttl = 0
    other_client.create(observation(f"Patient/{ids['patient']}", value=63))
    assert _bodies(_services(app).engine)[6][:6] == heads[4]
    status = app.test_cli_runner().invoke(args=["keys", "status"])
    assert ": retired, " in status.output and "5 bodies" in status.output and "2 bodies" in status.output

    # Interrupted after its first batch, reencrypt resumes where it stopped.
    real = reencrypt.reencrypt_batch
    calls = {"n": 0}

    def interrupted(*args: Any) -> reencrypt.Batch:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(reencrypt, "reencrypt_batch", interrupted)
    stopped = app.test_cli_runner().invoke(args=["keys", "reencrypt", "--batch", "2"])
    assert stopped.exit_code != 0
    monkeypatch.setattr(reencrypt, "reencrypt_batch", real)
    resumed = app.test_cli_runner().invoke(args=["keys", "reencrypt", "--batch", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after version row" in resumed.output and "3 bodies re-encrypted" in resumed.output
    assert {b[:6] for b in _bodies(_services(app).engine)} == {heads[4]}
    with _services(app).unit_of_work(write=False) as session:
        assert maintenance.read_state(session, reencrypt.REENCRYPT) is None
    _readable(FhirClient(_app(apps, fresh_url, key).test_client()), ids)


def test_a_wrong_master_key_gives_a_clear_error(fresh_url: str, tmp_path: Path, apps: list[Flask],
                                                caplog: pytest.LogCaptureFixture) -> None:
    right, wrong = _key_file(tmp_path, "right.key"), _key_file(tmp_path, "wrong.key")
    ids = _record(FhirClient(_app(apps, fresh_url, right).test_client()))
    app = _app(apps, fresh_url, wrong)
    caplog.set_level(logging.ERROR, logger="dui.web")
    assert FhirClient(app.test_client()).get(f"Patient/{ids['patient']}").status_code == 500
    logged = "\n".join(r.exc_text or "" for r in caplog.records)
    assert f"wrapped by master key {read_key_file(right).key_id}, which this process does not hold" in logged
    # Writes fail the same way: no body is ever written under a key nobody can read.
    assert FhirClient(app.test_client()).post("Patient", patient()).status_code == 500
    env = {**_ENV, "DUI_DATABASE_URL": fresh_url, "DUI_MASTER_KEY_FILE": str(wrong)}
    dui = str(Path(sys.executable).with_name("dui"))
    for args in (["keys", "reencrypt"], ["reindex"]):
        run = subprocess.run([dui, *args], capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        last = run.stderr.strip().splitlines()[-1]  # after the progress bar's label
        assert last.startswith(("Error: ", "dui: encryption at rest: ")), run.stderr
        assert "which this process does not hold" in last


def test_production_refuses_a_missing_or_development_key(fresh_url: str, tmp_path: Path) -> None:
    prod = Settings(env="prod", base_url="https://dui.example.org", database_url=fresh_url,
                    encryption=EncryptionSettings(dev_key_dir=str(tmp_path / "dev")))
    with pytest.warns(DevMasterKeyWarning):  # a development key, as `make run` leaves it
        development_keys(str(tmp_path / "dev"), prod=False)
    dev_key = tmp_path / "dev" / "master-key.dev"
    with pytest.raises(MasterKeyConfigError, match="development key"):
        Services.build(prod.with_(encryption=EncryptionSettings(master_key_file=str(dev_key))))
    svc = Services.build(prod)  # built without Settings.from_env (tests): refused at first use
    try:
        with pytest.raises(MasterKeyConfigError, match="DUI_ENV=prod requires a master key"):
            svc.keyring.masters()
    finally:
        svc.dispose()
    dui = str(Path(sys.executable).with_name("dui"))
    base = {**_ENV, "DUI_ENV": "prod", "DUI_DOCUMENT_OID": "1.2.250.1.999.1",
            "DUI_BASE_URL": "https://x.example", "DUI_DATABASE_URL": fresh_url,
            "DUI_AUDIT_KEY_FILE": str(TEST_AUDIT_KEY_FILE)}
    for extra, message in (({}, "DUI_ENV=prod requires a master key"),
                           ({"DUI_MASTER_KEY_FILE": str(dev_key)}, "is a development key generated by `dui`")):
        for args in (["db", "current"], ["serve", "--port", "1"]):
            run = subprocess.run([dui, *args], capture_output=True, text=True, timeout=120, env={**base, **extra})
            assert run.returncode == 2 and run.stderr.startswith("dui: configuration error: "), run.stderr
            assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_development_generates_a_key_on_first_use_with_a_warning(fresh_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=fresh_url, encryption=EncryptionSettings(dev_key_dir=str(tmp_path / "keys")))
    app = create_app(settings)
    try:
        client = FhirClient(app.test_client())
        with pytest.warns(DevMasterKeyWarning, match="development master key"):
            pid = client.create(patient(family=FAMILY))["id"]
        assert (tmp_path / "keys" / "master-key.dev").exists()
    finally:
        app.extensions["dui"].dispose()
    again = create_app(settings)  # the next start reads the same key
    try:
        with pytest.warns(DevMasterKeyWarning):
            assert FhirClient(again.test_client()).get(f"Patient/{pid}").get_json()["name"][0]["family"] == FAMILY
    finally:
        again.extensions["dui"].dispose()


def test_a_data_key_created_in_a_failed_batch_entry_is_not_used_afterwards(fresh_url: str, tmp_path: Path,
                                                                           apps: list[Flask]) -> None:
    key = _key_file(tmp_path, "a.key")
    app = _app(apps, fresh_url, key)
    engine = _services(app).engine
    with engine.begin() as conn:  # an INS already taken, in a database that has no data key yet
        rid = conn.execute(text("INSERT INTO resource (res_type, res_id, version, last_updated, deleted) VALUES "
                                "('Patient', 'taken', 1, CURRENT_TIMESTAMP, false) RETURNING rid")).scalar_one()
        conn.execute(text("INSERT INTO unique_identifier (rid, res_type, system, value) VALUES "
                          "(:rid, 'Patient', 'urn:oid:1.2.250.1.213.1.4.10', :ins)"), {"rid": rid, "ins": INS})
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(identifier=[ins_identifier(INS)]), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(family=FAMILY), "request": {"method": "POST", "url": "Patient"}}]}
    response = FhirClient(app.test_client()).post("", bundle)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses[0].startswith("409") and statuses[1].startswith("201"), statuses
    location = response.get_json()["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM data_key")).scalar_one() == 1
    cold = _app(apps, fresh_url, key)  # a process that never saw the rolled-back key
    assert FhirClient(cold.test_client()).get(location).get_json()["name"][0]["family"] == FAMILY


def test_concurrent_first_writers_agree_on_one_data_key(fresh_url: str, tmp_path: Path, apps: list[Flask]) -> None:
    app = _app(apps, fresh_url, _key_file(tmp_path, "a.key"))
    svc = _services(app)
    keyrings = [Keyring(svc.keyring.masters()) for _ in range(4)]  # four processes
    found: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(keyrings))

    def first_write(keyring: Keyring) -> None:
        try:
            barrier.wait()
            with svc.unit_of_work(write=True) as session:
                found.append(keyring.write_key(session).id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(k,)) for k in keyrings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(found) == 4 and len(set(found)) == 1
    with svc.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM data_key")).scalar_one() == 1


def test_a_data_key_that_is_missing_is_named(fresh_url: str, tmp_path: Path, apps: list[Flask]) -> None:
    app = _app(apps, fresh_url, _key_file(tmp_path, "a.key"))
    svc = _services(app)
    with svc.unit_of_work(write=False) as session, pytest.raises(KeyUnavailable, match="data key 42 does not exist"):
        svc.keyring.data_key(session, 42)
