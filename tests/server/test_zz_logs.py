"""Health data never appears in logs: names, birth dates, INS values, search values.

Runs after the other server tests of this folder and reads every line their servers logged, then
drives the in-process app with identifying data and reads every captured record.
"""

from __future__ import annotations

import logging

import pytest

from ins.insi.table import LYON
from tests.helpers import FhirClient, ins_identifier, patient
from tests.server.conftest import SERVER_LOGS

# Identifying values used by the server tests and below.
SENSITIVE = ["Lefèvre", "Lefevre", "lefevre", "Hélène", "helene", "Dupont", "Jean-Pierre", "279035121518989",
             "185057512345673", "1932-04-05", "R-0042", "Zéphirine", "Quintal", "285031512345659",
             # the INSi identity the server tests retrieve, as sent and as answered
             "Berthier", "BERTHIER", "HELENE JEANNE", "1938-04-12", LYON.identity.matricule]


def test_server_logs_hold_no_health_data() -> None:
    if not SERVER_LOGS:
        pytest.skip("no server ran in this session")
    for path in SERVER_LOGS:
        text = path.read_text(errors="replace")
        assert "request" in text  # the access log is there...
        for value in SENSITIVE:
            assert value not in text, f"{value!r} found in {path}"  # ...without identifying data


def test_app_logs_hold_no_health_data(client: FhirClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = patient(family="Quintal", given="Zéphirine", identifier=[ins_identifier("285031512345659")])
    created = client.create(body)
    client.post("Patient", body)  # 409 duplicate INS
    client.get("Patient?family=quintal&given=zephirine&identifier=285031512345659")
    client.put(f"Patient/{created['id']}", dict(body, id="other"))  # 400
    client.post("Patient", b'{"resourceType": "Patient", "name": [{"family": "Quintal"}], "gender": "F"}')
    resident = client.create(patient(family="Berthier", given="Marie", birthDate="1938-04-12"))
    client.post(f"Patient/{resident['id']}/$ins-fetch", None)  # INSi over TLS: 00
    client.post(f"Patient/{resident['id']}/$ins-verify", None)
    client.post("Patient", patient(identifier=[ins_identifier(LYON.identity.matricule[:14] + "0")]))  # bad key
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "request" in logged
    for value in SENSITIVE:
        assert value not in logged, value
