"""The examples of deploy/ are what the service reads: every setting in the environment example, the OIDC
issuers example loadable by the service."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from dui.auth.oidc import load_issuers

ROOT = Path(__file__).resolve().parents[2]


def test_the_environment_example_names_every_setting() -> None:
    read = set(re.findall(r'"(DUI_[A-Z0-9_]+)"', (ROOT / "dui" / "settings.py").read_text()))
    example = set(re.findall(r"\b(DUI_[A-Z0-9_]+)\b", (ROOT / "deploy" / "dui.env.example").read_text()))
    assert read, "no setting found in dui/settings.py"
    assert read - example == set(), f"settings missing from deploy/dui.env.example: {sorted(read - example)}"
    unknown = sorted(example - read)
    assert not unknown, f"names in deploy/dui.env.example the service does not read: {unknown}"


def test_the_oidc_issuers_example_loads(tmp_path: Path) -> None:
    shutil.copy(ROOT / "deploy" / "oidc-issuers.example.json", tmp_path / "oidc-issuers.json")
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    jwks = {"keys": [{"kty": "RSA", "kid": "psc-1", "n": b64(numbers.n), "e": b64(numbers.e)}]}
    (tmp_path / "psc-jwks.json").write_text(json.dumps(jwks))  # the file the example names, next to it
    issuers = load_issuers(str(tmp_path / "oidc-issuers.json"))
    assert set(issuers) == {"https://auth.esante.gouv.fr/auth/realms/esante-wallet", "https://idp.ehpad-les-tilleuls.fr"}
