"""The default authorization policy: shared professional secret (CSP L1110-4, L1110-12)."""

from __future__ import annotations

import pytest

from dui.auth.actor import ANONYMOUS, CLI, Actor
from dui.auth.policy import Policy, category, may, readable_types
from dui.auth.roles import ROLES
from dui.auth.scopes import ScopeSet

POLICY = Policy()


def staff(*roles: str, scopes: str = "") -> Actor:
    return Actor("staff", "u1", frozenset(roles), "690002662", scopes=ScopeSet.parse(scopes) if scopes else
                 ScopeSet())


# role -> {type: permissions it has}
MATRIX = {
    "medecin": {"Patient": "crus", "Observation": "cruds", "Condition": "cruds", "MedicationRequest": "cruds",
                "Organization": "crus", "Consent": "crus"},
    "infirmier": {"Patient": "rsu", "Observation": "cruds", "Condition": "rs", "MedicationAdministration": "crus",
                  "MedicationRequest": "rs", "Organization": "rsu", "Consent": "rsu"},
    "aide-soignant": {"Patient": "rs", "Observation": "crus", "AllergyIntolerance": "crus", "Condition": "",
                      "MedicationRequest": "", "DocumentReference": "", "Organization": "rs", "Consent": "rs"},
    "aes-amp": {"Patient": "rs", "Observation": "crus", "CarePlan": "crus", "Condition": "", "Organization": "rs",
                "Consent": "rs"},
    "psychologue": {"Patient": "rs", "Observation": "crus", "QuestionnaireResponse": "crus", "Condition": "",
                    "Organization": "rs", "Consent": "rs"},
    "kinesitherapeute": {"Patient": "rs", "Observation": "crus", "Condition": "rs", "MedicationRequest": "rs",
                         "Organization": "rs", "Consent": "rs"},
    "administratif": {"Patient": "cruds", "Encounter": "cruds", "Observation": "", "Condition": "",
                      "Organization": "cruds", "Consent": "cruds"},
    "direction": {"Patient": "rs", "Observation": "", "Condition": "", "Organization": "rs", "Consent": "rs"},
    "administrateur": {"Patient": "rs", "Provenance": "rs", "Observation": "", "Condition": "", "Organization": "rs",
                       "Consent": "rs"},
}


@pytest.mark.parametrize("role", ROLES)
def test_matrix(role: str) -> None:
    actor = staff(role)
    for rtype, granted in MATRIX[role].items():
        for permission in "cruds":
            assert bool(may(actor, permission, rtype, POLICY)) == (permission in granted), (role, rtype, permission)


def test_unknown_types_are_medical_and_traces_are_never_written() -> None:
    assert category("ImagingStudy") == "medical" and category("Provenance") == "trace"
    for role in ROLES:
        assert not may(staff(role), "c", "Provenance", POLICY)


def test_break_the_glass_reads_medical_data_for_health_professionals_only() -> None:
    assert not may(staff("kinesitherapeute"), "c", "Condition", POLICY, break_glass="urgence")
    decision = may(staff("infirmier"), "r", "DocumentReference", POLICY, break_glass="chute, médecin absent")
    assert decision and not decision.break_glass  # nurses read medical data anyway
    aide = staff("aide-soignant")
    assert not may(aide, "r", "Condition", POLICY, break_glass="urgence")  # not a health professional
    physio = staff("kinesitherapeute")
    assert not may(physio, "c", "MedicationRequest", POLICY, break_glass="urgence")  # reading only
    assert not may(physio, "r", "Observation", Policy.with_overrides({"default": {"kinesitherapeute": {"care": ""}}}),
                   break_glass="  ")


def test_token_scopes_narrow_a_role_and_bind_clients() -> None:
    narrowed = staff("medecin", scopes="user/Observation.rs")
    assert may(narrowed, "r", "Observation", POLICY) and not may(narrowed, "r", "Condition", POLICY)
    client = Actor("client", "hospital", scopes=ScopeSet.parse("system/Patient.rs system/Observation.r"))
    assert may(client, "s", "Patient", POLICY) and may(client, "r", "Observation", POLICY)
    assert not may(client, "s", "Observation", POLICY) and not may(client, "c", "Patient", POLICY)


def test_establishment_overrides() -> None:
    policy = Policy.with_overrides({"690002662": {"direction": {"care": "rs"}},
                                    "default": {"psychologue": {"Condition": "rs"}}})
    assert may(staff("direction"), "r", "Observation", policy)
    other = Actor("staff", "u2", frozenset({"direction"}), "010000016")
    assert not may(other, "r", "Observation", policy)
    assert may(staff("psychologue"), "r", "Condition", policy)
    for bad in ({"default": {"chef": {}}}, {"12": {}}, {"default": {"medecin": {"care": "rwx"}}},
                {"default": {"medecin": {"soins": "r"}}}):
        with pytest.raises(ValueError):
            Policy.with_overrides(bad)


def test_unrestricted_actors_and_readable_types() -> None:
    assert may(CLI, "d", "Condition", POLICY) and may(ANONYMOUS, "c", "Condition", POLICY)
    assert readable_types(CLI, ["Patient", "Condition"], POLICY) is None
    assert readable_types(staff("aide-soignant"), ["Patient", "Condition", "Observation"], POLICY) == [
        "Patient", "Observation"]


def test_policy_file_is_read_at_start_and_refused_when_wrong(tmp_path: object) -> None:
    from pathlib import Path

    from dui.services import load_policy
    from dui.settings import SettingsError

    folder = Path(str(tmp_path))
    good = folder / "policy.json"
    good.write_text('{"690002662": {"direction": {"care": "rs"}}}', encoding="utf-8")
    assert may(Actor("staff", "d", frozenset({"direction"}), "690002662"), "r", "Observation", load_policy(str(good)))
    bad = folder / "bad.json"
    bad.write_text('{"default": {"chef": {}}}', encoding="utf-8")
    with pytest.raises(SettingsError, match="unknown role 'chef'"):
        load_policy(str(bad))
    with pytest.raises(SettingsError, match="DUI_POLICY_FILE"):
        load_policy(str(folder / "missing.json"))
    assert load_policy(None) == Policy()
