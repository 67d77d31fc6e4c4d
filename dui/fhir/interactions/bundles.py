"""Building response Bundles (searchset, history) around stored bodies, without re-parsing them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from dui.fhir import jsontext
from dui.fhir.repository import ResourceVersion
from dui.fhir.sql import format_instant


def bundle(kind: str, now: datetime, entries: list[dict[str, Any]], links: list[tuple[str, str]],
           total: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now)},
        "type": kind,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": rel, "url": url} for rel, url in links]
    if entries:
        out["entry"] = entries
    return out


def link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url


def match_entry(base: str, version: ResourceVersion, mode: str = "match") -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{version.reference}",
        "resource": jsontext.raw(version.body or b"{}"),
        "search": {"mode": mode},
    }


def history_entry(base: str, version: ResourceVersion) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base}/{version.reference}"}
    if version.body is not None:
        entry["resource"] = jsontext.raw(version.body)
    if version.method == "DELETE":
        request = {"method": "DELETE", "url": version.reference}
        status = "204 No Content"
    elif version.version == 1 and version.method == "POST":
        request = {"method": "POST", "url": version.type}
        status = "201 Created"
    else:
        request = {"method": version.method, "url": version.reference}
        status = "201 Created" if version.version == 1 else "200 OK"
    entry["request"] = request
    entry["response"] = {
        "status": status,
        "etag": version.etag,
        "lastModified": format_instant(version.last_updated),
    }
    return entry
