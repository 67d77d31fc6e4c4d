"""What reading from a replica costs a request: the read-your-writes check (dui.replica), measured.

    python bench/replica.py [--seconds 5]

Starts two local PostgreSQL clusters in streaming replication (tests/replication.py: needs the PostgreSQL server
binaries, and root or a user that may run them), loads one resident, then, single-threaded through the Flask test
client as a staff member: reads by id and creates, without DUI_DATABASE_READ_URL and with it (the replica on the same
host, so only the added work shows, not a second machine's capacity); and the two statements themselves
(``ReadRouter.mark_of``, the lookup each read makes on the primary, and ``ReadRouter.mark``, the upsert after each
write).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, text

from dui import migrations
from dui.app import create_app
from dui.auth.actor import Actor
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.settings import InsiSettings, ReadReplicaSettings, Settings
from tests.helpers import observation
from tests.replication import running_pair

PARC = ESTABLISHMENTS[1]["finess"]
FHIR = {"Content-Type": "application/fhir+json"}


def rate(call: Callable[[], object], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        done += 1
    return done / (time.perf_counter() - start)


def measure(url: str, read_url: str | None, seconds: float, tmp: Path) -> dict[str, float]:
    settings = Settings(database_url=url, base_url="http://bench", read_replica=ReadReplicaSettings(url=read_url),
                        log_level="WARNING", insi=InsiSettings(simulator_dir=str(tmp / "insi")))
    app = create_app(settings)
    svc = app.extensions["dui"]
    web = app.test_client()
    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):
        web.post("/fhir", json=bundle, headers=FHIR)
    actor = Actor("staff", "bench-nurse", frozenset({"infirmier"}), PARC)
    who = {"Authorization": f"Bearer {svc.authenticator.tokens.issue(actor, svc.clock()).token}", **FHIR}
    rid = web.post("/fhir/Observation", json=observation("Patient/demo-resident-001"), headers=who).get_json()["id"]
    time.sleep(0.5)  # the replica replays the write
    counts = {"primary": 0, "replica": 0}

    def counter(name: str) -> Callable[..., None]:
        def count(*_: object) -> None:
            counts[name] += 1
        return count

    event.listen(svc.engine, "before_cursor_execute", counter("primary"))
    if svc.reads is not None:
        event.listen(svc.reads.engine, "before_cursor_execute", counter("replica"))
    for _ in range(2):  # the router's first check of the replica happens on the first read
        web.get(f"/fhir/Observation/{rid}", headers=who)
    counts.update(primary=0, replica=0)
    for _ in range(100):
        web.get(f"/fhir/Observation/{rid}", headers=who)
    statements = {f"statements per read by id, {name}": n / 100 for name, n in counts.items()}
    counts.update(primary=0, replica=0)
    for _ in range(20):
        web.post("/fhir/Observation", json=observation("Patient/demo-resident-001"), headers=who)
    statements |= {f"statements per create, {name}": n / 20 for name, n in counts.items()}
    out = statements | {"read by id, req/s": rate(lambda: web.get(f"/fhir/Observation/{rid}", headers=who), seconds),
           "create, req/s": rate(lambda: web.post("/fhir/Observation", json=observation(
               "Patient/demo-resident-001"), headers=who), seconds)}
    def select_one() -> None:
        with svc.unit_of_work(write=False) as session:
            session.execute(text("SELECT 1"))

    out["SELECT 1 on the primary (a round trip, for scale), us"] = 1e6 / rate(select_one, seconds / 2)
    if svc.reads is not None:
        out["mark_of (each read), us"] = 1e6 / rate(lambda: svc.reads.mark_of(actor), seconds / 2)
        out["mark (each write), us"] = 1e6 / rate(lambda: svc.reads.mark(actor), seconds / 2)
    svc.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    seconds = parser.parse_args().seconds
    with running_pair() as pair, tempfile.TemporaryDirectory() as tmp:
        pair.primary.sql("CREATE DATABASE dui")
        migrations.upgrade(pair.primary.url("dui"))
        pair.wait_caught_up()
        alone = measure(pair.primary.url("dui"), None, seconds, Path(tmp))
        replica = measure(pair.primary.url("dui"), pair.standby.url("dui"), seconds, Path(tmp))
    print("| measure | primary only | with the replica |\n|---|---:|---:|")
    for key in replica:
        print(f"| {key} | " + (f"{alone[key]:.1f}" if key in alone else "") + f" | {replica[key]:.1f} |")


if __name__ == "__main__":
    main()
