"""The audit key: the secret that seals the audit trail's chain (``hash = HMAC-SHA256(key, ...)``).

The database never holds it, so whoever can write to the database cannot recompute the chain after changing an
entry. It is a key file of the same format as the master key's (one base64 line of 32 bytes, ``#`` comments;
``dui keys generate --audit FILE``), named by ``DUI_AUDIT_KEY_FILE``; after rotations the keys it replaced,
``DUI_AUDIT_KEY_PREVIOUS_FILE`` (comma-separated files), verify the entries they sealed and seal nothing. Each
sealed entry records the id of the key that sealed it (``audit:`` and 16 hex digits of an HMAC of the key: it
does not reveal the key).

In development, with no key configured, one is generated on first use in ``var/keys/audit-key.dev`` with a
``DevAuditKeyWarning``; its line starts with ``dev:``, and ``DUI_ENV=prod`` refuses it, any key file in that
folder, and a key file that accounts other than its owner may read (``dui.keyfiles.require_private``).
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dui.crypto.master import (
    KEY_BYTES,
    KeySet,
    development_key_path,
    in_development_folder,
    parse_key_line,
    read_key_text,
)
from dui.keyfiles import require_private
from dui.settings import Settings, SettingsError

DEV_KEY_NAME = "audit-key.dev"


class AuditKeyError(SettingsError):
    """The audit key configuration is unusable (the CLI reports it as a configuration error)."""


class DevAuditKeyWarning(UserWarning):
    """A development secret is in use: the audit key was generated on this machine."""


@dataclass(frozen=True)
class AuditKey:
    secret: bytes = field(repr=False)
    development: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise AuditKeyError(f"an audit key is {KEY_BYTES} bytes, not {len(self.secret)}")

    @property
    def key_id(self) -> str:
        """Stable and not secret (at most 64 characters): recorded on every entry the key seals."""
        digest = hmac.new(self.secret, b"dui audit key id", hashlib.sha256).hexdigest()[:16]
        return f"audit-dev:{digest}" if self.development else f"audit:{digest}"

    def mac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()


class AuditKeys(KeySet[AuditKey]):
    """``current`` seals; ``previous`` (the keys replaced by rotations) only verify what they sealed."""


def read_audit_key(path: str | Path, name: str = "DUI_AUDIT_KEY_FILE") -> AuditKey:
    text = read_key_text(path, "audit key", AuditKeyError)
    secret, development = parse_key_line(text, f"{name} ({path})", AuditKeyError)
    return AuditKey(secret, development, str(path))


def audit_keys(settings: Settings) -> AuditKeys:
    """The audit keys of this configuration, read and checked now; in ``dev`` without any, the development key
    (generated on first use, with a warning)."""
    conf = settings.audit
    dev_dir = settings.encryption.dev_key_dir
    if conf.key_file is None:
        if conf.previous_key_files:
            raise AuditKeyError("DUI_AUDIT_KEY_PREVIOUS_FILE needs DUI_AUDIT_KEY_FILE")
        return development_audit_keys(dev_dir, prod=settings.is_prod)
    current = _configured(conf.key_file, "DUI_AUDIT_KEY_FILE", settings.is_prod, dev_dir)
    previous: dict[str, AuditKey] = {}
    for path in conf.previous_key_files:
        key = _configured(path, "DUI_AUDIT_KEY_PREVIOUS_FILE", settings.is_prod, dev_dir)
        if key.key_id != current.key_id:
            previous.setdefault(key.key_id, key)
    return AuditKeys(current, tuple(previous.values()))


def check_configured(settings: Settings) -> None:
    """Refuse now, with one line, a configured audit key that is unreadable or, in ``prod``, a development key or
    a file others may read (``dui serve`` calls it before starting any worker). Generates nothing."""
    if settings.audit.key_file is not None or settings.is_prod:
        audit_keys(settings)


def development_audit_keys(dev_dir: str, *, prod: bool) -> AuditKeys:
    if prod:
        raise AuditKeyError("DUI_ENV=prod requires an audit key: set DUI_AUDIT_KEY_FILE (create one with "
                            "`dui keys generate --audit FILE`)")
    path = Path(dev_dir) / DEV_KEY_NAME
    warnings.warn(f"DUI_AUDIT_KEY_FILE is not set: the audit trail is sealed with a development audit key in {path} "
                  "(development only)", DevAuditKeyWarning, stacklevel=3)
    return AuditKeys(read_audit_key(development_key_path(dev_dir, DEV_KEY_NAME, "audit key")))


def _configured(path: str, name: str, prod: bool, dev_dir: str) -> AuditKey:
    if prod:
        if in_development_folder(path, dev_dir):
            raise AuditKeyError(f"{name} ({path}) lies in the development key folder {dev_dir}: production refuses "
                                "it; create one with `dui keys generate --audit FILE`")
        require_private(path, name)
    key = read_audit_key(path, name)
    if prod and key.development:
        raise AuditKeyError(f"{name} ({path}) is a development key generated by `dui`: production refuses it; "
                            "create one with `dui keys generate --audit FILE`")
    return key
