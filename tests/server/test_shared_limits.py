"""Password guessing against a real ``dui serve --workers 4``: the token endpoint's limit is counted once for all
workers, in PostgreSQL (no DUI_REDIS_URL) or in Redis (here on a SQLite database, which has no counter of its
own), and ``X-Forwarded-For`` is believed only from the listed proxy.

Each guess is a new connection, so gunicorn spreads them over its workers; eight are in flight at a time. The
limit is the default one, 30 a minute and 10 at once: of 60 guesses from one address, about 10 may reach the
password check (plus what the bucket refills while they run), the rest get 429 before any check. Every guess
that reaches the check is a ``login`` entry of the audit trail, under the client's address. Counted per worker,
as before, 40 of 60 could get through.

The test client binds its connections to other loopback addresses (127.0.0.2, 127.0.0.3) to be another client
than the listed proxy, 127.0.0.1.
"""

from __future__ import annotations

import http.client
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import pytest
from sqlalchemy import text

from dui import migrations
from dui.db import make_engine
from tests.conftest import PG_URL, TEST_MASTER_KEY_FILE, migrated_schema
from tests.redisserver import RedisServer
from tests.server.conftest import running_server

BURST, PER_MINUTE = 10, 30  # DUI_AUTH_RATE_LIMIT_BURST, DUI_AUTH_RATE_LIMIT (the defaults, set here explicitly)
GUESSES = 60
PROXY = "127.0.0.1"


@dataclass(frozen=True)
class Served:
    store: str
    port: int
    database_url: str


@pytest.fixture(scope="module", params=["postgresql", "redis"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"shared-limits-{request.param}")
    env = {"DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE), "DUI_INSI_SIMULATOR_DIR": str(tmp / "insi"),
           "DUI_AUTH_RATE_LIMIT": str(PER_MINUTE), "DUI_AUTH_RATE_LIMIT_BURST": str(BURST),
           "DUI_RATE_LIMIT": "600000", "DUI_RATE_LIMIT_BURST": "100000", "DUI_TRUSTED_PROXIES": PROXY}
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("the database's rate limiter needs PostgreSQL: set DUI_TEST_DATABASE_URL")
        with migrated_schema("dui_limits") as url, \
                running_server({**env, "DUI_DATABASE_URL": url}, tmp, workers=4, threads=4) as base:
            yield Served("postgresql", _port(base), url)
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        url = f"sqlite:///{tmp / 'dui.sqlite'}"
        migrations.upgrade(url)
        with running_server({**env, "DUI_DATABASE_URL": url, "DUI_REDIS_URL": redis.url}, tmp, workers=4,
                            threads=4) as base:
            yield Served("redis", _port(base), url)


def _port(base: str) -> int:
    return int(urlparse(base).port or 80)


def guess(port: int, source: str, forwarded: str | None = None) -> int:
    """One password guess on a new connection from ``source``; the answer's status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    try:
        conn.request("POST", "/auth/token", urlencode({"grant_type": "password", "username": "ide.nobody",
                                                       "password": "Tilleuls-2026?"}), headers)
        return conn.getresponse().status
    finally:
        conn.close()


def campaign(port: int, source: str, forwarded: list[str | None]) -> tuple[Counter[int], float]:
    """The guesses, eight in flight at a time: the statuses, and how long it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(pool.map(lambda header: guess(port, source, header), forwarded))
    return statuses, time.monotonic() - started


def logins(served: Served, source: str) -> int:
    engine = make_engine(served.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM audit_event WHERE action = 'login' AND source = :s"),
                                    {"s": source}).scalar_one())
    finally:
        engine.dispose()


def assert_at_most_the_burst(served: Served, statuses: Counter[int], elapsed: float, client: str) -> None:
    assert set(statuses) <= {400, 429}, statuses
    reached = statuses[400]
    refilled = elapsed * PER_MINUTE / 60
    assert BURST <= reached <= BURST + refilled + 1, (served.store, statuses, round(elapsed, 2))
    assert statuses[429] == GUESSES - reached
    assert logins(served, client) == reached  # the password was checked exactly that many times


def test_password_guesses_from_one_address_reach_the_check_at_most_the_burst(served: Served) -> None:
    statuses, elapsed = campaign(served.port, "127.0.0.2", [None] * GUESSES)
    assert_at_most_the_burst(served, statuses, elapsed, "127.0.0.2")


def test_a_forged_forwarded_for_to_the_backend_port_gets_no_fresh_bucket(served: Served) -> None:
    """127.0.0.3 is not the listed proxy: each guess names another address, and all count against 127.0.0.3."""
    forged: list[str | None] = [f"203.0.113.{i}" for i in range(GUESSES)]
    statuses, elapsed = campaign(served.port, "127.0.0.3", forged)
    assert_at_most_the_burst(served, statuses, elapsed, "127.0.0.3")
    assert all(logins(served, f"203.0.113.{i}") == 0 for i in (0, 1, GUESSES - 1))


def test_behind_the_listed_proxy_the_client_is_the_address_it_forwarded(served: Served) -> None:
    """Through the proxy (127.0.0.1), the client is the entry the proxy appended; what the client wrote to its
    left is ignored, so changing it buys no fresh bucket."""
    forwarded: list[str | None] = [f"6.6.6.{i}, 198.51.100.20" for i in range(GUESSES)]
    statuses, elapsed = campaign(served.port, PROXY, forwarded)
    assert_at_most_the_burst(served, statuses, elapsed, "198.51.100.20")
    assert logins(served, PROXY) == 0 and logins(served, "6.6.6.0") == 0
    assert guess(served.port, PROXY, "198.51.100.21") == 400  # another client behind the proxy: its own bucket
    assert logins(served, "198.51.100.21") == 1


def test_redis_out_the_service_answers_counting_per_worker_and_says_so_once_per_worker(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """DUI_REDIS_URL names a Redis that is not there: the server starts and answers, each worker limits on its own
    (with 2 workers, at most twice the burst gets through), and each worker logs the outage once."""
    tmp = tmp_path_factory.mktemp("redis-out")
    url = f"sqlite:///{tmp / 'dui.sqlite'}"
    migrations.upgrade(url)
    nowhere = RedisServer(tmp / "never-started")  # a free port nothing listens on
    env = {"DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE), "DUI_INSI_SIMULATOR_DIR": str(tmp / "insi"),
           "DUI_DATABASE_URL": url, "DUI_REDIS_URL": f"redis://:pw-secret@127.0.0.1:{nowhere.port}/0",
           "DUI_AUTH_RATE_LIMIT": str(PER_MINUTE), "DUI_AUTH_RATE_LIMIT_BURST": str(BURST)}
    with running_server(env, tmp, workers=2, threads=4) as base:
        statuses, _ = campaign(_port(base), "127.0.0.2", [None] * GUESSES)
    assert set(statuses) <= {400, 429} and statuses[429] > 0, statuses
    assert BURST <= statuses[400] <= 2 * BURST + 4, statuses
    log = (tmp / "serve.log").read_text()
    assert 1 <= log.count("rate limiter unavailable") <= 2, log  # once per worker that took a request
    assert "pw-secret" not in log
