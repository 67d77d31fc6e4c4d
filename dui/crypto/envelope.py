"""The stored form of a resource body.

Format 1 (bytes)::

    0      magic 0xD1            never the first byte of a JSON body, which starts with '{'
    1      format 0x01           a later format gets another value here
    2..5   data key id           big-endian, unsigned; the ``data_key`` row that encrypts this body
    6..17  nonce                 12 random bytes, fresh for every body
    18..   ciphertext + tag      AES-256-GCM of the JSON body; 16-byte tag at the end

The associated data (authenticated, not stored) is the 6-byte header followed by the row's identity: the
row id of the resource (8 bytes), the version number (4 bytes) and the resource type. A body copied onto
another row, another version or another type, or a header pointing at another key, fails authentication.

A body starting with ``{`` is plaintext JSON written before encryption was introduced; it is read as is
until ``dui keys reencrypt`` converts it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dui.crypto.errors import BodyIntegrityError

MAGIC = 0xD1
FORMAT_1 = 0x01
HEADER = struct.Struct(">BBI")
HEADER_BYTES = HEADER.size  # 6
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES  # 34 bytes per body
_ROW = struct.Struct(">QI")
_PLAINTEXT = ord("{")


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key (DEK) and its cipher, ready for use."""

    id: int
    secret: bytes = field(repr=False)
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cipher", AESGCM(self.secret))

    @property
    def header(self) -> bytes:
        """The header of bodies sealed with this key (what ``dui keys reencrypt`` looks for)."""
        return HEADER.pack(MAGIC, FORMAT_1, self.id)


def associated_data(header: bytes, rtype: str, rid: int, version: int) -> bytes:
    return header + _ROW.pack(rid, version) + rtype.encode("ascii")


def seal(key: DataKey, body: bytes, rtype: str, rid: int, version: int) -> bytes:
    """The stored form of ``body``, for version ``version`` of row ``rid`` of type ``rtype``."""
    header = key.header
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + key.cipher.encrypt(nonce, body, associated_data(header, rtype, rid, version))


def key_id(stored: bytes) -> int | None:
    """The id of the data key that sealed ``stored``; None for a plaintext body. Raises on an unknown format."""
    if not stored:
        raise BodyIntegrityError("empty stored body")
    first = stored[0]
    if first == _PLAINTEXT:
        return None
    if first != MAGIC or len(stored) < OVERHEAD:
        raise BodyIntegrityError("stored body in an unknown format (neither JSON nor an encrypted body)")
    _magic, version, ident = HEADER.unpack_from(stored)
    if version != FORMAT_1:
        raise BodyIntegrityError(f"stored body in encryption format {version}, which this version cannot read")
    return int(ident)


def open_sealed(key: DataKey, stored: bytes, rtype: str, rid: int, version: int) -> bytes:
    """The JSON body; ``BodyIntegrityError`` (naming the row, never the content) if it fails authentication."""
    header = stored[:HEADER_BYTES]
    nonce = stored[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES]
    try:
        return key.cipher.decrypt(nonce, stored[HEADER_BYTES + NONCE_BYTES:],
                                  associated_data(header, rtype, rid, version))
    except InvalidTag:
        raise BodyIntegrityError(
            f"the stored body of {rtype} row {rid} version {version} fails its integrity check (data key "
            f"{key.id}): altered, or copied from another row") from None
