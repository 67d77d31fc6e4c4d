"""The hot statements on psycopg directly (``dui.direct_sql``): the reads of a read-only unit (where they run, what
they see, and what becomes of their connection when a statement fails, the database restarts or an exception lands
mid-statement) and the statements of a write, in the writing unit's own transaction."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy.exc import DBAPIError, ProgrammingError

from dui import direct_sql
from dui.db import DIRECT_ENGINE, READ_ONLY
from dui.fhir import sql
from dui.services import Services
from tests.helpers import FhirClient, patient


def _services(app: Flask) -> Services:
    svc: Services = app.extensions["dui"]
    return svc


def test_a_read_only_unit_reads_without_a_session_connection_and_a_writer_sees_its_own_write(
        client: FhirClient, app: Flask, backend: str) -> None:
    svc = _services(app)
    created = client.create(patient())
    assert client.get(f"Patient/{created['id']}").status_code == 200  # its data key is now known to the keyring
    with svc.unit_of_work(write=False) as session:
        assert session.info[READ_ONLY]
        found = svc.repository(session).read("Patient", created["id"])
        assert found is not None and found.resource() == created
        assert found.last_updated.utcoffset() is not None and found.last_updated.utcoffset().total_seconds() == 0
        # On PostgreSQL the read ran directly: the session never took a connection. SQLite reads through it.
        assert (DIRECT_ENGINE in session.info) == (backend == "postgresql")
        assert session.in_transaction() == (backend != "postgresql")
    with svc.unit_of_work(write=True) as session:
        store = svc.repository(session)
        current = store.current("Patient", created["id"], for_update=True)
        store.update(current, "Patient", created["id"], {**created, "gender": "female"})
        # not yet committed: only this unit's own session sees it, never a direct read
        assert DIRECT_ENGINE not in session.info
        again = store.read("Patient", created["id"])
        assert again is not None and again.version == 2 and again.resource()["gender"] == "female"
        assert [v.version for v in store.fetch([again.rid])] == [2]


def test_a_page_fetch_and_an_identifier_search_answer_the_same_directly_as_through_the_session(
        client: FhirClient, app: Flask) -> None:
    created = [client.create(patient(identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"27{i:013d}"}]))
               for i in range(3)]
    found = client.get("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|" + "27" + f"{1:013d}")
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.get_json()["entry"]] == [created[1]["id"]]
    page = client.get("Patient?_count=2&_sort=_id")
    assert page.status_code == 200 and len(page.get_json()["entry"]) == 2
    svc = _services(app)
    with svc.unit_of_work(write=False) as session:
        store = svc.repository(session)
        rids = [v.rid for v in (store.read("Patient", c["id"]) for c in created) if v is not None]
        direct = [(v.id, v.version, v.last_updated, v.body) for v in store.fetch(list(reversed(rids)))]
    with svc.unit_of_work(write=True) as session:  # the same rows through the session
        store = svc.repository(session)
        through = [(v.id, v.version, v.last_updated, v.body) for v in store.fetch(list(reversed(rids)))]
    assert direct == through and [d[0] for d in direct] == [c["id"] for c in reversed(created)]


@pytest.fixture
def pg_app(app: Flask, backend: str) -> Flask:
    if backend != "postgresql":
        pytest.skip("direct reads run on PostgreSQL only")
    return app


def _pool_connections(svc: Services) -> int:
    return int(svc.engine.pool.checkedin()) + int(svc.engine.pool.checkedout())  # type: ignore[attr-defined]


def test_a_direct_read_after_the_session_took_a_connection_runs_on_that_one(client: FhirClient, pg_app: Flask) -> None:
    """A thread never holds two connections: past the pool's size the pool would open and close one per request."""
    from sqlalchemy import select

    from dui.fhir.tables import resource

    svc = _services(pg_app)
    created = client.create(patient())
    client.get(f"Patient/{created['id']}")  # its data key known
    pool: Any = svc.engine.pool
    with svc.unit_of_work(write=False) as session:
        assert session.execute(select(resource.c.rid).limit(1)).first() is not None  # a search's own statement
        held = pool.checkedout()
        found = svc.repository(session).read("Patient", created["id"])
        assert found is not None and found.id == created["id"]
        assert pool.checkedout() == held


def test_a_failing_statement_becomes_sqlalchemys_error_and_its_connection_is_reused(pg_app: Flask) -> None:
    svc = _services(pg_app)
    direct_sql.run(svc.engine, "SELECT 1", {})
    before = _pool_connections(svc)
    with pytest.raises(ProgrammingError) as refused:
        direct_sql.run(svc.engine, "SELECT * FROM no_such_table WHERE x = %(x)s", {"x": "27"})
    assert refused.value.hide_parameters and "27" not in str(refused.value)  # health data never in a message
    assert not refused.value.connection_invalidated
    assert _pool_connections(svc) == before  # given back, in a clean state
    assert direct_sql.run(svc.engine, "SELECT 2", {}) == [(2,)]


def test_a_pooled_connection_keeps_one_cursor_and_a_replaced_connection_gets_its_own(pg_app: Flask) -> None:
    """The direct statements of a pooled connection run on the one cursor kept with it; a statement without rows
    (an UPDATE) gives none; a connection the pool replaced under the same entry gets a cursor of its own."""
    svc = _services(pg_app)
    svc.engine.dispose()
    assert direct_sql.run(svc.engine, "SELECT 1", {}) == [(1,)]
    fairy = svc.engine.raw_connection()
    kept = fairy.info[direct_sql._CURSOR]
    assert kept.connection is fairy.driver_connection
    fairy.close()
    assert direct_sql.run(svc.engine, "SELECT %(x)s::int", {"x": 5}) == [(5,)]
    assert direct_sql.run(svc.engine, "SET LOCAL statement_timeout = 1000", {}) == []  # no rows: none fetched
    fairy = svc.engine.raw_connection()
    assert fairy.info[direct_sql._CURSOR] is kept  # the same cursor, statement after statement
    fairy.invalidate()  # closed: the entry opens a new connection when next lent
    assert direct_sql.run(svc.engine, "SELECT 6", {}) == [(6,)]
    fairy = svc.engine.raw_connection()
    try:
        assert fairy.info[direct_sql._CURSOR] is not kept and kept.connection is not fairy.driver_connection
        assert fairy.info[direct_sql._CURSOR].connection is fairy.driver_connection
    finally:
        fairy.close()


def test_a_large_result_is_not_kept_with_its_cursor(pg_app: Flask) -> None:
    """A kept cursor holds its last result until its next statement: past ``KEEP_ROWS`` rows or ``KEEP_BYTES``
    (a search's page, a large Binary) the cursor is closed at once, and the next statement takes a new one."""
    svc = _services(pg_app)
    svc.engine.dispose()

    def kept() -> Any:
        fairy = svc.engine.raw_connection()
        try:
            return fairy.info.get(direct_sql._CURSOR)
        finally:
            fairy.close()

    assert direct_sql.run(svc.engine, "SELECT %(x)s::int", {"x": 1}) == [(1,)]
    small = kept()
    assert small is not None and not small.closed
    many = direct_sql.KEEP_ROWS + 1
    assert len(direct_sql.run(svc.engine, "SELECT generate_series(1, %(n)s)", {"n": many})) == many
    assert kept() is None and small.closed
    assert direct_sql.run(svc.engine, "SELECT 2", {}) == [(2,)]
    assert kept() is not None
    big = direct_sql.KEEP_BYTES + 1
    assert [len(r[0]) for r in direct_sql.run(svc.engine, "SELECT repeat('x', %(n)s)", {"n": big})] == [big]
    assert kept() is None
    fits = direct_sql.KEEP_BYTES // 2
    assert [len(r[0]) for r in direct_sql.run(svc.engine, "SELECT repeat('x', %(n)s)", {"n": fits})] == [fits]
    assert kept() is not None


class _Landed(BaseException):
    """What ``dui.web.budget`` raises in a request's thread at its deadline, wherever it is."""


class _LandsWhenRead(dict[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise _Landed


def test_a_connection_interrupted_mid_statement_is_closed_never_lent_again(pg_app: Flask) -> None:
    svc = _services(pg_app)
    direct_sql.run(svc.engine, "SELECT 1", {})
    lent: list[Any] = []
    original = svc.engine.raw_connection

    def recording() -> Any:
        fairy = original()
        lent.append(fairy.driver_connection)
        return fairy

    svc.engine.raw_connection = recording  # type: ignore[method-assign]
    try:
        with pytest.raises(_Landed):
            direct_sql.run(svc.engine, "SELECT %(x)s", _LandsWhenRead(x="1"))
    finally:
        del svc.engine.raw_connection
    assert lent and lent[0].closed
    assert direct_sql.run(svc.engine, "SELECT 3", {}) == [(3,)]


def _end_pooled_connections(svc: Services) -> None:
    """What a database restart does to the pool: every idle connection ended by the server, from outside."""
    lent = [svc.engine.raw_connection() for _ in range(max(1, svc.engine.pool.checkedin()))]  # type: ignore[attr-defined]
    pids = [fairy.driver_connection.info.backend_pid for fairy in lent]  # type: ignore[union-attr]
    for fairy in lent:
        fairy.close()
    conninfo = svc.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))


def test_a_read_after_the_database_dropped_every_connection_is_served(client: FhirClient, pg_app: Flask) -> None:
    """The first read to meet a dead connection is run once more (dui.web.fhir), on a fresh one, and answers as if
    nothing happened."""
    svc = _services(pg_app)
    created = client.create(patient())
    assert client.get(f"Patient/{created['id']}").status_code == 200
    _end_pooled_connections(svc)
    answer = client.get(f"Patient/{created['id']}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["id"] == created["id"]


def test_a_lost_connection_is_reported_as_one_and_the_pool_renewed(pg_app: Flask) -> None:
    svc = _services(pg_app)
    direct_sql.run(svc.engine, "SELECT 1", {})
    _end_pooled_connections(svc)
    with pytest.raises(DBAPIError) as lost:
        direct_sql.run(svc.engine, "SELECT 1", {})
    assert lost.value.connection_invalidated
    assert direct_sql.run(svc.engine, "SELECT 4", {}) == [(4,)]


def test_a_lost_connection_the_session_held_is_reported_as_one(client: FhirClient, pg_app: Flask) -> None:
    """The direct read that runs on the connection a search's own statement took, when the database ended it."""
    from sqlalchemy import select

    from dui.fhir.tables import resource

    svc = _services(pg_app)
    created = client.create(patient())
    client.get(f"Patient/{created['id']}")  # its data key known
    with pytest.raises(DBAPIError) as lost, svc.unit_of_work(write=False) as session:
        session.execute(select(resource.c.rid).limit(1)).all()
        pid = session.connection().connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        conninfo = svc.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        svc.repository(session).read("Patient", created["id"])
    assert lost.value.connection_invalidated
    answer = client.get(f"Patient/{created['id']}")  # a fresh connection for the next request
    assert answer.status_code == 200 and answer.get_json()["id"] == created["id"]


def test_every_hot_statement_is_one_psycopg_runs_as_it_is() -> None:
    for query in (sql._READ, sql._VREAD, sql._FETCH, sql._FETCH_ONE, *sql._TOKEN_PAGES.values(),
                  *sql._STRING_PAGES.values(), sql._CURRENT, sql._CURRENT_LOCKED, sql._INSERT_RESOURCE,
                  sql._ADVISORY_LOCK):
        assert "%(" in query.sql and "POSTCOMPILE" not in query.sql


def test_a_direct_statements_own_texts_are_written_into_it_and_its_other_values_given_each_run(pg_app: Flask) -> None:
    """A literal in a prebuilt statement (``x == "Patient"``) is written into its SQL, quotes and ``%`` escaped, so
    that PostgreSQL's kept plan knows it; a literal of another type is given with every run."""
    from sqlalchemy import bindparam, literal, select

    query = direct_sql.DirectQuery(select(literal("it's 100%"), literal(7), bindparam("x")))
    assert "'it''s 100%%'" in query.sql and query.values == {"param_2": 7}
    assert "param_1" not in query.sql
    svc = _services(pg_app)
    with svc.unit_of_work(write=False) as session:
        assert [tuple(r) for r in query.rows(session, {"x": "mine"})] == [("it's 100%", 7, "mine")]
    with svc.unit_of_work() as session:
        assert [tuple(r) for r in query.rows_writing(session, {"x": "mine"})] == [("it's 100%", 7, "mine")]
    scoped = sql._TOKEN_PAGES[True, True, True]
    assert "'Patient'" in scoped.sql and "%(finess)s" in scoped.sql and "%(now)s" in scoped.sql


def _pages(client: FhirClient, query: str) -> list[tuple[list[str], Any, list[str]]]:
    """Every page of a search, following its next links: the ids, the total and the relations of its links."""
    found = []
    path: str | None = query
    while path is not None:
        assert len(found) < 20, f"{query}: a next link past every page"
        answer = client.get(path)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        bundle = answer.get_json()
        found.append(([e["resource"]["id"] for e in bundle.get("entry", [])], bundle.get("total"),
                      sorted(link["relation"] for link in bundle["link"])))
        following = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        path = following.split("/fhir/", 1)[1] if following else None
    return found


def test_a_search_by_one_name_answers_the_same_with_its_prebuilt_statement_as_without(
        client: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for family, given in [("Lefèvre", "Hélène"), ("LEFEVRE", "Paul"), ("Lefebvre", "Anne"), ("Le Fèvre", "Jean"),
                          ("Martin", "Lefèvre"), ("Dupont-Lefèvre", "Marc"), ("Lef", "Zoé"), ("Garçon", "Ève")]:
        client.create(patient(family, given))
    queries = ["Patient?family=lefevre", "Patient?family=LEF&_count=2", "Patient?name=lef&_count=3&_total=accurate",
               "Patient?given=eve", "Patient?family:exact=Lefèvre", "Patient?family:exact=lefèvre",
               "Patient?family=garcon&_total=accurate", "Patient?family=zz", "Patient?family=Le Fèvre",
               "Patient?family=lef&_count=1&_total=accurate"]
    prebuilt = {q: _pages(client, q) for q in queries}
    used = []
    original = sql._simple_string
    monkeypatch.setattr(sql, "_simple_string", lambda plan: used.append(original(plan)))  # the general path
    general = {q: _pages(client, q) for q in queries}
    assert prebuilt == general
    assert len(used) >= len(queries) and all(u is not None for u in used)  # each would have been prebuilt
    assert [len(ids) for ids, _, _ in prebuilt["Patient?family=LEF&_count=2"]] == [2, 2, 1]
    assert prebuilt["Patient?family:exact=Lefèvre"][0][0] and not prebuilt["Patient?family=zz"][0][0]
    assert prebuilt["Patient?family=lef&_count=1&_total=accurate"][0][1] == 5


def test_a_name_search_the_prebuilt_statement_cannot_take_goes_the_general_way(client: FhirClient) -> None:
    from dui.fhir.search.plan import Leaf, SearchPlan

    def plan(*criteria: Any, **changes: Any) -> Any:
        return SearchPlan(resource_type="Patient", criteria=list(criteria), **changes)

    def leaf(value: str, modifier: str | None = None) -> Leaf:
        return Leaf(rtype="Patient", code="family", kind="string", modifier=modifier, values=(value,))

    assert sql._simple_string(plan(leaf("lef")))["prefix"] == "lef"
    assert sql._simple_string(plan(leaf("Lefèvre", "exact")))["exact"] == "Lefèvre"
    for refused in (plan(leaf("lef", "contains")), plan(leaf("--")), plan(leaf("a"), leaf("b")),
                    plan(Leaf(rtype="Patient", code="family", kind="string", modifier=None, values=("a", "b")))):
        assert sql._simple_string(refused) is None
    answer = client.get("Patient?family=--")  # no letter: refused, by the general path, with its reason
    assert answer.status_code == 400 and "no letter or digit" in answer.get_data(as_text=True)


def _statements(svc: Services) -> tuple[list[str], Any]:
    """The statements SQLAlchemy runs on ``svc``'s engine from now on, and what stops the count."""
    from sqlalchemy import event

    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split())[:60])

    event.listen(svc.engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(svc.engine, "before_cursor_execute", count)


def test_a_write_runs_its_own_statements_directly_in_its_transaction(client: FhirClient, app: Flask,
                                                                      backend: str) -> None:
    """On PostgreSQL the current row, the creators' lock and the new resource row go to psycopg directly, on the unit's
    own connection: the unit's later statements see them, and a rollback takes them back. On SQLite they go through
    the session."""
    svc = _services(app)
    seen, stop = _statements(svc)
    try:
        with pytest.raises(RuntimeError), svc.unit_of_work(write=True) as session:
            store = svc.repository(session)
            assert store.current("Patient", "direct-1", for_update=True) is None
            made = store.update(None, "Patient", "direct-1", patient())
            mine = store.current("Patient", "direct-1", for_update=True)  # sees its own uncommitted row
            assert mine is not None and mine.rid == made.rid and mine.version == 1
            assert mine.last_updated == made.last_updated and mine.last_updated.utcoffset().total_seconds() == 0
            through = [s for s in seen if s.startswith(("SELECT resource.rid", "INSERT INTO resource ",
                                                        "SELECT pg_advisory"))]
            if backend == "postgresql":
                assert through == []
            else:
                assert len(through) == 4  # current twice (no advisory lock on SQLite), the insert, current again
            raise RuntimeError("roll back")
    finally:
        stop()
    with svc.unit_of_work(write=True) as session:  # rolled back with the unit
        assert svc.repository(session).current("Patient", "direct-1", for_update=True) is None


def test_a_second_creator_of_one_id_waits_for_the_first_and_then_updates(pg_app: Flask) -> None:
    """The advisory lock taken directly serialises two creators of one id: the second finds the first's row."""
    import threading

    svc = _services(pg_app)
    first_holds, second_done = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def second() -> None:
        first_holds.wait(10)
        with svc.unit_of_work(write=True) as session:
            store = svc.repository(session)
            current = store.current("Patient", "direct-2", for_update=True)  # waits for the first's commit
            outcome["found"] = current.version if current is not None else None
            outcome["version"] = store.update(current, "Patient", "direct-2", patient(gender="male")).version
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with svc.unit_of_work(write=True) as session:
        store = svc.repository(session)
        assert store.current("Patient", "direct-2", for_update=True) is None  # takes the creators' lock
        store.update(None, "Patient", "direct-2", patient())
        first_holds.set()
        assert not second_done.wait(0.5)  # the second is held by the lock
    thread.join(10)
    assert outcome == {"found": 1, "version": 2}


def test_a_duplicate_resource_row_is_sqlalchemys_integrity_error(pg_app: Flask) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    svc = _services(pg_app)
    params = {"rtype": "Patient", "id": "direct-3", "first": 1, "now": datetime.now(UTC)}
    with pytest.raises(IntegrityError), svc.unit_of_work(write=True) as session:
        sql._INSERT_RESOURCE.rows_writing(session, params)
        sql._INSERT_RESOURCE.rows_writing(session, params)
    with svc.unit_of_work(write=True) as session:  # the unit rolled back: no row left
        assert svc.repository(session).current("Patient", "direct-3") is None


def test_an_update_leaves_only_the_index_rows_of_its_new_content(client: FhirClient, app: Flask) -> None:
    """Old index rows go (one statement on PostgreSQL, a DELETE per table on SQLite), whether they were written by an
    earlier unit or are still queued in this one (two updates of one resource in a unit)."""
    from sqlalchemy import func, select

    from dui.fhir.tables import INDEX_TABLES, search_text

    svc = _services(app)
    created = client.create(patient(family="Avant"))

    def index_rows(session: Any, rid: int) -> int:
        tables = {*INDEX_TABLES.values(), search_text}
        return sum(session.execute(select(func.count()).select_from(t).where(t.c.rid == rid)).scalar_one()
                   for t in tables)

    with svc.unit_of_work(write=True) as session:
        store = svc.repository(session)
        first = store.read("Patient", created["id"])
        assert first is not None
        fresh = index_rows(session, first.rid)
        for family in ("Pendant", "Apres"):  # the second drops rows the first only queued
            current = store.current("Patient", created["id"], for_update=True)
            renamed = {**created, "name": [{**created["name"][0], "family": family}]}
            store.update(current, "Patient", created["id"], renamed)
        store.flush()
        assert index_rows(session, first.rid) == fresh
    for family, expected in (("Avant", []), ("Pendant", []), ("Apres", [created["id"]])):
        found = client.get(f"Patient?family={family}").get_json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == expected, family


def test_a_small_flush_and_a_copy_write_the_same_index_rows(client: FhirClient, app: Flask) -> None:
    """A unit with few queued rows sends INSERTs in one pipeline, a larger one COPYs (PostgreSQL): the same
    resource gets the same rows either way, full-text vectors included (on SQLite both are the session's INSERTs)."""
    from sqlalchemy import select

    from dui.fhir.tables import INDEX_TABLES, search_text

    svc = _services(app)
    tables = sorted({*INDEX_TABLES.values(), search_text}, key=lambda t: t.name)
    content = patient(family="Indexee", text={"status": "generated",
                                              "div": '<div xmlns="http://www.w3.org/1999/xhtml">Mme Indexée</div>'})

    def written(others: int) -> dict[str, list[tuple[Any, ...]]]:
        with svc.unit_of_work(write=True) as session:
            store = svc.repository(session)
            for index in range(others):  # enough queued rows to go past sql._FEW_ROWS
                store.create("Patient", patient(family=f"Autre{index}"))
            made = store.create("Patient", dict(content))
        with svc.unit_of_work(write=True) as session:
            return {t.name: sorted(tuple(str(v) for k, v in row._mapping.items() if k not in ("rid", "rowid"))
                                   for row in session.execute(select(t).where(t.c.rid == made.rid)))
                    for t in tables}

    alone, among_many = written(0), written(40)
    assert alone == among_many and alone["search_string"] and alone["search_text"]
