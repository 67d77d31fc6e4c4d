"""``/metrics`` (docs/metrics.md): requests counted by interaction and status with no id or search value in any
label, who may read it, the database gauges computed at the scrape (outbox, audit seal lag), the outcomes of
external calls (INSi, outbox deliveries), and a database that cannot be read giving ``dui_metrics_database_up 0``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from dui.app import create_app
from dui.audit import trail
from dui.audit.keys import audit_keys
from dui.audit.tables import audit_event
from dui.auth.actor import Actor
from dui.clock import utc_now
from dui.errors import Forbidden, NotFound
from dui.metrics.counters import CountedInsi
from dui.metrics.database import DatabaseCollector
from dui.metrics.exposition import Exposition
from dui.outbox import queue
from dui.outbox.runner import delivered, permanent, run_due, transient
from dui.outbox.tables import outbox_job
from dui.services import Services
from dui.settings import MetricsSettings, Settings
from dui.web.metrics import check_access, interaction_of
from ins.errors import InsiUnavailable
from ins.insi.client import TraitsQuery
from ins.insi.memory import MemoryInsiClient
from tests.conftest import empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import FhirClient, patient

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "metrics-token-0123456789abcdef"
INTERACTIONS = {"read", "vread", "search", "history", "create", "update", "patch", "delete", "transaction",
                "operation", "capabilities", "api", "auth", "websocket", "health", "metrics", "other"}


def scrape(app: Flask, **headers: str) -> str:
    answer = app.test_client().get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain")
    return answer.get_data(as_text=True)


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def requests_of(found: Samples, interaction: str, status: int) -> float:
    return value(found, "dui_http_requests_total", interaction=interaction, status=str(status))


def staff_token(app: Flask) -> dict[str, str]:
    svc: Services = app.extensions["dui"]
    actor = Actor("staff", "ide-metrics", frozenset({"infirmier"}), "690001425")
    return {"Authorization": f"Bearer {svc.authenticator.tokens.issue(actor, svc.clock()).token}"}


def test_requests_are_counted_by_interaction_and_status_and_no_label_names_a_resident(
        app: Flask, client: FhirClient) -> None:
    before = samples(scrape(app))
    created = client.create(patient(family="Quenneville", given="Apolline"))
    rid = created["id"]
    assert client.get(f"Patient/{rid}").status_code == 200
    assert client.get(f"Patient/{rid}/_history/1").status_code == 200
    assert client.get("Patient/absent-resident-42").status_code == 404
    assert client.get("Patient?family=Quenneville&birthdate=1932-03-14").status_code == 200
    assert client.get("metadata").status_code == 200
    assert client.get("Patient/$nonexistent-op").status_code == 404
    web = app.test_client()
    assert web.get("/api/residents", headers=staff_token(app)).status_code == 200
    assert web.get("/api/residents").status_code == 401
    text = scrape(app)
    after = samples(text)

    def moved(interaction: str, status: int) -> float:
        return requests_of(after, interaction, status) - requests_of(before, interaction, status)

    assert moved("create", 201) == 1
    assert moved("read", 200) == 1
    assert moved("read", 404) == 1
    assert moved("vread", 200) == 1
    assert moved("search", 200) == 1
    assert moved("capabilities", 200) == 1
    assert moved("operation", 404) == 1
    assert moved("api", 200) == 1
    assert moved("api", 401) == 1
    assert moved("metrics", 200) == 1  # the first scrape
    count = "dui_http_request_duration_seconds_count"
    assert value(after, count, interaction="read") - value(before, count, interaction="read") == 2
    assert value(after, "dui_http_request_duration_seconds_bucket", interaction="read", le="+Inf") >= 2
    labels = {dict(key[1]).get("interaction") for key in after if key[0].startswith("dui_http_")}
    assert labels - {None} <= INTERACTIONS
    for secret in (rid, "Quenneville", "Apolline", "absent-resident-42", "1932-03-14", "nonexistent", "ide-metrics"):
        assert secret not in text, secret


def test_the_interaction_is_read_from_the_method_and_path_alone() -> None:
    assert interaction_of("GET", "/fhir/Patient/abc") == "read"
    assert interaction_of("HEAD", "/fhir/Patient/abc/_history/2") == "vread"
    assert interaction_of("POST", "/fhir/Observation/_search") == "search"
    assert interaction_of("GET", "/fhir/_history") == "history"
    assert interaction_of("POST", "/fhir") == "transaction"
    assert interaction_of("PATCH", "/fhir/Patient/abc") == "patch"
    assert interaction_of("DELETE", "/fhir/Patient?identifier=x") == "delete"
    assert interaction_of("POST", "/fhir/Patient/abc/$everything") == "operation"
    assert interaction_of("GET", "/fhir/a/b/c/d/e") == "other"
    assert interaction_of("GET", "/fhir") == "search"  # a search of several types (GET /fhir?_type=...)
    assert interaction_of("DELETE", "/fhir") == "other"
    assert interaction_of("POST", "/auth/token") == "auth"
    assert interaction_of("GET", "/.well-known/smart-configuration") == "auth"
    assert interaction_of("GET", "/api/residents/abc/vital-signs") == "api"
    assert interaction_of("GET", "/apiary") == "other"
    assert interaction_of("GET", "/healthz") == "health"
    assert interaction_of("GET", "/ws/subscriptions") == "websocket"
    assert interaction_of("GET", "/metrics/") == "metrics"


def test_without_a_token_the_metrics_are_served_to_this_machine_only_and_never_in_prod(app: Flask) -> None:
    web = app.test_client()
    assert web.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    far = web.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert far.status_code == 403
    assert "dui_" not in far.get_data(as_text=True)
    dev, prod = Settings(), Settings(env="prod")
    check_access(dev, None, "127.0.0.1")
    for peer in ("10.1.2.3", None, "not-an-address"):
        with pytest.raises(Forbidden):
            check_access(dev, None, peer)
    with pytest.raises(NotFound):
        check_access(prod, None, "127.0.0.1")


@pytest.fixture(scope="module")
def token_app(database_url: str, insi_dir: str) -> Iterator[Flask]:
    from dui.settings import InsiSettings

    application = create_app(settings_for(database_url, insi=InsiSettings(simulator_dir=insi_dir),
                                           metrics=MetricsSettings(token=TOKEN)))
    yield application
    application.extensions["dui"].dispose()


def test_with_a_token_only_its_bearer_reads_the_metrics_wherever_it_calls_from(token_app: Flask) -> None:
    empty_database(token_app)
    web = token_app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        refused = web.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "dui_http_requests_total" not in refused.get_data(as_text=True)
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert web.get("/metrics", headers=good, environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert "dui_metrics_database_up 1.0" in scrape(token_app, **good)
    # Neither a scrape nor a refused one is in the audit trail (health data never was in it, nor is the token)
    with token_app.extensions["dui"].unit_of_work(write=False) as session:
        assert session.execute(select(func.count()).select_from(audit_event)).scalar_one() == 0


@pytest.mark.parametrize("bad", ["short", "x" * 15, "has a space in it 0123", "accentué-0123456789"])
def test_a_weak_or_malformed_token_stops_start_up(bad: str) -> None:
    from dui.settings import SettingsError

    with pytest.raises(SettingsError, match="DUI_METRICS_TOKEN"):
        Settings.from_env({"DUI_METRICS_TOKEN": bad})
    assert Settings.from_env({"DUI_METRICS_TOKEN": TOKEN, "DUI_METRICS_DIR": "/run/dui"}).metrics == \
        MetricsSettings(token=TOKEN, directory="/run/dui")


def _jobs(svc: Services) -> None:
    now = utc_now()
    with svc.unit_of_work() as session:
        queue.enqueue(session, "dmp.send", "DocumentReference/a", "k1", now - timedelta(seconds=300))
        queue.enqueue(session, "dmp.send", "DocumentReference/b", "k2", now - timedelta(seconds=30))
        queue.enqueue(session, "dmp.send", "DocumentReference/c", "k3", now + timedelta(hours=1))  # not due yet
        dead = queue.enqueue(session, "mssante.send", "DocumentReference/d", "k4", now)
        session.execute(update(outbox_job).where(outbox_job.c.id == dead.id).values(state="dead"))


def test_the_outbox_depth_and_the_age_of_its_oldest_due_job_are_read_at_the_scrape(app: Flask,
                                                                                   client: FhirClient) -> None:
    _jobs(app.extensions["dui"])
    found = samples(scrape(app))
    assert value(found, "dui_metrics_database_up") == 1
    assert value(found, "dui_outbox_jobs", kind="dmp.send", state="due") == 3
    assert value(found, "dui_outbox_jobs", kind="mssante.send", state="dead") == 1
    assert value(found, "dui_outbox_jobs", kind="mssante.send", state="due") == 0  # a known kind, reported empty
    assert ("dui_outbox_jobs", frozenset({("kind", "dmp.update"), ("state", "running")})) in found
    assert 300 <= value(found, "dui_outbox_oldest_due_seconds", kind="dmp.send") < 400
    assert value(found, "dui_outbox_oldest_due_seconds", kind="mssante.send") == 0
    assert "DocumentReference/a" not in scrape(app) and "k1" not in scrape(app)


def test_the_audit_seal_lag_counts_and_ages_the_unsealed_entries_then_falls_to_zero(app: Flask,
                                                                                   client: FhirClient) -> None:
    client.create(patient())  # audited: an unsealed entry
    time.sleep(0.05)
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        unsealed = session.execute(select(func.count()).select_from(audit_event)
                                   .where(audit_event.c.chain_pos.is_(None))).scalar_one()
    found = samples(scrape(app))
    assert unsealed >= 1
    assert value(found, "dui_audit_unsealed_entries") == unsealed
    assert value(found, "dui_audit_seal_lag_seconds") > 0
    assert ("dui_audit_last_sealed_entry_timestamp_seconds", frozenset()) not in found  # nothing sealed yet
    deadline = time.monotonic() + 10  # PostgreSQL seals what every older transaction of the server has let settle
    while True:
        with svc.unit_of_work() as session:
            trail.seal(session, audit_keys(svc.settings).current)
        found = samples(scrape(app))
        if value(found, "dui_audit_unsealed_entries") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value(found, "dui_audit_unsealed_entries") == 0
    assert value(found, "dui_audit_seal_lag_seconds") == 0
    assert abs(value(found, "dui_audit_last_sealed_entry_timestamp_seconds") - time.time()) < 60


def test_a_database_that_cannot_be_read_gives_database_up_0_not_a_failed_scrape(tmp_path: Any) -> None:
    unreadable = DatabaseCollector(f"sqlite:///{tmp_path}/absent/dir/dui.sqlite", utc_now, kinds=("dmp.send",))
    body, content_type = Exposition((unreadable,)).render(None)
    found = samples(body.decode())
    assert value(found, "dui_metrics_database_up") == 0
    assert not any(name.startswith(("dui_outbox_", "dui_audit_")) for name, _ in found)
    assert content_type.startswith("text/plain")
    empty = tmp_path / "empty.sqlite"  # a database without the service's tables (not migrated)
    body, _ = Exposition((DatabaseCollector(f"sqlite:///{empty}", utc_now),)).render(None)
    assert value(samples(body.decode()), "dui_metrics_database_up") == 0


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(app: Flask) -> None:
    answer = app.test_client().get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.status_code == 200
    assert answer.content_type.startswith("application/openmetrics-text")
    assert answer.get_data(as_text=True).rstrip().endswith("# EOF")


def test_outbox_deliveries_are_counted_by_kind_and_outcome(app: Flask, client: FhirClient) -> None:
    svc: Services = app.extensions["dui"]
    now = utc_now()
    with svc.unit_of_work() as session:
        for key in ("a", "b", "c"):
            queue.enqueue(session, "metrics.test", "DocumentReference/x", key, now)
    outcomes = iter([delivered("ok"), transient("later"), permanent("never")])
    before = samples(scrape(app))
    report = run_due(svc.unit_of_work, {"metrics.test": lambda session, job: next(outcomes)}, now, "w-metrics")
    assert (report.delivered, report.retried, report.dead) == (1, 1, 1)
    after = samples(scrape(app))
    for outcome in ("delivered", "transient", "permanent"):
        name, labels = "dui_external_calls_total", {"system": "metrics.test", "outcome": outcome}
        assert value(after, name, **labels) - value(before, name, **labels) == 1, outcome


def test_insi_searches_are_counted_by_outcome_never_by_trait(app: Flask) -> None:
    twin = MemoryInsiClient()
    counted = CountedInsi(twin)
    before = samples(scrape(app))
    from datetime import date

    counted.search_by_traits(TraitsQuery("PERSONNE-INCONNUE", "ZOE", "F", date(1930, 1, 1)))
    twin.fail_with = InsiUnavailable("down")
    with pytest.raises(InsiUnavailable):
        counted.search_by_traits(TraitsQuery("PERSONNE-INCONNUE", "ZOE", "F", date(1930, 1, 1)))
    text = scrape(app)
    after = samples(text)
    for outcome in ("none", "unavailable"):
        labels = {"system": "insi", "outcome": outcome}
        assert value(after, "dui_external_calls_total", **labels) - \
            value(before, "dui_external_calls_total", **labels) == 1, outcome
    # the traits never appear as label values (a bare "1930" may well be digits of a timestamp sample)
    assert "INCONNUE" not in text and "ZOE" not in text and "1930-01-01" not in text


def test_the_database_pool_of_this_process_is_reported(app: Flask, client: FhirClient) -> None:
    client.get("metadata")
    found = samples(scrape(app))
    pool = app.extensions["dui"].engine.pool
    assert value(found, "dui_database_pool_size") == pool.size()
    assert value(found, "dui_database_pool_checked_out") == pool.checkedout() == 0


def test_dui_worker_serves_its_own_deliveries_on_its_metrics_port(app: Flask, client: FhirClient) -> None:
    import requests

    from dui.cli.worker import serve_metrics
    from dui.settings import SettingsError

    svc: Services = app.extensions["dui"]
    now = utc_now()
    with svc.unit_of_work() as session:
        queue.enqueue(session, "metrics.worker", "DocumentReference/x", "only", now)
    server = serve_metrics(svc, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        name, labels = "dui_external_calls_total", {"system": "metrics.worker", "outcome": "delivered"}
        before = value(samples(requests.get(f"{url}/metrics", timeout=10).text), name, **labels)
        run_due(svc.unit_of_work, {"metrics.worker": lambda session, job: delivered()}, now, "w-port")
        answer = requests.get(f"{url}/metrics", timeout=10)
        assert answer.status_code == 200
        assert value(samples(answer.text), name, **labels) - before == 1
        assert requests.get(f"{url}/fhir/metadata", timeout=10).status_code == 404  # the metrics only
    finally:
        server.shutdown()
    prod = Services.__new__(Services)
    prod.settings = Settings(env="prod")
    with pytest.raises(SettingsError, match="DUI_METRICS_TOKEN"):
        serve_metrics(prod, "127.0.0.1", 0)


def test_the_worker_port_keeps_the_rule_of_the_service(tmp_path: Any) -> None:
    from werkzeug.test import Client

    from dui.web.metrics import standalone

    guarded = Client(standalone(Settings(metrics=MetricsSettings(token=TOKEN))))
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    local = Client(standalone(Settings()))
    assert local.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    refused = local.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.9"})
    assert refused.status_code == 403
    assert refused.content_type == "application/problem+json"
    assert local.post("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 404


def test_an_ins_fetch_through_the_api_counts_its_insi_search(app: Flask, client: FhirClient) -> None:
    from ins.insi.table import LYON
    from tests.functional.test_identity import resident

    pid = client.create(resident())["id"]
    before = samples(scrape(app))
    fetched = client.post(f"Patient/{pid}/$ins-fetch", None)
    assert fetched.status_code == 200, fetched.get_data(as_text=True)
    text = scrape(app)
    after = samples(text)
    labels = {"system": "insi", "outcome": "found"}
    assert value(after, "dui_external_calls_total", **labels) - value(before, "dui_external_calls_total", **labels) == 1
    assert requests_of(after, "operation", 200) - requests_of(before, "operation", 200) == 1
    for secret in (pid, LYON.identity.matricule, "Berthier", "BERTHIER"):
        assert secret not in text, secret
    # the birth year: in no label value (the bare digits may occur inside a sample's value, 0.7731938890028687)
    assert not any("1938" in v for _, labelset in after for _, v in labelset)
