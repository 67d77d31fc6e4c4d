"""Where R4 applies its vital-sign profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html).

R4 says that an Observation whose code is one of the vital signs below SHALL conform to the matching profile
(each derived from ``vitalsigns``): category vital-signs, the LOINC code, a subject, an effective time, a
Quantity value in the UCUM unit the profile fixes (or a dataAbsentReason), and for blood pressure its systolic
and diastolic components. ``vital_sign_profiles`` names the profiles an Observation must then meet; other
Observations meet none. The profiles themselves are shipped transcriptions (``definitions/``), standing in for
the official urls until the R4 core package is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["VITAL_SIGNS", "vital_sign_profiles"]

LOINC = "http://loinc.org"
_R4 = "http://hl7.org/fhir/StructureDefinition/"

# LOINC code -> the R4 profile an Observation with that code must conform to.
VITAL_SIGNS: dict[str, str] = {
    "85353-1": _R4 + "vitalspanel",
    "9279-1": _R4 + "resprate",
    "8867-4": _R4 + "heartrate",
    "2708-6": _R4 + "oxygensat",
    "8310-5": _R4 + "bodytemp",
    "8302-2": _R4 + "bodyheight",
    "9843-4": _R4 + "headcircum",
    "29463-7": _R4 + "bodyweight",
    "39156-5": _R4 + "bmi",
    "85354-9": _R4 + "bp",
}


def vital_sign_profiles(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The R4 vital-sign profiles ``resource`` must conform to: those of the LOINC codes of its ``code``."""
    if resource.get("resourceType") != "Observation":
        return ()
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    if not isinstance(codings, list):
        return ()
    found = [VITAL_SIGNS.get(str(c.get("code"))) for c in codings
             if isinstance(c, Mapping) and c.get("system") == LOINC]
    return tuple(dict.fromkeys(url for url in found if url))
