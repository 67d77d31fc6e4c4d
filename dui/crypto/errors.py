"""Errors of encryption at rest. Messages name keys, resource types and row ids, never content.

They are not ``DuiError``s on purpose: a body that cannot be decrypted is the operator's problem, not the
client's. The web layer answers 500 with the request id and logs the message with its traceback
(``dui.web.errors``); the CLI prints the message on one line.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class."""


class KeyUnavailable(CryptoError):
    """A data key or the master key that wrapped it is missing, or unwrapping it failed (wrong master key)."""


class BodyIntegrityError(CryptoError):
    """A stored body fails its authentication: altered, truncated, or moved from another row."""


class MasterKeyError(CryptoError):
    """A master key is malformed, unreadable, or a development key where production is configured."""
