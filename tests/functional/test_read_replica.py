"""Reads from a streaming replica with read-your-writes for the writer (``DUI_DATABASE_READ_URL``, dui.replica,
docs/scaling.md), on two real PostgreSQL clusters in streaming replication started here (tests/replication.py).

How the tests know which database answered: replay is paused on the standby, so a row written since is on the
primary only; an actor who does not see it was served by the replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from dui import migrations
from dui.app import create_app
from dui.auth.actor import Actor
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.metrics.counters import REGISTRY
from dui.settings import InsiSettings, ReadReplicaSettings, Settings, SettingsError
from tests.conftest import test_settings as settings_for
from tests.helpers import observation
from tests.replication import Pair, running_pair

PARC = ESTABLISHMENTS[1]["finess"]
MINE = "demo-resident-001"  # a resident of Le Parc


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair() as running:
        running.primary.sql("CREATE DATABASE dui")
        migrations.upgrade(running.primary.url("dui"))
        yield running


@pytest.fixture(scope="module")
def app(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    replica = ReadReplicaSettings(url=pair.standby.url("dui"), max_lag=3600.0, check_interval=0.05)
    application = create_app(settings_for(
        pair.primary.url("dui"), read_replica=replica,
        insi=InsiSettings(simulator_dir=str(tmp_path_factory.mktemp("insi")), timeout=3.0)))
    web = application.test_client()
    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):
        answer = web.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
    yield application
    application.extensions["dui"].dispose()


@pytest.fixture
def replaying(pair: Pair) -> Iterator[Pair]:
    """The standby replaying, caught up with the primary, at the start and at the end of each test."""
    pair.standby.sql("SELECT pg_wal_replay_resume()")
    pair.wait_caught_up()
    yield pair
    pair.standby.sql("SELECT pg_wal_replay_resume()")


def nurse(app: Flask, name: str) -> dict[str, str]:
    svc = app.extensions["dui"]
    issued = svc.authenticator.tokens.issue(Actor("staff", name, frozenset({"infirmier"}), PARC), svc.clock())
    return {"Authorization": f"Bearer {issued.token}"}


def reads(target: str, reason: str) -> float:
    return REGISTRY.get_sample_value("dui_database_reads_total", {"target": target, "reason": reason}) or 0.0


def create_observation(app: Flask, web: FlaskClient, who: dict[str, str], value: float) -> str:
    answer = web.post("/fhir/Observation", json=observation(f"Patient/{MINE}", value=value),
                      headers={**who, "Content-Type": "application/fhir+json"})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    rid: str = answer.get_json()["id"]
    return rid


def audited_reads(app: Flask, actor_id: str, rid: str) -> int:
    with app.extensions["dui"].engine.connect() as conn:
        count: int = conn.execute(text("SELECT count(*) FROM audit_event WHERE actor_id = :a AND resource_id = :r "
                                       "AND action = 'read'"), {"a": actor_id, "r": rid}).scalar_one()
        return count


def test_the_writer_reads_its_write_at_once_others_read_the_replica_until_it_replays(
        app: Flask, replaying: Pair) -> None:
    web = app.test_client()
    writer, other = nurse(app, "nurse-writer"), nurse(app, "nurse-other")
    assert web.get(f"/fhir/Patient/{MINE}", headers=other).status_code == 200
    replaying.standby.sql("SELECT pg_wal_replay_pause()")
    before = (reads("replica", "replica"), reads("primary", "writer"))

    rid = create_observation(app, web, writer, 61.0)
    mine = web.get(f"/fhir/Observation/{rid}", headers=writer)
    assert mine.status_code == 200, mine.get_data(as_text=True)  # from the primary: the replica has not got it
    assert mine.get_json()["valueQuantity"]["value"] == 61.0
    searched = web.get(f"/fhir/Observation?subject=Patient/{MINE}&_id={rid}", headers=writer).get_json()
    assert [e["resource"]["id"] for e in searched.get("entry", [])] == [rid]
    theirs = web.get(f"/fhir/Observation/{rid}", headers=other)
    assert theirs.status_code == 404  # the paused replica answered: it has not replayed the write yet
    assert web.get(f"/api/residents/{MINE}", headers=other).status_code == 200  # /api GETs: on the replica too
    assert reads("primary", "writer") - before[1] == 2
    assert reads("replica", "replica") - before[0] == 2

    replaying.standby.sql("SELECT pg_wal_replay_resume()")
    replaying.wait_caught_up()
    theirs = web.get(f"/fhir/Observation/{rid}", headers=other)
    assert theirs.status_code == 200 and theirs.get_json()["valueQuantity"]["value"] == 61.0
    # Every read, on either database, has its audit entry on the primary
    assert audited_reads(app, "nurse-writer", rid) == 1 and audited_reads(app, "nurse-other", rid) == 2


def test_once_the_replica_has_replayed_the_writer_reads_from_it_again(app: Flask, replaying: Pair) -> None:
    web = app.test_client()
    writer = nurse(app, "nurse-back")
    rid = create_observation(app, web, writer, 62.0)
    replaying.wait_caught_up()
    before = reads("replica", "replica")
    assert web.get(f"/fhir/Observation/{rid}", headers=writer).status_code == 200
    assert reads("replica", "replica") - before == 1


def test_a_replica_further_behind_than_the_bound_is_not_read(app: Flask, replaying: Pair) -> None:
    svc = app.extensions["dui"]
    router = svc.reads
    bound = router.settings
    router.settings = ReadReplicaSettings(url=bound.url, max_lag=0.3, check_interval=0.05)
    try:
        web = app.test_client()
        replaying.standby.sql("SELECT pg_wal_replay_pause()")
        rid = create_observation(app, web, nurse(app, "nurse-lag-writer"), 63.0)
        time.sleep(0.2)
        router.state()  # a check: it notes the primary's position now, which the replica lacks
        time.sleep(0.5)
        before = reads("primary", "lagging")
        theirs = web.get(f"/fhir/Observation/{rid}", headers=nurse(app, "nurse-lag-other"))
        assert theirs.status_code == 200  # from the primary: the replica is more than 0.3 s behind
        assert reads("primary", "lagging") - before == 1
    finally:
        router.settings = bound


def test_a_stopped_replica_leaves_reads_to_the_primary(app: Flask, replaying: Pair) -> None:
    web = app.test_client()
    other = nurse(app, "nurse-stopped")
    assert web.get(f"/fhir/Patient/{MINE}", headers=other).status_code == 200  # the pool holds replica connections
    replaying.standby.ctl("stop", "-m", "fast")
    try:
        rid = create_observation(app, web, nurse(app, "nurse-writer-2"), 64.0)
        for path in (f"/fhir/Observation/{rid}", f"/fhir/Patient/{MINE}", f"/fhir/Observation?subject=Patient/{MINE}",
                     f"/api/residents/{MINE}"):
            answer = web.get(path, headers=other)
            assert answer.status_code == 200, (path, answer.get_data(as_text=True))
        assert reads("primary", "unreachable") + reads("primary", "failed") >= 4
    finally:
        replaying.standby.ctl("start")
    time.sleep(0.1)
    replaying.wait_caught_up()
    before = reads("replica", "replica")
    assert web.get(f"/fhir/Patient/{MINE}", headers=other).status_code == 200
    assert reads("replica", "replica") - before == 1  # back on the replica once it answers again


@pytest.mark.parametrize("primary, replica, message", [
    ("sqlite:///var/dui.sqlite", "postgresql://u@replica/dui", "needs a PostgreSQL DUI_DATABASE_URL"),
    ("postgresql://u@primary/dui", "mysql://u@replica/dui", "must be a postgresql:// URL"),
])
def test_a_read_url_is_refused_with_sqlite_or_another_database(primary: str, replica: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env({"DUI_DATABASE_URL": primary, "DUI_DATABASE_READ_URL": replica})
    assert "\n" not in str(refused.value) and "u@replica" not in str(refused.value)


def test_the_sqlite_refusal_also_holds_for_settings_made_in_code(tmp_path: Any) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite'}",
                        read_replica=ReadReplicaSettings(url="postgresql://u@replica/dui"))
    with pytest.raises(SettingsError, match="needs a PostgreSQL DUI_DATABASE_URL"):
        create_app(settings)


@pytest.mark.parametrize("url, ok", [
    ("postgresql://u@pgbouncer:6432/dui?prepare_threshold=none", True),
    ("postgresql://u@pgbouncer:6432/dui?sslmode=require&prepare_threshold=0", True),
    ("postgresql://u@pgbouncer:6432/dui?prepare_threshold=never", False),
])
def test_prepare_threshold_in_the_database_url_is_a_number_or_none(url: str, ok: bool) -> None:
    environ = {"DUI_DATABASE_URL": url}
    if ok:
        assert Settings.from_env(environ).database_url == url
        return
    with pytest.raises(SettingsError, match="prepare_threshold must be a whole number or none"):
        Settings.from_env(environ)
