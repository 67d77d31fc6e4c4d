"""Secret files (master key, token-signing key, audit key): what production requires of their permissions.

A key file that another account of the host can read is a key that other account holds. ``DUI_ENV=prod``
refuses such a file with one line naming it and its mode, as OpenSSH refuses a private key readable by others:
the owner alone may read it (mode 0600 or 0400). Development keys are not checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dui.settings import SettingsError


class KeyFilePermissionError(SettingsError):
    """A secret file is readable or writable by accounts other than its owner."""


def require_private(path: str | Path, what: str) -> None:
    """Raise ``KeyFilePermissionError`` unless only the file's owner may read or write ``path``."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise KeyFilePermissionError(f"cannot read {what} {path}: {exc.strerror}") from None
    loose = stat.S_IMODE(mode) & 0o077
    if loose:
        raise KeyFilePermissionError(
            f"{what} {path} has mode {stat.S_IMODE(mode):04o}: production requires that only its owner may read it "
            f"(chmod 600 {path})")
