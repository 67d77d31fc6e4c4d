"""Passwords of local staff accounts: strength rules, scrypt hashing, constant-time checks.

A hash is stored as ``scrypt$<log2 N>$<r>$<p>$<salt>$<digest>`` (base64url salt and digest): the cost
parameters travel with it, so raising ``COST`` later leaves existing hashes verifiable, and they are
re-hashed at the next successful sign-in (``needs_rehash``). scrypt (RFC 7914) is memory-hard: 2^15 x 8
costs 32 MiB and some 50 ms per guess, which is what slows down an attacker holding a copy of the table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache

MIN_LENGTH = 12
MAX_LENGTH = 1024  # scrypt reads it all; longer is a denial of service, not a password
PASSPHRASE_LENGTH = 20  # from this length, any mix of characters is accepted


@dataclass(frozen=True)
class Cost:
    log2_n: int = 15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 256 * self.r * (1 << self.log2_n) * self.p + 1024 * 1024


COST = Cost()
SALT_BYTES = 16
DIGEST_BYTES = 32


class WeakPassword(ValueError):
    """The password does not meet the rules; the message says which."""


def check_strength(password: str, login: str = "") -> None:
    """``WeakPassword`` unless the password is long enough and not trivially guessable."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password must have at most {MAX_LENGTH} characters")
    if len(set(password)) < 5:
        raise WeakPassword("the password repeats too few different characters")
    if login and login.lower() in password.lower():
        raise WeakPassword("the password must not contain the login")
    classes = sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))
    if len(password) < PASSPHRASE_LENGTH and classes < 3:
        raise WeakPassword(f"the password needs three of: lower case, upper case, digits, other characters "
                           f"(or at least {PASSPHRASE_LENGTH} characters)")


def hash_password(password: str, cost: Cost = COST) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, cost)
    return f"scrypt${cost.log2_n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``. With ``stored`` None (no such account) a dummy hash is checked,
    so that the answer takes the same time whether the account exists or not."""
    if len(password) > MAX_LENGTH:
        password = password[:MAX_LENGTH]  # still spend the time; it cannot match a hash made within the limit
        stored = None
    parsed = _parse(stored) if stored is not None else None
    if parsed is None:
        cost, salt, expected = _dummy()
        hmac.compare_digest(_scrypt(password, salt, cost), expected)
        return False
    cost, salt, expected = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost), expected)


def needs_rehash(stored: str, cost: Cost = COST) -> bool:
    parsed = _parse(stored)
    return parsed is None or parsed[0] != cost


def _scrypt(password: str, salt: bytes, cost: Cost) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << cost.log2_n, r=cost.r, p=cost.p,
                          maxmem=cost.maxmem, dklen=DIGEST_BYTES)


def _parse(stored: str) -> tuple[Cost, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        cost = Cost(int(parts[1]), int(parts[2]), int(parts[3]))
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not (10 <= cost.log2_n <= 22 and 1 <= cost.r <= 32 and 1 <= cost.p <= 16):
        return None
    return cost, salt, digest


@cache
def _dummy() -> tuple[Cost, bytes, bytes]:
    # A random digest no password yields: checking against it costs exactly what a real check costs.
    return COST, secrets.token_bytes(SALT_BYTES), secrets.token_bytes(DIGEST_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
