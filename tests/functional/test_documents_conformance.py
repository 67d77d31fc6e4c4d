"""Every demo resident's DLU, FLUDT and N1, as the service builds and serves them, conform to the CI-SIS: the
extended CDA schema and the ANS schematrons of each model (0 XSD error, 0 failed assert). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from datetime import date
from typing import Any

import pytest

from dui.demo.data import resident_bundle, setup_bundle
from dui.documents import conformance
from tests.conftest import conformance_dir
from tests.helpers import FhirClient

pytestmark = pytest.mark.conformance
RESIDENTS = 24  # what `dui demo load` loads
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
FLUDT = {"resourceType": "Parameters", "parameter": [
    {"name": "reason", "valueString": "Chute dans la chambre, douleur de la hanche droite"},
    {"name": "destination", "valueString": "Service des urgences du centre hospitalier"},
    {"name": "lastMeal", "valueString": "Dîner complet à 19 h"},
    {"name": "device", "valueString": "Appareil auditif droit"},
    {"name": "belonging", "valueString": "Lunettes"}]}


def _cda(client: FhirClient, doc: dict[str, Any]) -> bytes:
    url = next(c["attachment"]["url"] for c in doc["content"] if c["attachment"]["contentType"] == "text/xml")
    answer = client.get(url, headers={"Accept": "text/xml"})
    assert answer.status_code == 200
    return bytes(answer.data)


def test_every_demo_residents_documents_conform(client: FhirClient) -> None:
    material = conformance_dir("cda")
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in range(1, RESIDENTS + 1))):
        assert client.post("", bundle).status_code == 200
    failures: list[str] = []
    models: set[str] = set()
    for index in range(1, RESIDENTS + 1):
        pid = f"demo-resident-{index:03d}"
        pdf = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pid}"},
               "type": {"coding": [{"system": "http://loinc.org", "code": "57833-6"}]},
               "description": "Ordonnance (scan)",
               "content": [{"attachment": {"contentType": "application/pdf", "data": base64.b64encode(PDF).decode()}}]}
        answers = (client.post(f"Patient/{pid}/$dlu", {"resourceType": "Parameters"}),
                   client.post(f"Patient/{pid}/$fludt", FLUDT), client.post("DocumentReference", pdf))
        for answer in answers:
            assert answer.status_code == 201, answer.get_data(as_text=True)
            report = conformance.check(_cda(client, answer.get_json()), material)
            models.add(report.model)
            failures += [f"{pid} {report.model}: {line}" for line in conformance.lines(report)] if not report.ok else []
    assert not failures, "\n".join(failures[:40])
    assert len(models) == 3
