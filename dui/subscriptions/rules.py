"""What a Subscription may say and who keeps it: the write rule and the filer of ``Subscription``.

R4 (Subscription): ``criteria`` is a search ``Type?params`` applied to a created or updated resource; the channel
``rest-hook`` posts to ``endpoint`` (or, with a ``payload``, PUTs the resource at ``[endpoint]/[type]/[id]``) with
the ``header`` lines; the channel ``websocket`` sends ``ping <id>`` on the sockets its client bound to it
(``dui.subscriptions.websocket``), and takes no endpoint, payload or header; ``status`` is requested, active,
error or off, and the server makes a request it accepts active.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dui.auth.actor import Actor
from dui.errors import DuiError, Forbidden, Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.fhir.scope import FINESS_SYSTEM
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import parse_search
from dui.settings import Limits
from fhir_profiles import CANONICAL

OWNER = f"{CANONICAL}/StructureDefinition/dui-owner"  # valueReference: the establishment's Organization
OWNER_CLIENT = f"{CANONICAL}/StructureDefinition/dui-owner-client"  # valueString: the API client's client_id
STAMPS = (OWNER, OWNER_CLIENT)
TYPES = ("Observation", "Flag")  # what a criteria may watch
PAYLOAD = "application/fhir+json"
REST_HOOK, WEBSOCKET = "rest-hook", "websocket"
CHANNELS = (REST_HOOK, WEBSOCKET)
# Parameters that shape a result rather than select resources, and _id, which the server adds when it evaluates.
RESULT_PARAMETERS = frozenset({"_id", "_count", "_sort", "_include", "_revinclude", "_summary", "_elements",
                               "_total", "_contained", "_containedType", "_format", "_pretty", "_cursor"})
HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*)$")
RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})


def prepare(resource: dict[str, Any], previous: Callable[[], dict[str, Any] | None], actor: Actor, today: date, *,
            registry: SearchParameterRegistry, limits: Limits, production: bool) -> dict[str, Any]:
    """The Subscription to store, or ``Unprocessable`` naming the element at fault. On create, an API client is
    stamped as the one its notifications are evaluated for; on update, the stored owner stays (the client's copy
    of the stamps is ignored)."""
    before = previous()
    if before is None and actor.kind == "client" and actor.establishment is None:
        raise Forbidden("Not allowed: a Subscription belongs to an establishment; this client is registered without "
                        "one")
    criteria_of(resource.get("criteria"), registry, limits)
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise Unprocessable("Subscription.channel is required", expression="Subscription.channel")
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise Unprocessable(f"Subscription.channel.type {str(kind)[:40]!r} is not supported: this server delivers "
                            "the rest-hook and websocket channels", expression="Subscription.channel.type",
                            code="not-supported")
    payload = channel.get("payload")
    if kind == WEBSOCKET:
        # R4: the server sends "ping <id>" on the socket the client bound; nothing is called, nothing is carried
        unused = sorted(k for k in ("endpoint", "payload", "header") if channel.get(k) is not None)
        if unused:
            raise Unprocessable(f"Subscription.channel: {', '.join(unused)} is not used by the websocket channel "
                                "(the client connects to the server's websocket and binds the Subscription; the "
                                "server sends 'ping <id>')", expression=f"Subscription.channel.{unused[0]}")
    else:
        check_endpoint(channel.get("endpoint"), production)
        if payload is not None and payload != PAYLOAD:
            raise Unprocessable(f"Subscription.channel.payload must be absent (a POST without a body) or {PAYLOAD} "
                                "(a PUT of the resource)", expression="Subscription.channel.payload")
        headers(channel)
    out = copy.deepcopy(resource)
    status = resource.get("status")
    if status in ("requested", "active"):
        out["status"] = "active"  # accepted
    elif status != "off":
        raise Unprocessable("Subscription.status must be requested (the server makes it active) or off",
                            expression="Subscription.status")
    mine = [e for e in out.get("extension", []) if not (isinstance(e, dict) and e.get("url") in STAMPS)]
    if before is not None:
        kept = [e for e in before.get("extension", []) if isinstance(e, dict) and e.get("url") in STAMPS]
        mine += kept
    elif actor.kind == "client":
        mine += [e for e in out.get("extension", []) if isinstance(e, dict) and e.get("url") == OWNER]
        mine.append({"url": OWNER_CLIENT, "valueString": actor.id})
    else:  # the CLI or the server itself: the stamps as written
        mine = out.get("extension", [])
    if mine:
        out["extension"] = mine
    else:
        out.pop("extension", None)
    return out


def ended(sub: dict[str, Any], now: datetime) -> bool:
    """Whether the Subscription's ``end`` has passed."""
    end = sub.get("end")
    if not isinstance(end, str):
        return False
    try:
        return datetime.fromisoformat(end.replace("Z", "+00:00")) <= now
    except ValueError:
        return False


def criteria_of(criteria: Any, registry: SearchParameterRegistry, limits: Limits) -> tuple[str, list[tuple[str, str]]]:
    """``Type?params`` -> (type, parameters), read strictly by the search parser (an ignored parameter would widen
    what the endpoint is told)."""
    where = "Subscription.criteria"
    if not isinstance(criteria, str) or not criteria.strip():
        raise Unprocessable("Subscription.criteria is required: a search such as Observation?code=...",
                            expression=where)
    rtype, _, query = criteria.strip().partition("?")
    if rtype not in TYPES:
        raise Unprocessable(f"Subscription.criteria: only {' and '.join(TYPES)} may be watched, not "
                            f"{rtype[:40]!r}", expression=where)
    pairs = parse_qsl(query, keep_blank_values=True)
    named = sorted({name.split(":")[0] for name, _ in pairs} & RESULT_PARAMETERS)
    if named:
        raise Unprocessable(f"Subscription.criteria: {', '.join(named)} does not select resources", expression=where)
    try:
        parse_search(rtype, pairs, registry, limits, strict=True)
    except DuiError as exc:
        raise Unprocessable(f"Subscription.criteria: {exc.message}", expression=where) from None
    return rtype, pairs


def check_endpoint(endpoint: Any, production: bool) -> str:
    where = "Subscription.channel.endpoint"
    allowed = ("https",) if production else ("http", "https")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if (parts is None or parts.scheme not in allowed or not parts.hostname or parts.username is not None
            or parts.fragment or any(c in endpoint for c in " \r\n\t")):
        scheme = "an https" if production else "an http(s)"
        raise Unprocessable(f"Subscription.channel.endpoint must be {scheme} absolute URL, without credentials "
                            "(give them in channel.header)", expression=where)
    return str(endpoint)


def headers(channel: dict[str, Any]) -> list[tuple[str, str]]:
    """``channel.header`` ("Name: value") as pairs."""
    out: list[tuple[str, str]] = []
    for line in channel.get("header") or []:
        found = HEADER.match(line) if isinstance(line, str) else None
        if found is None or found.group(1).lower() in RESERVED_HEADERS:
            raise Unprocessable("Subscription.channel.header: each is one line 'Name: value' (not Host, "
                                "Content-Type, Content-Length, Transfer-Encoding or Connection)",
                                expression="Subscription.channel.header")
        out.append((found.group(1), found.group(2).strip()))
    return out


def filer(ctx: FhirContext, content: dict[str, Any]) -> tuple[ResourceVersion, bool] | None:
    """Create a Subscription of an API client: checked by the write rule, then owned by its establishment's
    Organization (whatever owner the body names). Other actors' bodies are stored as written."""
    if ctx.actor.kind != "client":
        return None
    content = ctx.prepare("Subscription", content, None)
    org = establishment_organization(ctx)
    content["extension"] = [e for e in content.get("extension", []) if e.get("url") != OWNER] + [
        {"url": OWNER, "valueReference": {"reference": f"Organization/{org}"}}]
    return ctx.repo.create("Subscription", content), True


def establishment_organization(ctx: FhirContext) -> str:
    """The id of the Organization carrying the actor's FINESS (as ``dui.fhir.scope.organizations_of`` finds it)."""
    finess = ctx.actor.establishment
    if finess is None:
        raise Forbidden("Not allowed: a Subscription belongs to an establishment; this client is registered without "
                        "one")
    plan = parse_search("Organization", [("identifier", f"{FINESS_SYSTEM}|{finess}"), ("_sort", "_id")],
                        ctx.registry, ctx.settings.limits, strict=True)
    found = ctx.internal.search(plan)
    versions = ctx.internal.fetch(found.rids[:1])
    if not versions:
        raise Unprocessable(f"No Organization carries FINESS {finess}: the establishment must exist before its "
                            "clients subscribe", expression="Subscription")
    return versions[0].id
