"""Loading demo bundles through the FHIR API's own transaction processing."""

from __future__ import annotations

from collections import Counter
from typing import Any

from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirContext, FhirRequest


def load_bundle(ctx: FhirContext, bundle: dict[str, Any]) -> Counter[str]:
    """Run one transaction bundle; count its entries by response status ("201", "200")."""
    request = FhirRequest("POST", "", (), {"content-type": "application/fhir+json", "prefer": "return=minimal"},
                          jsontext.dump(bundle))
    response = router.handle(ctx, request)
    return Counter(entry["response"]["status"].split()[0] for entry in response.body.get("entry", []))
