"""Master keys: what wraps the data keys.

``MasterKey`` is the interface a key-management backend implements: an id recorded next to each wrapped
data key, ``wrap`` and ``unwrap``. ``LocalMasterKey`` is a 32-byte AES-256 key held by the process, read
from ``DUI_MASTER_KEY`` (base64) or ``DUI_MASTER_KEY_FILE``. A KMS (``Encrypt``/``Decrypt`` with an encryption
context) or an HSM (PKCS#11 ``C_WrapKey``/``C_UnwrapKey``) implementation keeps the key outside the process
and fits the same three members; ``context`` is then the KMS encryption context or the GCM associated data.

A key file holds one line of base64 (comment lines start with ``#``). In development, when no key is
configured, one is generated on first use under ``var/keys/`` with a ``DevMasterKeyWarning``. Its key line
starts with ``dev:`` and ``DUI_ENV=prod`` refuses it, even copied elsewhere or into ``DUI_MASTER_KEY``.
``DUI_ENV=prod`` also refuses a key file that accounts other than its owner may read or write
(``dui.keyfiles.require_private``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dui.crypto.errors import KeyUnavailable, MasterKeyError
from dui.keyfiles import KeyFilePermissionError, require_private
from dui.settings import EncryptionSettings, SettingsError

KEY_BYTES = 32
NONCE_BYTES = 12
DEV_PREFIX = "dev:"
DEV_KEY_NAME = "master-key.dev"
_WRAP_DOMAIN = b"dui/data-key/v1|"


class DevMasterKeyWarning(UserWarning):
    """A development secret is in use: the master key was generated on this machine."""


class MasterKeyConfigError(SettingsError, MasterKeyError):
    """The master key configuration is unusable (the CLI reports it as a configuration error)."""


class MasterKey(Protocol):
    """Wraps and unwraps data keys. Implementations must be safe to call from several threads."""

    @property
    def key_id(self) -> str:
        """A stable, non-secret id (at most 64 characters), stored with each data key it wraps."""

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """The data key encrypted and authenticated together with ``context`` (the data key's own id)."""

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key; raises ``KeyUnavailable`` if ``wrapped`` or ``context`` was not made by ``wrap``."""


@dataclass(frozen=True)
class LocalMasterKey:
    """An AES-256 key in process memory; wraps with AES-256-GCM (random nonce, ``context`` authenticated)."""

    secret: bytes = field(repr=False)
    development: bool = False
    source: str = ""  # where it was read from, for messages

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise MasterKeyConfigError(f"a master key is {KEY_BYTES} bytes, not {len(self.secret)}")

    @property
    def key_id(self) -> str:
        digest = hmac.new(self.secret, b"dui master key id", hashlib.sha256).hexdigest()[:16]
        return f"local-dev:{digest}" if self.development else f"local:{digest}"

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.secret).encrypt(nonce, data_key, _WRAP_DOMAIN + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return AESGCM(self.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_DOMAIN + context)
        except InvalidTag:
            raise KeyUnavailable(f"master key {self.key_id} cannot unwrap this data key: wrong key, or the "
                                 "wrapped key was altered") from None


class _Identified(Protocol):
    @property
    def key_id(self) -> str: ...


K = TypeVar("K", bound=_Identified)


@dataclass(frozen=True)
class KeySet(Generic[K]):
    """The keys of one use a process holds: ``current`` for new work; ``previous`` (replaced by rotations) only for
    what they made, found by the id recorded next to it."""

    current: K
    previous: tuple[K, ...] = ()

    def find(self, key_id: str) -> K | None:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        return None

    @property
    def ids(self) -> list[str]:
        return [key.key_id for key in (self.current, *self.previous)]


class MasterKeys(KeySet[MasterKey]):
    """The master keys: ``current`` wraps new data keys; ``previous`` only unwraps, during a rotation
    (``DUI_MASTER_KEY_PREVIOUS_FILE``)."""


def parse_key(text: str, source: str) -> LocalMasterKey:
    """A key from the text of a key file or of ``DUI_MASTER_KEY``: one base64 line, ``dev:`` for development."""
    secret, development = parse_key_line(text, source)
    return LocalMasterKey(secret, development, source)


def parse_key_line(text: str, source: str,
                   error: Callable[[str], Exception] = MasterKeyConfigError) -> tuple[bytes, bool]:
    """The 32 bytes of a key file's text (one base64 line, ``#`` comments allowed), and whether its line is marked
    ``dev:`` (generated by ``dui`` for development). Shared by every key file of this format (master, audit)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise error(f"{source} must hold one line of base64 (a 32-byte key), not {len(lines)}")
    line = lines[0]
    development = line.startswith(DEV_PREFIX)
    try:
        secret = base64.b64decode(line.removeprefix(DEV_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{source} is not valid base64") from None
    if len(secret) != KEY_BYTES:
        raise error(f"{source} must decode to {KEY_BYTES} bytes, not {len(secret)}")
    return secret, development


def read_key_file(path: str | Path) -> LocalMasterKey:
    return parse_key(read_key_text(path), str(path))


def read_key_text(path: str | Path, what: str = "master key",
                  error: Callable[[str], Exception] = MasterKeyConfigError) -> str:
    """The text of a key file; ``error`` with one line when it cannot be read."""
    try:
        return Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise error(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"the {what} file {path} is not base64 text") from None


_HEADERS = {
    "master key": "# DUI master key (AES-256, base64). Keep it secret, apart from the database and its backups;\n"
                  "# without it the stored resources cannot be read.\n",
    "audit key": "# DUI audit key (HMAC-SHA256, base64): it seals the audit trail's chain. Keep it secret, apart from\n"
                 "# the database and its backups; verifying the entries it sealed needs it.\n",
}


def key_file_text(secret: bytes, development: bool = False, what: str = "master key") -> str:
    """The text of a key file for ``secret`` (``what``: ``master key`` or ``audit key``, for its comment)."""
    encoded = base64.b64encode(secret).decode("ascii")
    if development:
        return (f"# DUI DEVELOPMENT {what.upper()}: generated by `dui` on first use; refused when DUI_ENV=prod\n"
                f"{DEV_PREFIX}{encoded}\n")
    return f"{_HEADERS[what]}{encoded}\n"


def write_key_file(path: str | Path, secret: bytes, development: bool = False, what: str = "master key") -> None:
    """Create ``path`` (mode 0600) atomically; ``FileExistsError`` if it exists."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".key-")  # mode 0600
    try:
        os.write(fd, key_file_text(secret, development, what).encode("ascii"))
        os.close(fd)
        os.link(tmp, target)  # atomic, and never replaces a key another process just made
    finally:
        os.unlink(tmp)


def development_key_path(dev_dir: str | Path, name: str, what: str) -> Path:
    """The development key file ``name`` under ``dev_dir``, generated on first use (another process may be making
    it at the same moment: then its key is used)."""
    path = Path(dev_dir) / name
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            write_key_file(path, os.urandom(KEY_BYTES), development=True, what=what)
    return path


def in_development_folder(path: str | Path, dev_dir: str | Path) -> bool:
    """Whether ``path`` lies in the folder where ``dui`` generates development keys (refused in production)."""
    return Path(path).resolve().is_relative_to(Path(dev_dir).resolve())


def configured_keys(conf: EncryptionSettings, *, prod: bool) -> MasterKeys | None:
    """The configured master keys, checked; None when none is configured (``development_keys`` then)."""
    dev_dir = Path(conf.dev_key_dir)
    current = _one(conf.master_key, conf.master_key_file, "DUI_MASTER_KEY", prod, dev_dir)
    previous = _one(conf.previous_master_key, conf.previous_master_key_file, "DUI_MASTER_KEY_PREVIOUS", prod,
                    dev_dir)
    if current is None:
        if previous is not None:
            raise MasterKeyConfigError("DUI_MASTER_KEY_PREVIOUS needs DUI_MASTER_KEY or DUI_MASTER_KEY_FILE")
        return None
    if previous is not None and previous.key_id == current.key_id:
        previous = None
    return MasterKeys(current, (previous,) if previous else ())


def development_keys(dev_dir: str, *, prod: bool) -> MasterKeys:
    """The development master key under ``dev_dir``, generated on first use (with a warning)."""
    if prod:
        raise MasterKeyConfigError("DUI_ENV=prod requires a master key: set DUI_MASTER_KEY_FILE (create one with "
                                   "`dui keys generate FILE`)")
    path = Path(dev_dir) / DEV_KEY_NAME
    warnings.warn(f"DUI_MASTER_KEY_FILE is not set: resources are encrypted under a development master key in "
                  f"{path} (development only)", DevMasterKeyWarning, stacklevel=3)
    return MasterKeys(read_key_file(development_key_path(dev_dir, DEV_KEY_NAME, "master key")))


def _one(value: str | None, path: str | None, name: str, prod: bool, dev_dir: Path) -> LocalMasterKey | None:
    if value and path:
        raise MasterKeyConfigError(f"set {name} or {name}_FILE, not both")
    if value:
        key = parse_key(value, name)
    elif path:
        key = read_key_file(path)
        if prod and in_development_folder(path, dev_dir):
            raise MasterKeyConfigError(f"{name}_FILE ({path}) lies in the development key folder {dev_dir}: "
                                       "production refuses it; create one with `dui keys generate FILE`")
    else:
        return None
    if prod and key.development:
        raise MasterKeyConfigError(f"{name} ({key.source}) is a development key generated by `dui`: production "
                                   "refuses it; create one with `dui keys generate FILE`")
    if prod and path:
        try:
            require_private(path, f"{name}_FILE")  # readable by the service's account only
        except KeyFilePermissionError as exc:
            raise MasterKeyConfigError(str(exc)) from None
    return key
