"""Which Subscriptions a change concerns: queued with the change, evaluated by ``dui worker``.

``on_change`` (a listener of the store) queues one ``subscription.match`` job per created or updated Observation or
Flag, in the writing transaction, keyed by its versioned reference, and only while some Subscription is active.
``match`` (its outbox handler) evaluates each active Subscription on that type: its criteria plus ``_id`` run as a
FHIR search through the router by the Subscription's owner client, rebuilt from its registration (its scopes, its
establishment): what the client could not find by searching, it is not told of. Each match of a rest-hook
Subscription queues one ``subscription.notify`` job (``dui.subscriptions.delivery``); a match of a websocket
Subscription writes its ping at once (``dui.subscriptions.websocket``): nothing leaves the database. The job reads;
what it writes (the notification jobs, the pings) is written with the job's own state (``Outcome.writes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from dui.auth.actor import SYSTEM, Actor
from dui.auth.scopes import ScopeSet
from dui.auth.tables import api_client
from dui.direct_sql import DirectQuery
from dui.errors import DuiError
from dui.fhir import router
from dui.fhir.interactions.base import FhirContext, FhirRequest
from dui.fhir.repository import FhirRepository, ResourceVersion
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.tables import resource, search_token
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent
from dui.subscriptions import websocket
from dui.subscriptions.rules import OWNER_CLIENT, TYPES, WEBSOCKET, ended

MATCH_KIND = "subscription.match"
NOTIFY_KIND = "subscription.notify"
ContextOf = Callable[[Session, Actor], FhirContext]


_ACTIVE = "dui.subscriptions.any_active"  # in Session.info: (the transaction, whether a Subscription was active)
# Asked by every write of an Observation or a Flag: on the writing unit's own connection (``dui.direct_sql``).
_ANY_ACTIVE = DirectQuery(select(exists().where(
    search_token.c.res_type == "Subscription", search_token.c.param == "status", search_token.c.code == "active")))


def on_change(repo: SqlFhirRepository, version: ResourceVersion) -> None:
    """Queue the matching of a created or updated Observation or Flag (listener of the store)."""
    if version.type == "Subscription":
        repo.session.info.pop(_ACTIVE, None)  # asked again at the next Observation or Flag
        return
    if version.type not in TYPES or version.deleted or not any_active(repo.session):
        return
    queue.enqueue(repo.session, MATCH_KIND, version.reference, version.versioned_reference, repo.clock())


def any_active(session: Session) -> bool:
    """Whether some Subscription is active, asked once per transaction (an import of 200 Observations asks once,
    not 200 times) and again after a Subscription is written in it."""
    transaction = session.get_transaction()
    known = session.info.get(_ACTIVE)
    if transaction is not None and known is not None and known[0] is transaction:
        return bool(known[1])
    found = bool(_ANY_ACTIVE.rows_writing(session, {})[0][0])
    session.info[_ACTIVE] = (transaction, found)
    return found


def match(session: Session, job: Job, context_of: ContextOf) -> Outcome:
    """Queue a notification for each active Subscription the job's resource version matches."""
    system = context_of(session, SYSTEM)
    store = system.internal
    try:
        rtype, rid, _, number = job.idempotency_key.split("/")
        version = int(number)
    except ValueError:
        return permanent("the job's key is not a versioned reference")
    current = store.read(rtype, rid)
    if current is None or current.deleted:
        return delivered("the resource is gone: nothing to match")
    if current.version != version:
        return delivered("superseded: the later version is matched by its own job")
    matched = [sub for sub in active(store, session, rtype, system.clock())
               if (owner := owner_actor(session, sub)) is not None
               and matches(context_of(session, owner), sub["criteria"], rid)]

    def tell(writer: Session, now: datetime) -> None:
        for sub in matched:
            if (sub.get("channel") or {}).get("type") == WEBSOCKET:  # the bound sockets send it
                websocket.queue_ping(writer, sub["id"], current, now)
            else:
                queue.enqueue(writer, NOTIFY_KIND, f"Subscription/{sub['id']}", f"{sub['id']} {job.idempotency_key}",
                              now)

    return dataclasses.replace(delivered(f"{len(matched)} subscription(s) to notify"), writes=tell)


def active(store: FhirRepository, session: Session, rtype: str, now: datetime) -> list[dict[str, Any]]:
    """The active Subscriptions watching ``rtype`` (their ``end`` not passed)."""
    rids = session.execute(select(resource.c.rid).join(search_token, search_token.c.rid == resource.c.rid).where(
        resource.c.res_type == "Subscription", resource.c.deleted.is_(False), search_token.c.param == "status",
        search_token.c.code == "active").order_by(resource.c.rid)).scalars().all()
    found = []
    for version in store.fetch(list(rids)):
        sub = version.resource() if version.body is not None else None
        if sub is None or str(sub.get("criteria", "")).partition("?")[0] != rtype or ended(sub, now):
            continue
        found.append(sub)
    return found


def owner_actor(session: Session, sub: dict[str, Any]) -> Actor | None:
    """The API client the Subscription is evaluated for, as registered now; None when it is missing, disabled, a
    device, or without an establishment."""
    client_id = next((e.get("valueString") for e in sub.get("extension", [])
                      if isinstance(e, dict) and e.get("url") == OWNER_CLIENT), None)
    if not isinstance(client_id, str):
        return None
    row = session.execute(select(api_client).where(api_client.c.client_id == client_id)).mappings().first()
    if row is None or not row["enabled"] or row["kind"] != "client" or not row["establishment"]:
        return None
    return Actor("client", client_id, frozenset(), row["establishment"], scopes=ScopeSet.parse(row["scopes"]),
                 client_id=client_id, auth_method="subscription")


def matches(ctx: FhirContext, criteria: str, rid: str) -> bool:
    """Whether the owner's search ``criteria`` plus ``_id`` finds the resource (a refused search finds nothing)."""
    rtype, _, query = criteria.partition("?")
    pairs = (*parse_qsl(query, keep_blank_values=True), ("_id", rid), ("_summary", "count"))
    try:
        answer = router.handle(ctx, FhirRequest("GET", rtype, query=pairs))
    except DuiError:
        return False
    body = answer.body
    if isinstance(body, bytes | bytearray):
        body = orjson.loads(body)
    return answer.status == 200 and isinstance(body, dict) and bool(body.get("total"))
