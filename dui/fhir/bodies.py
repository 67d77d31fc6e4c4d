"""Bodies as stored: sealed on the way in, opened on the way out (``dui.crypto.envelope``).

One ``Bodies`` per repository (unit of work). It holds the data key its writes use, taken from the
keyring on the first write. A savepoint that rolls back forgets the key if it was taken inside it: the
key may have been created there, and its row is then gone with the savepoint.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from dui.crypto import envelope
from dui.crypto.envelope import DataKey
from dui.crypto.errors import BodyIntegrityError
from dui.crypto.keyring import Keyring


class Bodies:
    def __init__(self, session: Session, keyring: Keyring) -> None:
        self.session = session
        self.keyring = keyring
        self._write_key: DataKey | None = None

    def seal(self, rtype: str, rid: int, version: int, body: bytes) -> bytes:
        key = self._write_key
        if key is None:
            key = self._write_key = self.keyring.write_key(self.session)
        return envelope.seal(key, body, rtype, rid, version)

    def open(self, rtype: str, rid: int, version: int, stored: bytes | None) -> bytes | None:
        """The JSON body of a stored version (None for a delete); plaintext rows are returned as they are."""
        if stored is None:
            return None
        try:
            key_id = envelope.key_id(stored)
        except BodyIntegrityError as exc:
            raise BodyIntegrityError(f"{rtype} row {rid} version {version}: {exc}") from None
        if key_id is None:
            return bytes(stored)
        key = self._write_key
        if key is None or key.id != key_id:
            key = self.keyring.data_key(self.session, key_id)
        return envelope.open_sealed(key, stored, rtype, rid, version)

    def mark(self) -> DataKey | None:
        """What to come back to if the savepoint about to start rolls back."""
        return self._write_key

    def rolled_back(self, mark: DataKey | None) -> None:
        self._write_key = mark
