"""The client's address behind listed reverse proxies (dui.web.proxies) and ``DUI_TRUSTED_PROXIES`` (dui.settings).

``X-Forwarded-For`` is believed only as far as the hops that wrote it are listed proxies: walked from the right,
the first address that is not a listed proxy is the client's. A client that reaches the service directly, or
that writes its own entries to the left of the proxy's, cannot choose its address.
"""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from dui.settings import Settings, SettingsError, proxy_networks
from dui.web.proxies import client_address


def trusted(*networks: str) -> tuple:  # type: ignore[type-arg]
    return tuple(ip_network(n) for n in networks)


# -- DUI_TRUSTED_PROXIES ----------------------------------------------------------------------------------------


def test_trusted_proxies_are_addresses_and_networks() -> None:
    assert Settings.from_env({}).http.trusted_proxies == ()
    assert proxy_networks("") == ()
    assert proxy_networks("10.0.0.5") == trusted("10.0.0.5/32")
    assert proxy_networks(" 10.0.0.0/24, 2001:db8::/32 ::1,10.0.0.0/24") == trusted("10.0.0.0/24", "2001:db8::/32",
                                                                                      "::1/128")
    env = {"DUI_TRUSTED_PROXIES": "192.0.2.10 192.0.2.11"}
    assert Settings.from_env(env).http.trusted_proxies == trusted("192.0.2.10/32", "192.0.2.11/32")


@pytest.mark.parametrize("number", ["0", "1", "2", " 1 "])
def test_a_count_of_proxies_is_refused_with_what_to_write_instead(number: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DUI_TRUSTED_PROXIES": number})
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(f"DUI_TRUSTED_PROXIES={number.strip()} is a number of proxies")
    assert "list the address of each reverse proxy" in line and "10.0.0.5" in line and "leave it unset" in line


@pytest.mark.parametrize(("raw", "message"), [
    ("proxy.internal", "'proxy.internal' is not an IP address or network"),
    ("10.0.0.5/24", "'10.0.0.5/24' has host bits set: write 10.0.0.0/24"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
    ("10.0.0.1, *", "'\\*' is not an IP address or network"),
])
def test_bad_proxy_entries_are_refused(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"DUI_TRUSTED_PROXIES: {message}"):
        Settings.from_env({"DUI_TRUSTED_PROXIES": raw})


# -- the walk ---------------------------------------------------------------------------------------------------

PROXY = trusted("10.0.0.2/32")


def test_no_listed_proxy_the_peer_is_the_client_whatever_the_header() -> None:
    assert client_address("198.51.100.9", "203.0.113.1", ()) == "198.51.100.9"
    assert client_address("198.51.100.9", None, ()) == "198.51.100.9"


def test_a_peer_that_is_not_a_listed_proxy_names_no_one() -> None:
    """The attack: the backend port reached directly, with a forged header."""
    assert client_address("198.51.100.9", "203.0.113.1", PROXY) == "198.51.100.9"
    assert client_address("198.51.100.9", "10.0.0.2", PROXY) == "198.51.100.9"


def test_behind_a_listed_proxy_the_entry_it_wrote_is_the_client() -> None:
    assert client_address("10.0.0.2", "203.0.113.7", PROXY) == "203.0.113.7"
    # The client wrote entries of its own: they are to the left of the proxy's, and are not read.
    assert client_address("10.0.0.2", "6.6.6.6, 203.0.113.7", PROXY) == "203.0.113.7"
    assert client_address("10.0.0.2", "10.0.0.2, 203.0.113.7", PROXY) == "203.0.113.7"


def test_several_proxies_are_skipped_from_the_right() -> None:
    chain = trusted("10.0.0.0/8")
    assert client_address("10.0.0.2", "6.6.6.6, 203.0.113.7, 10.1.0.1, 10.2.0.1", chain) == "203.0.113.7"
    # Every hop is a proxy: the leftmost is the last one known.
    assert client_address("10.0.0.2", "10.1.0.1, 10.2.0.1", chain) == "10.1.0.1"


def test_a_malformed_entry_stops_the_walk_at_the_last_trusted_hop() -> None:
    chain = trusted("10.0.0.0/8")
    assert client_address("10.0.0.2", "203.0.113.7, unknown, 10.1.0.1", chain) == "10.1.0.1"
    assert client_address("10.0.0.2", "203.0.113.7, ", chain) == "10.0.0.2"
    assert client_address("10.0.0.2", "garbage", chain) == "10.0.0.2"
    assert client_address("10.0.0.2", "", chain) == "10.0.0.2"
    assert client_address("10.0.0.2", None, chain) == "10.0.0.2"


def test_ipv6_ports_and_mapped_addresses() -> None:
    local = trusted("::1", "10.0.0.0/8")
    assert client_address("::1", "2001:DB8:0:0::7", local) == "2001:db8::7"
    assert client_address("::1", "[2001:db8::7]:4711", local) == "2001:db8::7"
    assert client_address("::1", "203.0.113.7:4711", local) == "203.0.113.7"
    assert client_address("::ffff:10.0.0.2", "203.0.113.7", local) == "203.0.113.7"  # IPv4 on a dual-stack socket
    assert client_address("::1", "[2001:db8::7", local) == "::1"  # malformed


def test_a_peer_that_is_not_an_address_is_left_as_it_is() -> None:
    assert client_address(None, "203.0.113.7", PROXY) is None
    assert client_address("unix:/run/dui.sock", "203.0.113.7", PROXY) == "unix:/run/dui.sock"
