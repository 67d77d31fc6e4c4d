"""dui.crypto without a database: master keys, key files, the body format, settings."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from dui.crypto import envelope
from dui.crypto.envelope import DataKey
from dui.crypto.errors import BodyIntegrityError, KeyUnavailable, MasterKeyError
from dui.crypto.keyring import wrap_context
from dui.crypto.master import (
    DevMasterKeyWarning,
    LocalMasterKey,
    MasterKeyConfigError,
    MasterKeys,
    configured_keys,
    development_keys,
    parse_key,
    read_key_file,
    write_key_file,
)
from dui.settings import EncryptionSettings, Settings, SettingsError

BODY = b'{"resourceType":"Patient","id":"p1","name":[{"family":"Lef\xc3\xa8vre"}]}'
PROD = {"DUI_ENV": "prod", "DUI_BASE_URL": "https://dui.example.org", "DUI_DOCUMENT_OID": "1.2.250.1.999.1"}


def _key(n: int = 1) -> DataKey:
    return DataKey(n, os.urandom(32))


def _b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


# -- the body format -----------------------------------------------------------------------------


def test_a_sealed_body_opens_on_its_own_row_only() -> None:
    key = _key(7)
    stored = envelope.seal(key, BODY, "Patient", 12, 3)
    assert stored[:2] == b"\xd1\x01" and envelope.key_id(stored) == 7
    assert len(stored) == len(BODY) + envelope.OVERHEAD == len(BODY) + 34
    assert b"Lef" not in stored
    assert envelope.open_sealed(key, stored, "Patient", 12, 3) == BODY
    for rtype, rid, version in (("Patient", 13, 3), ("Patient", 12, 4), ("Practitioner", 12, 3)):
        with pytest.raises(BodyIntegrityError, match=f"{rtype} row {rid} version {version} fails its integrity"):
            envelope.open_sealed(key, stored, rtype, rid, version)


def test_two_seals_of_one_body_differ() -> None:
    key = _key()
    assert envelope.seal(key, BODY, "Patient", 1, 1) != envelope.seal(key, BODY, "Patient", 1, 1)


@pytest.mark.parametrize("position", [0, 1, 5, 6, 17, 18, -1])
def test_any_altered_byte_is_detected(position: int) -> None:
    key = _key()
    stored = bytearray(envelope.seal(key, BODY, "Patient", 1, 1))
    stored[position] ^= 0x01
    with pytest.raises(BodyIntegrityError):
        if envelope.key_id(bytes(stored)) != key.id:
            raise BodyIntegrityError("the header names another key")
        envelope.open_sealed(key, bytes(stored), "Patient", 1, 1)


def test_truncated_or_wrong_key_fails() -> None:
    key = _key()
    stored = envelope.seal(key, BODY, "Patient", 1, 1)
    with pytest.raises(BodyIntegrityError):
        envelope.open_sealed(key, stored[:-1], "Patient", 1, 1)
    with pytest.raises(BodyIntegrityError):
        envelope.open_sealed(DataKey(key.id, os.urandom(32)), stored, "Patient", 1, 1)


def test_plaintext_and_unknown_formats() -> None:
    assert envelope.key_id(BODY) is None  # written before encryption: read as is
    with pytest.raises(BodyIntegrityError, match="unknown format"):
        envelope.key_id(b"\x00" * 40)
    with pytest.raises(BodyIntegrityError, match="unknown format"):
        envelope.key_id(b"\xd1\x01short")
    with pytest.raises(BodyIntegrityError, match="format 2"):
        envelope.key_id(b"\xd1\x02" + b"\x00" * 40)
    with pytest.raises(BodyIntegrityError, match="empty"):
        envelope.key_id(b"")


def test_data_keys_do_not_show_their_secret() -> None:
    key = _key()
    assert key.secret.hex() not in repr(key) and str(key.secret) not in repr(key)


# -- master keys ---------------------------------------------------------------------------------


def test_local_master_key_wraps_bound_to_the_data_key_id() -> None:
    master = LocalMasterKey(os.urandom(32))
    secret = os.urandom(32)
    wrapped = master.wrap(secret, wrap_context(5))
    assert secret not in wrapped and master.unwrap(wrapped, wrap_context(5)) == secret
    with pytest.raises(KeyUnavailable, match="cannot unwrap"):
        master.unwrap(wrapped, wrap_context(6))  # copied onto another data_key row
    with pytest.raises(KeyUnavailable, match="cannot unwrap"):
        LocalMasterKey(os.urandom(32)).unwrap(wrapped, wrap_context(5))


def test_master_key_ids_are_stable_distinct_and_say_development() -> None:
    secret = os.urandom(32)
    assert LocalMasterKey(secret).key_id == LocalMasterKey(secret).key_id
    assert LocalMasterKey(secret).key_id.startswith("local:") and len(LocalMasterKey(secret).key_id) <= 64
    assert LocalMasterKey(secret, development=True).key_id.startswith("local-dev:")
    assert LocalMasterKey(secret).key_id != LocalMasterKey(os.urandom(32)).key_id
    assert secret.hex()[:16] not in LocalMasterKey(secret).key_id
    assert _b64(secret) not in repr(LocalMasterKey(secret))


def test_master_keys_find_current_and_previous() -> None:
    current, previous = LocalMasterKey(os.urandom(32)), LocalMasterKey(os.urandom(32))
    masters = MasterKeys(current, (previous,))
    assert masters.find(current.key_id) is current and masters.find(previous.key_id) is previous
    assert masters.find("local:0000") is None and masters.ids == [current.key_id, previous.key_id]


@pytest.mark.parametrize(("text", "message"), [
    ("", "one line"),
    ("abc\ndef\n", "one line"),
    ("not base64!", "not valid base64"),
    (_b64(b"short"), "32 bytes, not 5"),
])
def test_malformed_keys_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(MasterKeyConfigError, match=message) as caught:
        parse_key(text, "DUI_MASTER_KEY")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, SettingsError) and isinstance(caught.value, MasterKeyError)


def test_key_files(tmp_path: Path) -> None:
    secret = os.urandom(32)
    path = tmp_path / "sub" / "master.key"
    write_key_file(path, secret)
    assert path.stat().st_mode & 0o777 == 0o600
    key = read_key_file(path)
    assert key.secret == secret and not key.development
    assert parse_key(f"  {_b64(secret)}  \n", "env").secret == secret
    with pytest.raises(FileExistsError):
        write_key_file(path, os.urandom(32))
    assert read_key_file(path).secret == secret  # never overwritten
    with pytest.raises(MasterKeyConfigError, match="cannot read the master key file"):
        read_key_file(tmp_path / "absent.key")


def test_configured_keys(tmp_path: Path) -> None:
    a, b = os.urandom(32), os.urandom(32)
    write_key_file(tmp_path / "b.key", b)
    assert configured_keys(EncryptionSettings(), prod=False) is None
    masters = configured_keys(EncryptionSettings(master_key=_b64(a), previous_master_key_file=str(tmp_path / "b.key")),
                              prod=True)
    assert masters is not None
    assert masters.current.key_id == LocalMasterKey(a).key_id and masters.ids[1] == LocalMasterKey(b).key_id
    same = configured_keys(EncryptionSettings(master_key=_b64(a), previous_master_key=_b64(a)), prod=False)
    assert same is not None and same.previous == ()
    with pytest.raises(MasterKeyConfigError, match="not both"):
        configured_keys(EncryptionSettings(master_key=_b64(a), master_key_file=str(tmp_path / "b.key")), prod=False)
    with pytest.raises(MasterKeyConfigError, match="needs DUI_MASTER_KEY"):
        configured_keys(EncryptionSettings(previous_master_key=_b64(a)), prod=False)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=lambda mode: f"{mode:04o}")
def test_production_refuses_master_key_files_other_accounts_may_read_or_write(tmp_path: Path, mode: int) -> None:
    current, previous = tmp_path / "current.key", tmp_path / "previous.key"
    write_key_file(current, os.urandom(32))
    write_key_file(previous, os.urandom(32))
    assert current.stat().st_mode & 0o777 == 0o600  # as `dui keys generate` writes them
    both = EncryptionSettings(master_key_file=str(current), previous_master_key_file=str(previous))
    assert configured_keys(both, prod=True) is not None
    for path, name in ((current, "DUI_MASTER_KEY_FILE"), (previous, "DUI_MASTER_KEY_PREVIOUS_FILE")):
        path.chmod(mode)
        with pytest.raises(MasterKeyConfigError) as refused:
            configured_keys(both, prod=True)
        assert str(refused.value) == (f"{name} {path} has mode {mode:04o}: production requires that only its owner "
                                      f"may read it (chmod 600 {path})")
        assert configured_keys(both, prod=False) is not None  # development: not checked
        path.chmod(0o400)
    assert configured_keys(both, prod=True) is not None


def test_development_key_is_generated_once_with_a_warning_and_refused_in_prod(tmp_path: Path) -> None:
    dev_dir = tmp_path / "keys"
    with pytest.warns(DevMasterKeyWarning, match="development master key"):
        first = development_keys(str(dev_dir), prod=False)
    assert first.current.key_id.startswith("local-dev:")
    path = dev_dir / "master-key.dev"
    assert path.read_text().startswith("# DUI DEVELOPMENT MASTER KEY")
    with pytest.warns(DevMasterKeyWarning):
        assert development_keys(str(dev_dir), prod=False).current.key_id == first.current.key_id
    with pytest.raises(MasterKeyConfigError, match="DUI_ENV=prod requires a master key"):
        development_keys(str(dev_dir), prod=True)
    # Copied and named, in the file or in the environment, it is still refused in production.
    copy = tmp_path / "elsewhere.key"
    copy.write_text(path.read_text())
    with pytest.raises(MasterKeyConfigError, match="development key"):
        configured_keys(EncryptionSettings(master_key_file=str(copy)), prod=True)
    line = path.read_text().splitlines()[-1]
    with pytest.raises(MasterKeyConfigError, match="development key"):
        configured_keys(EncryptionSettings(master_key=line), prod=True)
    assert configured_keys(EncryptionSettings(master_key=line), prod=False) is not None
    # A production key that lies in the development folder is refused too.
    write_key_file(dev_dir / "real.key", os.urandom(32))
    with pytest.raises(MasterKeyConfigError, match="development key folder"):
        configured_keys(EncryptionSettings(master_key_file=str(dev_dir / "real.key"), dev_key_dir=str(dev_dir)),
                        prod=True)


def test_workers_starting_together_share_one_development_key(tmp_path: Path) -> None:
    found: list[str] = []

    def start() -> None:
        found.append(development_keys(str(tmp_path), prod=False).current.key_id)

    threads = [threading.Thread(target=start) for _ in range(8)]
    with pytest.warns(DevMasterKeyWarning):  # warning capture is process-wide: one block for every thread
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(found) == 8 and len(set(found)) == 1


# -- settings ------------------------------------------------------------------------------------


def test_settings_read_the_master_key_variables() -> None:
    secret = _b64(os.urandom(32))
    settings = Settings.from_env({"DUI_MASTER_KEY": secret, "DUI_MASTER_KEY_PREVIOUS_FILE": "/k/old.key"})
    assert settings.encryption.master_key == secret
    assert settings.encryption.previous_master_key_file == "/k/old.key"
    assert settings.encryption.dev_key_dir == "var/keys"
    assert secret not in repr(settings)
    assert Settings.from_env({}).encryption == EncryptionSettings()


def test_production_requires_a_master_key() -> None:
    with pytest.raises(SettingsError, match="DUI_ENV=prod requires a master key"):
        Settings.from_env(PROD)
    assert Settings.from_env({**PROD, "DUI_MASTER_KEY_FILE": "/etc/dui/master.key",
                              "DUI_AUDIT_KEY_FILE": "/etc/dui/audit.key"}).is_prod
