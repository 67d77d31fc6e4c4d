"""Rate limits at the HTTP edge: which bucket a request takes from, and the 429 it gets past its limit.

Applied after authentication, before the handler. A request with a valid token takes from its actor's
bucket: the API client's (``client_id``) or the staff member's. A request without a token, or with a token
that is refused, takes from its remote address's bucket; the handler then answers it as usual (401 for a
bad token). ``/auth/token`` has its own, lower limit per remote address, against password guessing and
assertion spraying: the claimed client or login is not a key, since anyone could then exhaust a partner's
bucket. Health probes and metrics scrapes are not limited.

Past the limit: 429 with ``Retry-After``, an OperationOutcome (``throttled``) under /fhir and a JSON problem
elsewhere, and a ``rate limited`` log line (bucket, actor, address, method and path; never a query string
or a body), at most one a minute per key with the number of refusals it stands for.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from flask import Flask, request

from dui.auth.actor import Actor
from dui.errors import DuiError, Throttled
from dui.ratelimit import Rate, RateLimiter, limiter_for, retry_after
from dui.services import Services
from dui.web.context import current_actor

logger = logging.getLogger("dui.security")
UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes; scrapes (dui.web.metrics)
TOKEN_PATH = "/auth/token"


def register(app: Flask, limiter: RateLimiter | None = None) -> None:
    svc: Services = app.extensions["dui"]
    conf = svc.settings.rate
    api, auth = Rate(conf.per_minute, conf.burst), Rate(conf.auth_per_minute, conf.auth_burst)
    if not (api.enabled or auth.enabled):
        return
    # Redis, the database or this process (dui.ratelimit.limiter_for). Looked up per request, so that tests can
    # start from empty buckets.
    app.extensions["dui.ratelimit"] = limiter or limiter_for(svc.settings, svc.engine)
    app.extensions["dui.ratelimit.reports"] = Reports()

    @app.before_request
    def throttle() -> None:
        path = request.path.rstrip("/") or "/"
        if path in UNLIMITED:
            return
        address = request.remote_addr or "-"
        actor: Actor | None = None
        if path == TOKEN_PATH:
            bucket, rate, key = "auth", auth, f"auth|addr:{address}"
        else:
            actor = _authenticated()
            bucket, rate, key = "api", api, "api|" + _key(actor, address)
        buckets: RateLimiter = app.extensions["dui.ratelimit"]
        wait = buckets.take(key, rate)
        if wait <= 0:
            return
        after = retry_after(wait)
        refused = app.extensions["dui.ratelimit.reports"].due(key)
        if refused:
            logger.warning("rate limited", extra={
                "bucket": bucket, "actor_kind": actor.kind if actor else "anonymous",
                "actor_id": actor.id if actor else None, "client_id": actor.client_id if actor else None,
                "remote": address, "method": request.method, "path": request.path, "retry_after": int(after),
                "refused": refused})
        what = "token requests from this address" if bucket == "auth" else "requests from this client"
        raise Throttled(f"Too many {what}: at most {rate.per_minute} a minute, {max(1, rate.burst)} at once; "
                        f"retry in {after} s", headers={"Retry-After": after})


def _authenticated() -> Actor | None:
    """The actor of the request's token, or None when it has none or it is refused (the handler says why)."""
    if not request.headers.get("Authorization"):
        return None
    try:
        return current_actor()
    except DuiError:
        return None


def _key(actor: Actor | None, address: str) -> str:
    if actor is not None and actor.kind == "client" and actor.client_id:
        return f"client:{actor.client_id}"
    if actor is not None and actor.kind == "staff":
        return f"staff:{actor.id}"
    return f"addr:{address}"


class Reports:
    """When to log a refusal: the first of a key, then at most one line per ``interval`` seconds, which counts
    the refusals since the previous line (a flood of refused requests must not flood the log)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = 60.0,
                 max_keys: int = 10_000) -> None:
        self._clock = clock
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}  # key -> (time of its last line, refusals since)
        self._lock = threading.Lock()

    def due(self, key: str) -> int:
        """Record one refusal of ``key``: the number of refusals to report now, or 0 to stay silent."""
        with self._lock:
            now = self._clock()
            at, pending = self._last.get(key, (-math.inf, 0))
            pending += 1
            if now - at < self._interval:
                self._last[key] = (at, pending)
                return 0
            if len(self._last) >= self._max_keys:
                self._last.clear()
            self._last[key] = (now, 0)
            return pending
