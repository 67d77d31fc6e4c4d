"""The export files on disk: NDJSON, sealed in chunks under a data key of the service's keyring.

A file is health data: it is never written in clear by the service. Its format::

    MAGIC                      8 bytes, ``DUINDJ1\\n``
    then, for each chunk:      4 bytes, big-endian, the length of the sealed chunk,
                               the sealed chunk (``dui.crypto.envelope.seal``: header, nonce, AES-256-GCM)

Each chunk holds up to ``CHUNK_BYTES`` bytes of the NDJSON text. Its associated data names the export, the file and
the chunk's number, so that a chunk moved to another place, another file or another export fails authentication; the
number of chunks is kept in the database (``bulk_export.output``), so that a truncated file is refused as well.
Folders are created 0700 and files 0600. ``PlainFile`` writes the same NDJSON in clear: ``dui export --ndjson``,
where the administrator chose the folder.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from dui.crypto import envelope
from dui.crypto.envelope import DataKey
from dui.crypto.errors import BodyIntegrityError

MAGIC = b"DUINDJ1\n"
CHUNK_BYTES = 256 * 1024
_LENGTH = struct.Struct(">I")


class Output(Protocol):
    """One NDJSON file being written."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> int:
        """Finish the file; the number of sealed chunks (0 for a plain file)."""


class Sink(Protocol):
    """Where an export's files go."""

    def open(self, name: str) -> Output: ...


def private_folder(path: Path) -> Path:
    """``path`` created (with its parents) and set to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def context(export_id: str, name: str) -> str:
    """What a chunk's associated data names (ASCII: export ids and file names are)."""
    return f"bulk-export:{export_id}/{name}"


class SealedFile:
    def __init__(self, path: Path, key: DataKey, where: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(self._fd, "wb")
        self._file.write(MAGIC)
        self._key = key
        self._where = where
        self._buffer = bytearray()
        self._chunks = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            self._seal(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _seal(self, chunk: bytes) -> None:
        sealed = envelope.seal(self._key, chunk, self._where, self._chunks, 0)
        self._file.write(_LENGTH.pack(len(sealed)))
        self._file.write(sealed)
        self._chunks += 1

    def close(self) -> int:
        if self._buffer:
            self._seal(bytes(self._buffer))
            self._buffer.clear()
        self._file.close()
        return self._chunks


class SealedFolder:
    """The sink of an export job: sealed files in the export's own folder."""

    def __init__(self, folder: Path, export_id: str, key: DataKey) -> None:
        self.folder = private_folder(folder)
        self.export_id = export_id
        self.key = key

    def open(self, name: str) -> Output:
        return SealedFile(self.folder / name, self.key, context(self.export_id, name))


def read_sealed(path: Path, key: DataKey, export_id: str, name: str, chunks: int) -> Iterator[bytes]:
    """The NDJSON text of a sealed file, chunk after chunk (``BodyIntegrityError`` naming the file, never the
    content, for a file altered, truncated or moved)."""
    where = context(export_id, name)
    with open(path, "rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise BodyIntegrityError(f"export file {name}: not an export file of this service")
        for index in range(chunks):
            head = file.read(_LENGTH.size)
            if len(head) != _LENGTH.size:
                raise BodyIntegrityError(f"export file {name}: truncated at chunk {index}")
            (length,) = _LENGTH.unpack(head)
            sealed = file.read(length)
            if len(sealed) != length:
                raise BodyIntegrityError(f"export file {name}: truncated at chunk {index}")
            try:
                yield envelope.open_sealed(key, sealed, where, index, 0)
            except BodyIntegrityError:
                raise BodyIntegrityError(f"export file {name}: chunk {index} fails its integrity check") from None
        if file.read(1):
            raise BodyIntegrityError(f"export file {name}: more chunks than recorded")


class PlainFile:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "xb")  # noqa: SIM115  (closed by close())

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> int:
        self._file.close()
        return 0


class PlainFolder:
    """The sink of ``dui export --ndjson``: plain NDJSON files in the folder the administrator named."""

    def __init__(self, folder: Path) -> None:
        self.folder = private_folder(folder)

    def open(self, name: str) -> Output:
        return PlainFile(self.folder / name)
