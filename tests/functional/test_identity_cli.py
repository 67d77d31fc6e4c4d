"""``dui ins ...``, ``dui residents ...`` and the INSi wiring: the simulator in dev, refused in prod."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from dui.errors import Unavailable
from dui.residents import mapping
from dui.services import Services, SimulatorWarning
from dui.settings import InsiSettings, Settings, SettingsError
from ins.errors import InsiError
from ins.insi.client import TraitsQuery
from ins.insi.pki import make_pki
from ins.insi.simulator import InsiSimulator
from ins.insi.table import LYON
from tests.functional.test_identity import resident, stored
from tests.helpers import FhirClient, ins_identifier, observation


def test_ins_fetch_check_and_verify_all(app: Flask, client: FhirClient) -> None:
    runner = app.test_cli_runner()
    pid = client.create(resident())["id"]
    unknown = client.create(resident("Inconnue", "Rose"))["id"]
    fetched = runner.invoke(args=["ins", "fetch", pid])
    assert fetched.exit_code == 0, fetched.output
    assert "INSi 00, identity identité récupérée" in fetched.output
    missing = runner.invoke(args=["ins", "fetch", unknown])
    assert missing.exit_code == 1 and "INSi 01" in missing.output
    low = runner.invoke(args=["ins", "check", pid, "--document", "PC"])
    assert low.exit_code == 1 and "not a high-trust identity document" in low.output
    checked = runner.invoke(args=["ins", "check", pid, "--document", "cn", "--date", "2026-11-20"])
    assert checked.exit_code == 0 and "identité qualifiée" in checked.output
    assert mapping.evidence_of(stored(app, pid)).document_date.isoformat() == "2026-11-20"  # type: ignore[union-attr]

    verified = runner.invoke(args=["ins", "verify", "--all"])
    assert verified.exit_code == 0, verified.output
    assert verified.output.strip().endswith("INS verification: 1 residents: 1 confirmed")
    assert runner.invoke(args=["ins", "verify"]).exit_code == 2
    gone = runner.invoke(args=["ins", "verify", "nope"])
    assert gone.exit_code == 1 and "1 failed" in gone.output


def test_residents_duplicates_merge_and_unmerge(app: Flask, client: FhirClient) -> None:
    runner = app.test_cli_runner()
    target = client.create(resident(identifier=[ins_identifier(LYON.identity.matricule)]))["id"]
    source = client.create(resident("Berthier", "Marie", "1938-04-12"))["id"]
    obs = client.create(observation(f"Patient/{source}"))["id"]
    found = runner.invoke(args=["residents", "duplicates", source])
    assert found.exit_code == 0 and f"Patient/{target}\tcertain" in found.output
    preview = runner.invoke(args=["residents", "merge", source, target, "--preview"])
    assert "would move 1 resource(s)" in preview.output
    wrong_way = runner.invoke(args=["residents", "merge", target, source])
    assert wrong_way.exit_code == 1 and wrong_way.output.startswith("Error: The source carries an INS")
    merged = runner.invoke(args=["residents", "merge", source, target])
    assert merged.exit_code == 0 and "moved 1 resource(s)" in merged.output
    assert client.get(f"Observation/{obs}").get_json()["subject"]["reference"] == f"Patient/{target}"
    assert runner.invoke(args=["residents", "unmerge", source]).exit_code == 2  # --reason is required
    undone = runner.invoke(args=["residents", "unmerge", source, "--reason", "deux personnes"])
    assert undone.exit_code == 0, undone.output
    assert client.get(f"Observation/{obs}").get_json()["subject"]["reference"] == f"Patient/{source}"
    from tests.functional.test_audit import rows

    commands = [(r["actor_kind"], r["detail"], r["outcome"], tuple(p)) for r, p in rows(app) if r["source"] == "cli"]
    assert ("cli", "residents merge", "failed", tuple(sorted((target, source)))) in commands
    assert ("cli", "residents unmerge", "success", (source,)) in commands


def test_dev_uses_the_simulator_and_says_so(tmp_path: Path, database_url: str) -> None:
    settings = Settings(database_url=database_url, insi=InsiSettings(simulator_dir=str(tmp_path)))
    svc = Services.build(settings)
    try:
        with pytest.warns(SimulatorWarning, match="local INSi simulator"):
            client = svc.insi()
        identity = LYON.identity
        result = client.search_by_traits(TraitsQuery("Berthier", "Marie", "F", identity.birth_date, "69123"))
        assert result.code == "00" and result.simulated
    finally:
        svc.dispose()


def test_production_refuses_the_simulator_and_a_missing_configuration(tmp_path: Path, database_url: str) -> None:
    prod = Settings(env="prod", base_url="https://dui.example.org", database_url=database_url)
    svc = Services.build(prod)
    try:
        with pytest.raises(Unavailable, match="INSi is not configured"):
            svc.insi()
    finally:
        svc.dispose()
    pki = make_pki(tmp_path)
    with InsiSimulator(pki=pki) as simulator:
        insi = InsiSettings(url=simulator.url, cert=str(pki.client_cert), key=str(pki.client_key),
                            ca=str(pki.ca_cert))
        svc = Services.build(prod.with_(insi=insi))
        try:
            with pytest.raises(InsiError, match="simulator"):
                svc.insi().search_by_traits(TraitsQuery("BERTHIER", "MARIE", "F", LYON.identity.birth_date))
        finally:
            svc.dispose()


def test_insi_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="https"):
        Settings.from_env({"DUI_INSI_URL": "http://insi.example"})
    with pytest.raises(SettingsError, match="DUI_INSI_CERT, DUI_INSI_KEY"):
        Settings.from_env({"DUI_INSI_URL": "https://insi.example", "DUI_INSI_CA": "/ca.pem"})
    settings = Settings.from_env({"DUI_INSI_URL": "https://insi.example", "DUI_INSI_CA": "/ca.pem",
                                  "DUI_INSI_CERT": "/c.pem", "DUI_INSI_KEY": "/k.pem", "DUI_INSI_TIMEOUT": "5"})
    assert settings.insi.timeout == 5.0


def test_simulator_command_is_refused_in_production() -> None:
    import base64
    import os
    import subprocess
    import sys

    dui = str(Path(sys.executable).with_name("dui"))
    result = subprocess.run([dui, "insi-simulator"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "DUI_ENV": "prod", "DUI_DOCUMENT_OID": "1.2.250.1.999.1",
                                 "DUI_BASE_URL": "https://x.example",
                                 "DUI_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),  # prod needs one
                                 "DUI_AUDIT_KEY_FILE": "/nonexistent/audit.key"})  # and names an audit key
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the INSi simulator is refused when DUI_ENV=prod"


def test_admission_with_a_provisional_identity_lists_likely_duplicates(app: Flask, client: FhirClient) -> None:
    runner = app.test_cli_runner()
    existing = client.create(resident("Lefebvre", "Hélène", "1932-04-05"))["id"]
    admitted = runner.invoke(args=["residents", "admit", "--family", "Lefèvre", "--given", "Hélène Marie",
                                   "--birth-date", "1932-04-05", "--sex", "F", "--birth-place", "69123",
                                   "--local-id", "3690002662/000099"])
    assert admitted.exit_code == 0, admitted.output
    assert "admitted, identity provisoire" in admitted.output
    assert f"may be the same resident as Patient/{existing}" in admitted.output
    pid = admitted.output.split()[0].split("/")[1]
    record = stored(app, pid)
    assert mapping.status_of(record).code == "PROV"
    assert mapping.traits_of(record).birth_given_names == ("Hélène", "Marie")  # type: ignore[union-attr]
    activities = [e["resource"]["activity"]["coding"][0]["code"]
                  for e in client.search(f"Provenance?target=Patient/{pid}")["entry"]]
    assert activities == ["admitted"]
    bad = runner.invoke(args=["residents", "admit", "--family", "Dupont2", "--given", "Jean",
                              "--birth-date", "1938-02-30", "--sex", "M"])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: The identity traits break the INS rules (the birth family name may hold")
    assert "not a real calendar date" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert client.search("Patient")["total"] == 2


def test_the_demo_stays_coherent_with_its_simulator(app: Flask) -> None:
    """The demo residents are in the development INSi simulator's register: verifying them all confirms every INS
    the demo holds and withdraws none."""
    from tests.conftest import empty_database

    empty_database(app)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["demo", "load", "--residents", "8"]).exit_code == 0
    verified = runner.invoke(args=["ins", "verify", "--all"])
    assert verified.exit_code == 0, verified.output
    summary = verified.output.strip().splitlines()[-1]
    assert "confirmed" in summary and "withdrawn" not in summary and "failed" not in summary, summary
