"""Who is calling: from an ``Authorization`` header to an ``Actor`` (RFC 6750, bearer tokens).

Accepted tokens: this server's access tokens (``/auth/token``), and the tokens of the OIDC issuers of
``DUI_AUTH_OIDC_ISSUERS`` (staff). The token's ``iss`` chooses the verifier; anything else is refused. A
request without a token runs as ``ANONYMOUS`` only where ``DUI_AUTH_ALLOW_ANONYMOUS`` allows it (by default
in ``dev`` only). Refusals are ``Unauthorized`` (401) with ``WWW-Authenticate: Bearer error="invalid_token"``
and a description of what was wrong.

A token of this server stays valid until it expires; disabling its client or account takes effect within
``ACTIVE_CHECK_SECONDS``: the account is looked up again after that long (a cache per process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dui.auth.actor import ANONYMOUS, Actor
from dui.auth.keys import SigningKey, SigningKeyError, load_signing_key
from dui.auth.oidc import OidcIssuer, load_issuers
from dui.auth.tables import api_client, staff_user
from dui.auth.tokens import LEEWAY, TokenError, TokenIssuer, unverified_claims, unverified_header
from dui.clock import Clock
from dui.errors import Unauthorized, Unavailable
from dui.settings import Settings

logger = logging.getLogger("dui.auth")
ACTIVE_CHECK_SECONDS = 5.0
VERIFIED_CACHE_SIZE = 4096
REALM = "dui"


class Authenticator:
    """Built once per process (``Services``); thread-safe."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], clock: Clock) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock
        conf = settings.auth
        self.allow_anonymous = conf.allow_anonymous if conf.allow_anonymous is not None else not settings.is_prod
        self.password_grant = conf.password_grant if conf.password_grant is not None else not settings.is_prod
        self.issuer_url = settings.base_url.rstrip("/")
        self.token_url = self.issuer_url + "/auth/token"
        self.oidc: dict[str, OidcIssuer] = load_issuers(conf.oidc_issuers)
        self._issuer: TokenIssuer | None = None
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], float] = {}
        self._verified: OrderedDict[str, tuple[Actor, float]] = OrderedDict()  # token -> (actor, exp)
        self._cache_lock = threading.Lock()

    # -- the server's key --------------------------------------------------------------------------------

    @property
    def tokens(self) -> TokenIssuer:
        """The issuer of this server's tokens, its key loaded on first use; 503 if there is no usable key."""
        with self._lock:
            if self._issuer is None:
                conf = self.settings.auth
                try:
                    key = load_signing_key(conf.signing_key, conf.dev_key_dir, self.settings.is_prod)
                except SigningKeyError as exc:
                    logger.error("token signing key unusable", extra={"reason": str(exc)})
                    raise Unavailable(f"Authentication is not configured: {exc}") from None
                self._issuer = TokenIssuer(key, self.issuer_url, self.settings.fhir_base, conf.token_lifetime)
            return self._issuer

    @property
    def signing_key(self) -> SigningKey:
        return self.tokens.key

    def problem(self) -> str | None:
        """Why tokens cannot be issued or checked (for /readyz), or None."""
        try:
            self.tokens  # noqa: B018 (loads the key)
        except Unavailable as exc:
            return exc.message
        return None

    # -- requests ----------------------------------------------------------------------------------------

    def actor_for(self, authorization: str | None, public: bool = False) -> Actor:
        """The actor of a request with this ``Authorization`` header; ``Unauthorized`` if it must be refused.

        ``public``: the resource may be served without a token (the CapabilityStatement).
        """
        if not authorization:
            if self.allow_anonymous or public:
                return ANONYMOUS
            raise Unauthorized("This server requires an access token (Authorization: Bearer ...); see "
                               "/.well-known/smart-configuration",
                               headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        try:
            if scheme.lower() != "bearer" or not token:
                raise TokenError("the Authorization header must be 'Bearer <access token>'")
            actor = self.verify(token)
        except TokenError as exc:
            raise invalid_token(str(exc)) from None
        return actor

    def verify(self, token: str) -> Actor:
        """The actor a bearer token stands for; ``TokenError`` saying why it is refused."""
        now = self.clock()
        cached = self._recall(token, now.timestamp())
        if cached is None:
            unverified_header(token)
            claims = unverified_claims(token)
            issuer = claims.get("iss")
            if issuer == self.issuer_url:
                actor = self.tokens.verify(token, now)
            elif isinstance(issuer, str) and issuer in self.oidc:
                actor = self.oidc[issuer].actor(token, now)
            else:
                raise TokenError("wrong issuer (iss): not this server nor a trusted OIDC issuer")
            self._remember(token, actor, float(claims["exp"]))  # verified: exp is a number
        else:
            actor = cached
        if not self.is_active(actor):
            raise TokenError("the client or account of this token is disabled")
        return actor

    def _recall(self, token: str, now: float) -> Actor | None:
        """The actor of a token verified before and not expired since. A signature check costs ~150 us; a client
        sends the same token with every request of its 5 minutes: each server checks it once."""
        with self._cache_lock:
            hit = self._verified.get(token)
            if hit is None:
                return None
            if hit[1] + LEEWAY <= now:
                del self._verified[token]
                return None
            self._verified.move_to_end(token)
            return hit[0]

    def _remember(self, token: str, actor: Actor, exp: float) -> None:
        with self._cache_lock:
            self._verified[token] = (actor, exp)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)

    def is_active(self, actor: Actor) -> bool:
        """The actor's client or account still exists and is enabled (looked up at most every few seconds)."""
        key = (actor.kind, actor.id)
        checked = self._active.get(key)
        if checked is not None and time.monotonic() - checked < ACTIVE_CHECK_SECONDS:
            return True
        with self.session_factory() as session:
            if actor.kind in ("client", "device"):
                enabled = session.execute(select(api_client.c.enabled)
                                          .where(api_client.c.client_id == actor.id)).scalar()
            elif actor.auth_method == "password":
                enabled = session.execute(select(staff_user.c.enabled)
                                          .where(staff_user.c.login == actor.id)).scalar()
            else:
                return True  # vouched for by an OIDC issuer: no account here
        if enabled:
            self._active[key] = time.monotonic()
        else:
            self._active.pop(key, None)
        return bool(enabled)

    def forget(self, kind: str, actor_id: str) -> None:
        """Look the client or account up again at its next request (after ``disable`` in this process)."""
        self._active.pop((kind, actor_id), None)

    def now(self) -> datetime:
        return self.clock()


def invalid_token(description: str) -> Unauthorized:
    """401 with the RFC 6750 §3 challenge; the description quotes nothing of the token."""
    # Parts of the description come from the token (an alg, an acr): keep printable ASCII, no quote or backslash.
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description)[:300]
    return Unauthorized(f"Invalid access token: {description}", headers={
        "WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", error_description="{safe}"'})
