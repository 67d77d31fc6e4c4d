"""The client's address: the peer's, unless the peer is a listed reverse proxy (``DUI_TRUSTED_PROXIES``).

Behind a reverse proxy every connection comes from the proxy; the client's address is in ``X-Forwarded-For``,
to which each proxy appends the address it received the request from. Only entries written by listed proxies
are believed: when the peer is a listed proxy, the header is walked from the right, listed proxies are
skipped, and the first address that is not one is the client's. Entries to the left of it are whatever the
client sent and are never read. A malformed entry stops the walk at the last trusted hop (the proxy that
wrote it is then the client, as far as this service can tell). A peer that is not a listed proxy, such as a
client reaching the service's port directly with a forged header, is the client whatever the header says.

``ClientAddress`` applies this to every request before Flask sees it, by setting ``REMOTE_ADDR`` (the peer's
address is kept in ``dui.peer_addr``), so that rate-limit keys, the audit trail's ``source`` and log lines all
read the same address through ``request.remote_addr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dui.settings import ProxyNetwork

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
PEER_KEY = "dui.peer_addr"


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: bare IPv4 or IPv6, ``[IPv6]``, or either with a port; None otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client seen through a dual-stack socket
    return address


def client_address(peer: str | None, forwarded_for: str | None, trusted: Iterable[ProxyNetwork]) -> str | None:
    """The client's address, from the peer's address and the ``X-Forwarded-For`` header (see the module)."""
    networks = tuple(trusted)
    hop = parse_address(peer) if peer else None
    if hop is None or not _listed(hop, networks):
        return peer
    for entry in reversed(forwarded_for.split(",") if forwarded_for else []):
        address = parse_address(entry)
        if address is None:
            break  # malformed: the last trusted hop is as far as the header can be believed
        hop = address
        if not _listed(address, networks):
            break
    return str(hop)


def _listed(address: Address, networks: tuple[ProxyNetwork, ...]) -> bool:
    return any(address in network for network in networks)


class ClientAddress:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address (``client_address``)."""

    def __init__(self, app: WSGIApplication, trusted: Iterable[ProxyNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        environ[PEER_KEY] = peer
        environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), self.trusted)
        return self.app(environ, start_response)
