"""The canonical urls of the service's own definitions: two bases, one rule (docs/profiles.md, "Canonical urls").

What describes the data the service stores and exchanges (its profiles, extensions, code systems and value sets) is
under ``fhir_profiles.CANONICAL``, the same on every deployment: those urls are written into the stored resources and
the documents sent, so two servers, or a database restored elsewhere, must agree on them.

What describes this server's API (``API_TYPES``: its OperationDefinitions and SearchParameters) names no data. It is
published under ``DUI_CANONICAL_BASE`` (``Settings.api_canonical_base``), by default the FHIR base, so that each of
those canonicals is a read on this very server. They ship under ``CANONICAL``; ``api_url`` moves them, for the
served resources (``dui.profiles.catalogue``), the search registry and the CapabilityStatement alike.
"""

from __future__ import annotations

from fhir_profiles import CANONICAL

API_TYPES = ("OperationDefinition", "SearchParameter")
_SHIPPED_API = tuple(f"{CANONICAL}/{rtype}/" for rtype in API_TYPES)


def api_url(url: str, api_base: str) -> str:
    """The canonical under which this server publishes ``url``: one of its own OperationDefinitions or
    SearchParameters (shipped under ``CANONICAL``) moves to ``api_base``; every other url is itself."""
    if url.startswith(_SHIPPED_API):
        return api_base.rstrip("/") + url[len(CANONICAL):]
    return url
