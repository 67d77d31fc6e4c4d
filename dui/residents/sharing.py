"""The one gate for sharing: the matricule INS leaves the system only when the identity is qualified.

Every adapter that sends resident data out goes through this module: the FHIR API for actors outside
the establishment (``GatedRepository``, installed by ``Services.fhir_context``), and the document,
DMP, MSSanté and export adapters (``shareable_patient``, ``require_shareable_ins``). A non-qualified
identity goes out with its traits and without any INS identifier (RNIV; FR Core fr-core-1).

API clients (partner systems) and anonymous callers count as outside the establishment; staff, the CLI
administrator and the system itself are inside.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dui.auth.actor import Actor
from dui.errors import Unprocessable
from dui.fhir import jsontext
from dui.fhir.repository import FhirRepository, HistoryPage, ResourceVersion
from dui.residents import mapping
from ins.status import IdentityStatus

# Every INS OID starts with this (NIR, NIA, TEST, DEMO): a Patient body without it has no INS.
_INS_OID_PREFIX = b"1.2.250.1.213.1.4."
INTERNAL_ACTORS = frozenset({"cli", "system", "staff"})


def is_external(actor: Actor) -> bool:
    """True for actors outside the establishment's care team (partners, anonymous callers)."""
    return actor.kind not in INTERNAL_ACTORS


def may_share_ins(patient: dict[str, Any]) -> bool:
    return mapping.status_of(patient).may_share_ins


def shareable_patient(patient: dict[str, Any]) -> dict[str, Any]:
    """The Patient as it may leave the system: without INS identifiers unless the identity is qualified."""
    if may_share_ins(patient) or not mapping.ins_identifiers(patient):
        return patient
    drop = {i.index for i in mapping.ins_identifiers(patient)}
    out = copy.deepcopy(patient)
    out["identifier"] = [ident for n, ident in enumerate(patient.get("identifier") or []) if n not in drop]
    if not out["identifier"]:
        del out["identifier"]
    return out


def transferable_patient(patient: dict[str, Any]) -> dict[str, Any]:
    """The Patient as another system will hold it (a transfer: TDDUI): ``shareable_patient``, and when the INS is
    withheld, the identity restated on the evidence that travels with it. An identity récupérée (INSi result, no
    document check) then arrives provisoire, as its receiver cannot rest it on an INS it was not given."""
    out = shareable_patient(patient)
    if out is patient or mapping.active_ins(out) is not None:
        return out
    evidence = mapping.evidence_of(out)
    kept = replace(evidence, insi_date=None)
    return mapping.with_identity(out, kept.status, kept) if kept.status is not evidence.status else out


def require_shareable_ins(patient: dict[str, Any]) -> mapping.InsIdentifierAt:
    """The INS to reference a shared document with (DMP, MSSanté); 422 when the identity is not qualified."""
    status = mapping.status_of(patient)
    ins = mapping.active_ins(patient)
    if status is not IdentityStatus.QUAL or ins is None:
        raise Unprocessable(f"The resident's identity is {status.label.lower()}: the INS may be shared only once "
                            "the identity is qualified (INSi result and high-trust identity document)",
                            code="business-rule", expression="Patient.identifier")
    return ins


def restore_withheld(incoming: dict[str, Any], stored: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """Put back the INS identifiers the gate withheld from ``actor``: what it could not see, it cannot remove."""
    if not is_external(actor) or may_share_ins(stored) or mapping.ins_identifiers(incoming):
        return incoming
    withheld = [ident for ident in stored.get("identifier") or []
                if isinstance(ident, dict) and ident in _ins_identifier_values(stored)]
    if not withheld:
        return incoming
    out = copy.deepcopy(incoming)
    out["identifier"] = [*withheld, *(incoming.get("identifier") or [])]
    return out


def _ins_identifier_values(patient: dict[str, Any]) -> list[dict[str, Any]]:
    identifiers = patient.get("identifier") or []
    return [identifiers[i.index] for i in mapping.ins_identifiers(patient)]


def gate_version(version: ResourceVersion) -> ResourceVersion:
    """``version`` as it may go out: a Patient's INS removed unless its identity is qualified.

    A stored version never changes, so the answer is kept per (row, version) with a hash of the body it was
    made for: a Patient read again costs a hash and a lookup instead of a parse, and a body the answer was
    not made for (another database, a restore) is decided afresh.
    """
    body = version.body
    if version.type != "Patient" or body is None or _INS_OID_PREFIX not in body:
        return version
    key, digest = (version.rid, version.version), hash(body)
    with _decisions_lock:
        known = _decisions.get(key)
        if known is not None:
            _decisions.move_to_end(key)
    if known is None or known[0] != digest:
        patient = version.resource()
        shared = shareable_patient(patient)
        known = (digest, b"" if shared is patient else jsontext.dump(shared))
        with _decisions_lock:
            _decisions[key] = known
            if len(_decisions) > _DECISIONS_KEPT:
                _decisions.popitem(last=False)
    return version if known[1] == b"" else replace(version, body=known[1])


# (row id, version) -> (hash of the stored body, b"" when it may go out as it is, else the body that may)
_decisions: OrderedDict[tuple[int, int], tuple[int, bytes]] = OrderedDict()
_decisions_lock = threading.Lock()
_DECISIONS_KEPT = 20_000


def visible(actor: Actor, version: ResourceVersion) -> ResourceVersion:
    """``version`` as ``actor`` may see it (for operation outputs built from the store)."""
    return gate_version(version) if is_external(actor) else version


class GatedRepository:
    """A ``FhirRepository`` whose every returned Patient has passed the sharing gate."""

    def __init__(self, inner: FhirRepository) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, rtype: str, rid: str) -> ResourceVersion | None:
        found = self.inner.read(rtype, rid)
        return None if found is None else gate_version(found)

    def vread(self, rtype: str, rid: str, version: int) -> ResourceVersion | None:
        found = self.inner.vread(rtype, rid, version)
        return None if found is None else gate_version(found)

    def fetch(self, rids: Sequence[int]) -> list[ResourceVersion]:
        return [gate_version(v) for v in self.inner.fetch(rids)]

    def history(self, **kwargs: Any) -> HistoryPage:
        page = self.inner.history(**kwargs)
        return replace(page, versions=[gate_version(v) for v in page.versions])

    def create(self, rtype: str, resource: dict[str, Any], **kwargs: Any) -> ResourceVersion:
        return gate_version(self.inner.create(rtype, resource, **kwargs))

    def update(self, *args: Any, **kwargs: Any) -> ResourceVersion:
        return gate_version(self.inner.update(*args, **kwargs))

    def delete(self, *args: Any, **kwargs: Any) -> ResourceVersion:
        return gate_version(self.inner.delete(*args, **kwargs))
