"""Tokens without a database: scopes, key sets, the server's key, access tokens, client assertions, OIDC
issuers, passwords, FINESS, settings. Every refusal named in docs/security.md is checked with its reason."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dui.auth import passwords
from dui.auth.accounts import ApiClient
from dui.auth.actor import Actor
from dui.auth.assertions import verify_assertion
from dui.auth.finess import check_finess
from dui.auth.jwks import JwksError, key_for, validate_jwks
from dui.auth.keys import DEV_MARKER, DevKeyWarning, SigningKeyError, load_signing_key
from dui.auth.oidc import load_issuers
from dui.auth.scopes import Scope, ScopeError, ScopeSet
from dui.auth.tokens import TokenError, TokenIssuer
from dui.settings import Settings, SettingsError
from tests.authkit import (
    PSC_AUDIENCE,
    PSC_ISSUER,
    TILLEULS,
    assertion,
    client_jwks,
    ec256,
    ec384,
    hmac_signed,
    other_ec384,
    other_rsa2048,
    psc_config,
    psc_token,
    public_jwk,
    rsa2048,
    sign,
    unsigned,
)

TOKEN_URL = "https://dui.test/auth/token"
NOW = datetime.now(UTC)

# -- scopes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "context", "rtype", "perms", "v1"), [
    ("system/Patient.read", "system", "Patient", "rs", True),
    ("system/*.write", "system", "*", "cud", True),
    ("system/Observation.*", "system", "Observation", "cruds", True),
    ("system/Observation.rs", "system", "Observation", "rs", False),
    ("system/*.cruds", "system", "*", "cruds", False),
    ("user/Patient.cu", "user", "Patient", "cu", False),
    ("patient/Observation.s", "patient", "Observation", "s", False),
])
def test_scopes_v1_and_v2_parse_into_permissions(text: str, context: str, rtype: str, perms: str, v1: bool) -> None:
    scope = Scope.parse(text)
    assert (scope.context, scope.resource_type, scope.permissions, scope.v1) == (context, rtype, perms, v1)
    assert str(scope) == text


@pytest.mark.parametrize(("text", "reason"), [
    ("system/Observation.sr", "in that order"),
    ("system/Observation.rr", "in that order"),
    ("system/Observation.x", "in that order"),
    ("admin/Patient.read", "unknown scope context"),
    ("system/patient.read", "not a SMART resource scope"),
    ("system/Observation.rs?category=vital-signs", "granular"),
    ("openid", "not a SMART resource scope"),
    ("launch/patient", "not a SMART resource scope"),
    ("system/Patient", "not a SMART resource scope"),
])
def test_scopes_refused_say_why(text: str, reason: str) -> None:
    with pytest.raises(ScopeError, match=reason):
        ScopeSet.parse(text)


def test_granted_scopes_are_the_requested_ones_the_registration_covers() -> None:
    registered = ScopeSet.parse("system/Patient.rs system/Observation.cruds")
    assert str(ScopeSet.parse("system/Patient.read").grant(registered)) == "system/Patient.read"
    assert str(ScopeSet.parse("system/Patient.cruds").grant(registered)) == "system/Patient.rs"
    assert str(ScopeSet.parse("system/*.rs").grant(registered)) == "system/Patient.rs system/Observation.rs"
    assert str(ScopeSet.parse("system/Observation.write").grant(registered)) == "system/Observation.write"
    assert not ScopeSet.parse("system/Condition.rs").grant(registered)
    assert not ScopeSet.parse("user/Patient.rs").grant(registered)  # another context
    wildcard = ScopeSet.parse("system/*.rs")
    assert str(ScopeSet.parse("system/Condition.read system/Patient.c").grant(wildcard)) == "system/Condition.read"
    granted = ScopeSet.parse("system/Patient.rs system/Patient.read").grant(registered)
    assert len(granted) == 1 and granted.allows("Patient", "r") and not granted.allows("Patient", "c")
    assert granted.allows("Patient", "s", context="system") and not granted.allows("Patient", "s", context="user")


# -- key sets -----------------------------------------------------------------------------------------------


def test_a_client_key_set_holds_public_signing_keys_with_kids() -> None:
    assert len(validate_jwks(client_jwks())["keys"]) == 2
    private = jwt.algorithms.ECAlgorithm.to_jwk(ec384(), as_dict=True) | {"kid": "p"}
    cases: list[tuple[Any, str]] = [
        ({"keys": [private]}, "private members"),
        ({"keys": [{k: v for k, v in public_jwk(ec384(), "x").items() if k != "kid"}]}, "no kid"),
        ({"keys": [public_jwk(ec384(), "a"), public_jwk(ec256(), "a")]}, "twice"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "private members"),
        ({"keys": [{"kty": "oct", "kid": "s"}]}, "kty 'oct'"),
        ({"keys": [public_jwk(ec384(), "a", "ES256")]}, "no accepted algorithm"),
        ({"keys": [public_jwk(ec384(), "a") | {"use": "enc"}]}, "use 'enc'"),
        ({"keys": [public_jwk(rsa2048(), "a", "HS256")]}, "alg 'HS256'"),
        ({"keys": [public_jwk(ec384(), "a") | {"x": "AAAA"}]}, "not a valid EC public key"),
        ({"keys": []}, "at least one key"),
        ([], "JSON object"),
    ]
    for doc, reason in cases:
        with pytest.raises(JwksError, match=reason):
            validate_jwks(doc)
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwksError, match="1024 bits"):
        validate_jwks({"keys": [public_jwk(small, "small")]})


def test_key_for_finds_the_kid_and_refuses_a_key_of_another_kind() -> None:
    jwks = client_jwks()
    assert key_for(jwks, "ec-1", "ES384").key_id == "ec-1"
    assert key_for(jwks, "rsa-1", "RS256").key_id == "rsa-1"
    with pytest.raises(JwksError, match="unknown key"):
        key_for(jwks, "nope", "ES384")
    with pytest.raises(JwksError, match="cannot verify RS384"):
        key_for(jwks, "ec-1", "RS384")
    with pytest.raises(JwksError, match="cannot verify ES256"):
        key_for(jwks, "ec-1", "ES256")  # a P-384 key
    with pytest.raises(JwksError, match="not accepted"):
        key_for(jwks, "rsa-1", "PS256")


# -- the server's signing key -----------------------------------------------------------------------------------


def test_development_key_is_generated_once_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(DevKeyWarning, match="development key"):
        first = load_signing_key(None, str(tmp_path), prod=False)
    with pytest.warns(DevKeyWarning):
        again = load_signing_key(None, str(tmp_path), prod=False)
    assert first.kid == again.kid and first.path == tmp_path / "signing-key.pem"
    assert DEV_MARKER in first.path.read_text()
    assert first.public_jwk()["crv"] == "P-256" and "d" not in first.public_jwk()


def test_production_refuses_a_missing_key_and_the_development_key(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="DUI_AUTH_SIGNING_KEY is not set"):
        load_signing_key(None, str(tmp_path), prod=True)
    with pytest.warns(DevKeyWarning):
        dev = load_signing_key(None, str(tmp_path / "dev"), prod=False)
    copied = tmp_path / "elsewhere.pem"
    copied.write_bytes(dev.path.read_bytes())
    for path in (dev.path, copied):
        with pytest.raises(SigningKeyError, match="development key"):
            load_signing_key(str(path), str(tmp_path / "dev"), prod=True)
    # the same key without the marker, but still in the development folder
    bare = tmp_path / "dev" / "renamed.pem"
    bare.write_bytes(b"".join(line for line in dev.path.read_bytes().splitlines(keepends=True)
                              if not line.startswith(b"#")))
    with pytest.raises(SigningKeyError, match="development key"):
        load_signing_key(str(bare), str(tmp_path / "dev"), prod=True)


def test_production_key_must_be_an_ec_p256_pem(tmp_path: Path) -> None:
    good = tmp_path / "signing.pem"
    good.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    good.chmod(0o600)
    assert load_signing_key(str(good), str(tmp_path / "dev"), prod=True).algorithm == "ES256"
    wrong = tmp_path / "p384.pem"
    wrong.write_bytes(ec384().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    wrong.chmod(0o600)
    with pytest.raises(SigningKeyError, match="P-256"):
        load_signing_key(str(wrong), str(tmp_path / "dev"), prod=True)
    (tmp_path / "junk.pem").write_text("not a key")
    (tmp_path / "junk.pem").chmod(0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM"):
        load_signing_key(str(tmp_path / "junk.pem"), str(tmp_path / "dev"), prod=True)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(str(tmp_path / "absent.pem"), str(tmp_path / "dev"), prod=True)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602], ids=lambda mode: f"{mode:04o}")
def test_production_refuses_a_key_file_other_accounts_may_read_or_write(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "signing.pem"
    key.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(mode)
    with pytest.raises(SigningKeyError) as refused:
        load_signing_key(str(key), str(tmp_path / "dev"), prod=True)
    assert str(refused.value) == (f"DUI_AUTH_SIGNING_KEY {key} has mode {mode:04o}: production requires that only "
                                  f"its owner may read it (chmod 600 {key})")
    assert load_signing_key(str(key), str(tmp_path / "dev"), prod=False).algorithm == "ES256"  # dev: not checked
    for private in (0o600, 0o400):
        key.chmod(private)
        assert load_signing_key(str(key), str(tmp_path / "dev"), prod=True).algorithm == "ES256"


# -- access tokens -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    path = tmp_path_factory.mktemp("key") / "k.pem"
    path.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    key = load_signing_key(str(path), "var/none", prod=True)
    return TokenIssuer(key, "https://dui.test", "https://dui.test/fhir", 300)


CLIENT = Actor("client", "c-1", frozenset(), TILLEULS, scopes=ScopeSet.parse("system/Patient.rs"), client_id="c-1",
               auth_method="private_key_jwt")


def test_access_token_round_trip_gives_back_the_actor(issuer: TokenIssuer) -> None:
    issued = issuer.issue(CLIENT, NOW)
    assert issued.expires_in == 300
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "ES256" and header["kid"] == issuer.key.kid
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert {"iss", "aud", "sub", "iat", "exp", "jti", "scope", "client_id", "kind", "roles",
            "establishment"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 300 and claims["aud"] == "https://dui.test/fhir"
    actor = issuer.verify(issued.token, NOW)
    assert (actor.kind, actor.id, actor.establishment, actor.client_id) == ("client", "c-1", TILLEULS, "c-1")
    assert actor.scopes == CLIENT.scopes and actor.token_id == issued.jti and actor.auth_method == "private_key_jwt"
    staff = Actor("staff", "ide.martin", frozenset({"infirmier"}), TILLEULS, scopes=ScopeSet.parse("user/*.cruds"),
                  auth_method="password")
    back = issuer.verify(issuer.issue(staff, NOW).token, NOW)
    assert back.roles == {"infirmier"} and back.kind == "staff" and back.client_id is None


def _claims(issuer: TokenIssuer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "c-1", "iat": now, "exp": now + 300,
              "jti": "j", "scope": "system/Patient.rs", "kind": "client", "roles": []}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


class Later(int):
    """A time claim given relative to when the test runs (parametrize values are made at collection: a long
    suite would turn "in 600 s" into the past)."""


@pytest.mark.parametrize(("changes", "reason"), [
    ({"exp": Later(-120)}, "expired"),
    ({"iat": Later(600), "exp": Later(900)}, "not yet valid"),
    ({"nbf": Later(600)}, "not yet valid"),
    ({"aud": "https://other.test/fhir"}, "wrong audience"),
    ({"iss": "https://other.test"}, "wrong issuer"),
    ({"exp": None}, "exp claim is missing"),
    ({"jti": None}, "jti claim is missing"),
    ({"kind": "anonymous"}, "does not name"),
    ({"scope": "openid"}, "scope claim"),
    ({"exp": "tomorrow"}, "must be a number"),
])
def test_access_tokens_refused_with_their_reason(issuer: TokenIssuer, changes: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    changes = {k: now + int(v) if isinstance(v, Later) else v for k, v in changes.items()}
    token = sign(_claims(issuer, **changes), issuer.key.private_key, "ES256", issuer.key.kid)
    with pytest.raises(TokenError, match=reason):
        issuer.verify(token, datetime.now(UTC))


def test_forged_access_tokens_are_refused(issuer: TokenIssuer) -> None:
    claims = _claims(issuer)
    now = datetime.now(UTC)
    forged = sign(claims, ec.generate_private_key(ec.SECP256R1()), "ES256", issuer.key.kid)
    pem = issuer.key.public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    good = issuer.issue(CLIENT, NOW).token
    head, payload, signature = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"c-1"', b'"c-2"')).decode()
    for token, reason in [
        (forged, "bad signature"),
        (f"{head}.{tampered_payload}.{signature}", "bad signature"),
        (sign(claims, issuer.key.private_key, "ES256", "another-kid"), "unknown key"),
        (unsigned(claims, kid=issuer.key.kid), "alg: none"),
        (hmac_signed(claims, pem, kid=issuer.key.kid), "HS256"),
        ("abc.def", "malformed"),
        ("a" * 20000, "too large"),
        ("e30.e30.e30", "alg: none"),  # {} header
    ]:
        with pytest.raises(TokenError, match=reason):
            issuer.verify(token, now)


# -- client assertions ----------------------------------------------------------------------------------------


def _client(enabled: bool = True) -> ApiClient:
    return ApiClient("c-1", "Hôpital", ScopeSet.parse("system/*.rs"), client_jwks(), None, enabled, 0)


def _verify(token: str, client: ApiClient | None = None) -> Any:
    known = client or _client()
    return verify_assertion(token, TOKEN_URL, lambda cid: known if cid == known.client_id else None,
                            datetime.now(UTC))


def test_a_client_assertion_signed_es384_rs384_or_rs256_authenticates_the_client() -> None:
    rsa_kw = {"key": rsa2048(), "kid": "rsa-1"}
    for kw in ({}, {**rsa_kw, "alg": "RS384"}, {**rsa_kw, "alg": "RS256"}):
        verified = _verify(assertion("c-1", TOKEN_URL, jti="j-1", **kw))
        assert verified.client.client_id == "c-1" and verified.jti == "j-1"
        assert verified.expires_at > time.time()


@pytest.mark.parametrize(("kw", "reason"), [
    ({"sub": "c-2"}, "sub must equal iss"),
    ({"iss": "c-9", "sub": "c-9"}, "unknown client"),
    ({"aud": "https://dui.test/fhir"}, "wrong audience"),
    ({"exp_in": 900}, "more than 5 minutes ahead"),
    ({"exp_in": -120}, "expired"),
    ({"drop": ("exp",)}, "exp claim is missing"),
    ({"drop": ("jti",)}, "jti claim is missing"),
    ({"jti": "x" * 300}, "jti claim must be"),
    ({"kid": "unknown"}, "unknown key"),
    ({"kid": None}, "no kid"),
    ({"key": other_ec384()}, "bad signature"),
    ({"key": rsa2048(), "alg": "RS384", "kid": "ec-1"}, "cannot verify RS384"),
    ({"key": rsa2048(), "alg": "PS384", "kid": "rsa-1"}, "PS384 not accepted"),
    ({"key": ec256(), "alg": "ES256", "kid": "ec-1"}, "cannot verify ES256"),
])
def test_client_assertions_refused_with_their_reason(kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        _verify(assertion("c-1", TOKEN_URL, **kw))


def test_unsigned_hmac_and_disabled_client_assertions_are_refused() -> None:
    now = int(time.time())
    claims = {"iss": "c-1", "sub": "c-1", "aud": TOKEN_URL, "exp": now + 60, "jti": "j"}
    with pytest.raises(TokenError, match="alg: none"):
        _verify(unsigned(claims))
    with pytest.raises(TokenError, match="HS256"):
        _verify(hmac_signed(claims, b"any secret"))
    with pytest.raises(TokenError, match="disabled client"):
        _verify(assertion("c-1", TOKEN_URL), _client(enabled=False))


# -- OIDC issuers ----------------------------------------------------------------------------------------------


def test_a_psc_token_becomes_a_staff_actor(tmp_path: Path) -> None:
    issuers = load_issuers(str(psc_config(tmp_path)))
    psc = issuers[PSC_ISSUER]
    actor = psc.actor(psc_token(), datetime.now(UTC))
    assert (actor.kind, actor.id, actor.roles, actor.establishment) == ("staff", "810001234567", {"medecin"}, TILLEULS)
    assert actor.auth_method == "oidc" and actor.issuer == PSC_ISSUER and str(actor.scopes) == "user/*.cruds"
    assert psc.actor(psc_token(profession="60"), datetime.now(UTC)).roles == {"infirmier"}
    idp = issuers["https://idp.ehpad.test"]
    now = int(time.time())
    token = sign({"iss": idp.issuer, "aud": "dui", "sub": "u-7", "acr": "mfa", "exp": now + 60,
                  "dui_roles": ["aide-soignant", "unknown"]}, ec256(), "ES256", "idp-1")
    staff = idp.actor(token, datetime.now(UTC))
    assert staff.roles == {"aide-soignant"} and staff.establishment == TILLEULS


@pytest.mark.parametrize(("kw", "reason"), [
    ({"acr": "eidas0"}, "insufficient assurance level"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"exp_in": -120}, "expired"),
    ({"kid": "psc-2"}, "unknown key"),
    ({"key": "other"}, "bad signature"),
    ({"profession": "21"}, "no DUI role"),
    ({"structure": "123"}, "not a FINESS"),
])
def test_psc_tokens_refused_with_their_reason(tmp_path: Path, kw: dict[str, Any], reason: str) -> None:
    psc = load_issuers(str(psc_config(tmp_path)))[PSC_ISSUER]
    if kw.get("key") == "other":
        kw["key"] = other_rsa2048()
    with pytest.raises(TokenError, match=reason):
        psc.actor(psc_token(**kw), datetime.now(UTC))


def test_issuers_file_is_checked_at_start_up(tmp_path: Path) -> None:
    import json

    good = json.loads(psc_config(tmp_path).read_text())["issuers"][0]
    cases = [
        ({**good, "issuer": "http://psc.test"}, "https URL"),
        ({k: v for k, v in good.items() if k != "acr_values"}, "acr_values"),
        ({**good, "role_map": {"10": "chirurgien"}}, "unknown role"),
        ({**good, "jwks": {"keys": [jwt.algorithms.RSAAlgorithm.to_jwk(rsa2048(), as_dict=True) | {"kid": "k"}]}},
         "private members"),
        ({**good, "algorithms": ["HS256"]}, "not accepted"),
        ({**good, "colour": "blue"}, "unknown field"),
        ({k: v for k, v in good.items() if k != "establishment_claim"}, "establishment"),
        ({**good, "scopes": "system/*.rs"}, "user/ scopes"),
    ]
    for item, reason in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"issuers": [item]}))
        with pytest.raises(SettingsError, match=reason):
            load_issuers(str(path))
    with pytest.raises(SettingsError, match="cannot read"):
        load_issuers(str(tmp_path / "absent.json"))
    assert load_issuers(None) == {}
    assert PSC_AUDIENCE in load_issuers(str(psc_config(tmp_path)))[PSC_ISSUER].audiences


# -- passwords, FINESS, settings ------------------------------------------------------------------------------


def test_password_strength_rules() -> None:
    passwords.check_strength("Tilleuls-2026!", "ide.martin")
    passwords.check_strength("correct horse battery staple", "ide.martin")  # a passphrase
    for weak, reason in [("Short-1a", "at least 12"), ("aaaaaaaaaaaaaaaa", "too few different"),
                         ("ide.martin-2026-X", "contain the login"), ("tilleulsdeuxmille", "three of"),
                         ("x" * 2000, "at most")]:
        with pytest.raises(passwords.WeakPassword, match=reason):
            passwords.check_strength(weak, "ide.martin")


def test_password_hashes_are_salted_scrypt_with_their_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = passwords.Cost(log2_n=10, r=8, p=1)
    stored = passwords.hash_password("Tilleuls-2026!", cheap)
    assert stored.startswith("scrypt$10$8$1$") and stored != passwords.hash_password("Tilleuls-2026!", cheap)
    assert passwords.verify_password("Tilleuls-2026!", stored)
    assert not passwords.verify_password("Tilleuls-2026?", stored)
    assert passwords.needs_rehash(stored) and not passwords.needs_rehash(passwords.hash_password("x", passwords.COST))
    compared: list[int] = []
    real = passwords.hmac.compare_digest
    monkeypatch.setattr(passwords.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    assert not passwords.verify_password("anything", None)  # no account: a dummy hash is still computed and compared
    assert not passwords.verify_password("anything", "garbage")
    assert len(compared) == 2


def test_finess_numbers() -> None:
    assert check_finess(TILLEULS) == TILLEULS
    for bad, reason in [("690001424", "key"), ("69000142", "9 characters"), ("69000142A", "9 characters")]:
        with pytest.raises(ValueError, match=reason):
            check_finess(bad)


def test_authentication_settings() -> None:
    dev = Settings.from_env({})
    assert dev.auth.allow_anonymous is True and dev.auth.password_grant is True and dev.auth.token_lifetime == 300
    prod_env = {"DUI_ENV": "prod", "DUI_BASE_URL": "https://dui.example", "DUI_MASTER_KEY_FILE": "/k",
                "DUI_AUDIT_KEY_FILE": "/a", "DUI_DOCUMENT_OID": "1.2.250.1.999.1"}
    prod = Settings.from_env(prod_env)
    assert prod.auth.allow_anonymous is False and prod.auth.password_grant is False
    assert Settings.from_env({**prod_env, "DUI_AUTH_PASSWORD_GRANT": "on"}).auth.password_grant is True
    with pytest.raises(SettingsError, match="DUI_AUTH_ALLOW_ANONYMOUS is refused"):
        Settings.from_env({**prod_env, "DUI_AUTH_ALLOW_ANONYMOUS": "true"})
    with pytest.raises(SettingsError, match="DUI_AUTH_TOKEN_LIFETIME must be at least 30"):
        Settings.from_env({"DUI_AUTH_TOKEN_LIFETIME": "5"})
    with pytest.raises(SettingsError, match="between 30 and 3600"):
        Settings.from_env({"DUI_AUTH_TOKEN_LIFETIME": "86400"})
    assert Settings.from_env({"DUI_AUTH_SIGNING_KEY": "/etc/dui/k.pem"}).auth.signing_key == "/etc/dui/k.pem"
