"""``SqlFhirRepository``: the FHIR store on SQLAlchemy (PostgreSQL, SQLite).

A write is: the ``resource`` row (inserted, or updated under a row lock), one new
``resource_version`` row, and the search index rows of the new version, all in the caller's
transaction. History is append-only. Concurrency:

- two writers of the same resource are serialised by ``SELECT ... FOR UPDATE`` on its row, or, when
  it does not exist yet, by an advisory lock on its type and id (PostgreSQL); SQLite serialises
  writers with ``BEGIN IMMEDIATE`` (``dui.db.begin_write``);
- unique identifiers (INS) are a UNIQUE constraint: a clash becomes ``Conflict`` (409).

Round trips are what a write costs on PostgreSQL, so the rows that no constraint can refuse (the
version and its index rows) are queued and written in one ``executemany`` per table: before any
read that could need them, at the end of a savepoint, and before the transaction commits. The
``resource`` row (which gives the row id and takes the lock) and the unique identifiers (which may
clash, and must then fail on the right entry) are written at once.

Bodies are stored encrypted (``dui.fhir.bodies``, ``dui.crypto``): sealed when the version row is queued,
bound to its row id, version and type; opened when a version is read. Plaintext bodies written before
encryption existed are read as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    any_,
    bindparam,
    delete,
    event,
    false,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.clock import Clock
from dui.crypto.keyring import Keyring
from dui.db import advisory_key
from dui.direct_sql import DirectQuery
from dui.errors import Conflict
from dui.fhir import jsontext
from dui.fhir.bodies import Bodies
from dui.fhir.repository import Current, HistoryPage, ResourceVersion, SearchResult, iter_chunks
from dui.fhir.scope import SEEN_PATIENT_ROWS
from dui.fhir.search import compartment, includes, order
from dui.fhir.search.indexer import Indexer
from dui.fhir.search.normalize import normalize
from dui.fhir.search.plan import Include, Leaf, SearchPlan, split_values
from dui.fhir.search.where import Criteria
from dui.fhir.tables import (
    INDEX_TABLES,
    TEXT_INDEX,
    resource,
    resource_version,
    search_reference,
    search_string,
    search_text,
    search_token,
    unique_identifier,
)

_CURRENT_COLUMNS = (resource.c.rid, resource.c.res_type, resource.c.res_id, resource.c.version,
                    resource.c.last_updated, resource.c.deleted)
_INDEX_TABLES = (*dict.fromkeys(INDEX_TABLES.values()), search_text)
# The full-text row on PostgreSQL: the folded text becomes the french configuration's lexemes as it is written.
_FRENCH: Any = literal_column("'french'::regconfig")
_INSERT_TEXT_PG = DirectQuery(insert(search_text).values(  # through the session, or its SQL in a pipeline
    rid=bindparam("p_rid"), narrative=func.to_tsvector(_FRENCH, bindparam("p_narrative")),
    content=func.to_tsvector(_FRENCH, bindparam("p_content"))))
_FEW_ROWS = 100  # queued rows up to which a flush sends INSERTs in one pipeline rather than a COPY per table


# The one answer to a second record of an INS: the same whether the caller may see the resident who holds it or not.
INS_RECORDED = ("This INS is already recorded: a resident is recorded once in the DUI, whatever the establishment. "
                "Find the resident with a conditional create (If-None-Exist: identifier=system|value), which answers "
                "with the record when your establishment may see it; a resident coming from another establishment "
                "of the group is admitted by a transfer between the two establishments.")


def format_instant(moment: datetime) -> str:
    """``meta.lastUpdated`` text: UTC, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


# Told of every version written, in the writing transaction (``dui.documents.freshness``: the DLU goes out of
# date). Use-case packages provide them at wiring time: the store never imports them.
ChangeListener = Callable[["SqlFhirRepository", ResourceVersion], None]
# Asked before every write (the stored row, or None; the type; the new content, None for a delete); raises to refuse
# it. ``dui.profiles.catalogue.guard``: the conformance resources served from the installed packages are read-only.
WriteGuard = Callable[["SqlFhirRepository", Current | None, str, "dict[str, Any] | None"], None]


_REPOSITORIES = "dui.fhir.repositories"  # in Session.info: the repositories working in that session


@event.listens_for(Session, "before_commit")
def _flush_before_commit(session: Session) -> None:
    for repository in session.info.get(_REPOSITORIES, ()):
        repository.flush()


class SqlFhirRepository:
    """One per unit of work (request, CLI command, job); holds the session."""

    def __init__(self, session: Session, indexer: Indexer, clock: Clock, keyring: Keyring,
                 id_factory: Callable[[], str] = new_id, listeners: Sequence[ChangeListener] = (),
                 guard: WriteGuard | None = None) -> None:
        self.session = session
        self.guard = guard
        self.listeners = tuple(listeners)
        self.bodies = Bodies(session, keyring)
        self.indexer = indexer
        self.clock = clock
        self.id_factory = id_factory
        self._pending: list[tuple[Table, dict[str, Any]]] = []
        self._queued: set[int] = set()  # the row ids with index rows in _pending (or once had, until the next flush)
        # Flushed before its session commits (``_flush_before_commit``, one listener for every session: listening
        # per session cost 6 % of a read)
        session.info.setdefault(_REPOSITORIES, []).append(self)

    def flush(self) -> None:
        """Write the queued version and index rows, one statement per table."""
        if not self._pending:
            return
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for table, row in self._pending:
            by_table.setdefault(table, []).append(row)
        self._pending = []
        self._queued.clear()
        connection = self.session.connection()
        texts = by_table.pop(search_text, [])
        if connection.dialect.name == "postgresql":
            driver = connection.connection.driver_connection
            text_rows = [{"p_rid": r["rid"], "p_narrative": r["narrative"], "p_content": r["content"]} for r in texts]
            if sum(len(rows) for rows in by_table.values()) + len(texts) <= _FEW_ROWS:
                # A unit that wrote a resource or two (a POST, a PUT): every table's INSERTs sent at once in one
                # pipeline, one round trip, where a COPY per table took two each.
                with driver.cursor() as cursor, driver.pipeline():  # type: ignore[union-attr]
                    if text_rows:
                        cursor.executemany(_INSERT_TEXT_PG.sql, text_rows)
                    for table, rows in by_table.items():
                        columns = list(rows[0])
                        cursor.executemany(f"INSERT INTO {table.name} ({', '.join(columns)}) "
                                           f"VALUES ({', '.join(['%s'] * len(columns))})",
                                           [[row[c] for c in columns] for row in rows])
                return
            if text_rows:
                self.session.execute(_INSERT_TEXT_PG.statement, text_rows)
            # COPY: one stream per table, several times faster than INSERTs for index rows.
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                for table, rows in by_table.items():
                    columns = list(rows[0])
                    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row([row[c] for c in columns])
            return
        if texts:
            by_table[search_text] = texts
        for table, rows in by_table.items():
            self.session.execute(insert(table), rows)

    # -- reads --------------------------------------------------------------------------------

    def current(self, rtype: str, rid: str, *, for_update: bool = False) -> Current | None:
        params = {"rtype": rtype, "id": rid}
        if for_update:
            rows = _CURRENT_LOCKED.rows_writing(self.session, params)
            if not rows:
                # Nothing to lock yet: serialise creators of this very id instead, then look again.
                self.lock(f"resource:{rtype}/{rid}")
                rows = _CURRENT_LOCKED.rows_writing(self.session, params)
        else:
            rows = _CURRENT.rows(self.session, params)
        if not rows:
            return None
        row_id, row_type, res_id, version, last_updated, deleted = rows[0]
        return Current(row_id, row_type, res_id, version, _utc(last_updated), deleted)

    def read(self, rtype: str, rid: str) -> ResourceVersion | None:
        self.flush()
        rows = _READ.rows(self.session, {"rtype": rtype, "id": rid})
        return self._version(rows[0]) if rows else None

    def vread(self, rtype: str, rid: str, version: int) -> ResourceVersion | None:
        self.flush()
        rows = _VREAD.rows(self.session, {"rtype": rtype, "id": rid, "version": version})
        return self._version(rows[0]) if rows else None

    def fetch(self, rids: Sequence[int]) -> list[ResourceVersion]:
        self.flush()
        if len(rids) == 1:  # a search by identifier's page: its own statement (see _FETCH_ONE)
            return [self._version(row) for row in _FETCH_ONE.rows(self.session, {"rid": rids[0]})]
        found: dict[int, ResourceVersion] = {}
        for chunk in iter_chunks(list(rids), 500):
            for row in _FETCH.rows(self.session, {"rids": list(chunk)}):
                found[row[0]] = self._version(row)
        return [found[r] for r in rids if r in found]

    def history(self, *, rtype: str | None = None, rid: str | None = None, since: datetime | None = None,
                before_vid: int | None = None, count: int = 20, types: Sequence[str] | None = None) -> HistoryPage:
        self.flush()
        stmt = self._versions()
        conditions = []
        if rtype is not None:
            conditions.append(resource_version.c.res_type == rtype)
        if types is not None:  # a system history limited to these types
            conditions.append(resource_version.c.res_type.in_(sorted(types)))
        if rid is not None:
            conditions.append(resource.c.res_id == rid)
        if since is not None:
            conditions.append(resource_version.c.last_updated >= since)
        total = None
        if rid is not None:
            total = self.session.execute(
                select(func.count()).select_from(resource_version.join(resource)).where(*conditions)
            ).scalar_one()
        if before_vid is not None:
            conditions.append(resource_version.c.vid < before_vid)
        rows = self.session.execute(
            stmt.where(*conditions).order_by(resource_version.c.vid.desc()).limit(count + 1)
        ).all()
        versions = [self._version(r) for r in rows[:count]]
        next_cursor = versions[-1].vid if len(rows) > count else None
        return HistoryPage(versions, next_cursor, total)

    def search(self, plan: SearchPlan, *, total: str | None = None) -> SearchResult:
        self.flush()
        criteria = Criteria(self.indexer.tz, self.indexer.fhir_base, self.clock(), plan.within)
        rows: list[Any] = []
        more = False
        backwards = False
        count = None
        windowed = total == "accurate" and plan.cursor is None
        if plan.count > 0:
            simple = _simple_token(plan)
            named = _simple_string(plan) if simple is None else None
            if simple is not None:  # the commonest search (by identifier): a statement built once
                simple["limit"] = plan.count + 1
                rows = list(_TOKEN_PAGES[windowed, "system" in simple, "finess" in simple].rows(self.session, simple))
            elif named is not None:  # the next (by name): likewise
                named["limit"] = plan.count + 1
                rows = list(_STRING_PAGES[windowed, "exact" in named, "finess" in named].rows(self.session, named))
            else:
                stmt, backwards = order.page_query(plan, criteria.matches(plan), plan.count + 1, with_total=windowed)
                rows = list(self.session.execute(stmt).all())
            if windowed:
                count = int(rows[0][-1]) if rows else 0
            more = len(rows) > plan.count
            rows = rows[:plan.count]
            if backwards:
                rows.reverse()
        next_cursor = previous_cursor = None
        if rows:
            if more or backwards:
                next_cursor = order.position(plan.sort, rows[-1], "n")
            if (more and backwards) or (plan.cursor is not None and not backwards):
                previous_cursor = order.position(plan.sort, rows[0], "p")
        if total == "accurate" and count is None:
            matches = criteria.matches(plan)
            count = self.session.execute(matches.select(func.count())).scalar_one()
        elif total == "estimate":
            matches = criteria.matches(plan)
            count = self._estimate(matches.select(matches.rid))
        return SearchResult([int(r[0]) for r in rows], count, next_cursor, previous_cursor)

    def _estimate(self, stmt: Select[Any]) -> int:
        """The planner's row estimate on PostgreSQL (cheap, approximate); an exact count elsewhere."""
        if self.session.get_bind().dialect.name != "postgresql":
            return int(self.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
        compiled = stmt.compile(dialect=self.session.get_bind().dialect)
        plan = self.session.connection().exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
        return int(plan.scalar_one()[0]["Plan"]["Plan Rows"])

    def everything(self, patient_rid: int, patient_id: str,
                   options: dict[str, Any]) -> tuple[list[int], dict[str, Any] | None]:
        """One page of a Patient's record: the Patient, its compartment, then what they point at."""
        self.flush()
        count = options["count"]
        cursor = options["cursor"] or {"k": [0], "r": 0}
        phase = cursor["k"][0] if cursor.get("k") in ([0], [1], [2]) else 0
        after = int(cursor["r"])
        phases = {0: compartment.patient_page, 1: compartment.record_page, 2: compartment.referenced_page}
        rids: list[int] = []
        if count == 0:
            return rids, None
        while phase in phases:
            room = count - len(rids)
            stmt = phases[phase](patient_rid, patient_id, after, options, room + 1)
            found = [int(r) for r in self.session.execute(stmt).scalars()]
            if len(found) > room:  # more in this phase: continue after the last one taken
                rids += found[:room]
                return rids, {"k": [phase], "r": found[room - 1] if room else after}
            rids += found
            phase, after = phase + 1, 0
        return rids, None

    def include(self, include: Include, rids: Sequence[int]) -> list[int]:
        self.flush()
        found: list[int] = []
        for chunk in iter_chunks(list(rids), 500):
            stmt = includes.reverse(include, chunk) if include.reverse else includes.forward(include, chunk)
            found.extend(int(r) for r in self.session.execute(stmt).scalars())
        return found

    def referrers(self, rtype: str, rid: str) -> list[int]:
        """Row ids of the current resources whose indexed references point at ``rtype/rid``, in order."""
        self.flush()
        stmt = (select(search_reference.c.rid).distinct()
                .where(search_reference.c.target_type == rtype, search_reference.c.target_id == rid)
                .order_by(search_reference.c.rid))
        return [int(r) for r in self.session.execute(stmt).scalars()]

    def _versions(self) -> Select[Any]:
        return _versions()

    def _version(self, row: Any) -> ResourceVersion:
        """A row of ``_versions()``, by position: a SQLAlchemy row or a tuple of ``dui.direct_sql``."""
        rid, rtype, res_id, version, last_updated, method, body, vid = row
        # UtcDateTime's own conversion, which a direct row has not been through (idempotent on the others)
        return ResourceVersion(rid, rtype, res_id, version, _utc(last_updated), method == "DELETE", method,
                               self.bodies.open(rtype, rid, version, body), vid)

    # -- writes -------------------------------------------------------------------------------

    def create(self, rtype: str, resource_: dict[str, Any], *, rid: str | None = None,
               method: str = "POST") -> ResourceVersion:
        return self._write(None, rtype, rid or self.id_factory(), resource_, method)

    def update(self, current: Current | None, rtype: str, rid: str, resource_: dict[str, Any],
               *, method: str = "PUT") -> ResourceVersion:
        return self._write(current, rtype, rid, resource_, method)

    def delete(self, current: Current) -> ResourceVersion:
        if self.guard is not None:
            self.guard(self, current, current.type, None)
        now = self.clock()
        version = current.version + 1
        self.session.execute(update(resource).where(resource.c.rid == current.rid)
                             .values(version=version, last_updated=now, deleted=True))
        self._drop_index(current.rid)
        self._pending.append((resource_version, {
            "rid": current.rid, "version": version, "res_type": current.type, "last_updated": now,
            "method": "DELETE", "body": None}))
        return self._changed(
            ResourceVersion(current.rid, current.type, current.id, version, now, True, "DELETE", None))

    def _changed(self, version: ResourceVersion) -> ResourceVersion:
        """Tell the listeners (in this transaction: what they write commits or rolls back with the change)."""
        for listener in self.listeners:
            listener(self, version)
        return version

    def _write(self, current: Current | None, rtype: str, res_id: str, content: dict[str, Any],
               method: str) -> ResourceVersion:
        if self.guard is not None:
            self.guard(self, current, rtype, content)
        now = self.clock()
        version = 1 if current is None else current.version + 1
        meta = dict(content.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now)
        stored = {"resourceType": rtype, "id": res_id, "meta": meta}
        stored.update((k, v) for k, v in content.items() if k not in stored)
        body = jsontext.dump(stored)
        try:
            if current is None:
                row_id = _INSERT_RESOURCE.rows_writing(self.session, {
                    "rtype": rtype, "id": res_id, "first": version, "now": now})[0][0]
            else:
                row_id = current.rid
                _UPDATE_RESOURCE.rows_writing(self.session, {"row": row_id, "next": version, "now": now})
                self._drop_index(row_id)
            self._pending.append((resource_version, {
                "rid": row_id, "version": version, "res_type": rtype, "last_updated": now, "method": method,
                "body": self.bodies.seal(rtype, row_id, version, body)}))
            self._write_index(row_id, rtype, stored)
        except IntegrityError as exc:
            raise _conflict(exc, rtype) from None
        return self._changed(ResourceVersion(row_id, rtype, res_id, version, now, False, method, body))

    def _write_index(self, row_id: int, rtype: str, stored: dict[str, Any]) -> None:
        rows = self.indexer.rows(row_id, rtype, stored, text=True)
        self._queued.add(row_id)
        for kind, items in rows.tables().items():
            table = INDEX_TABLES[kind]
            self._pending.extend((table, item) for item in items)
        if rows.text is not None:
            self._pending.append((search_text, rows.text))
        for row in rows.unique:
            self._claim(row)

    def _claim(self, row: dict[str, Any]) -> None:
        """Insert a unique identifier (the INS); the database decides, whatever the interleaving of requests. On
        a clash the holder is named to the audit trail (``DuiError.patients``), never to the client: the answer is
        the same whether the caller may see the resident who holds it or not."""
        dialect = self.session.get_bind().dialect.name
        stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(unique_identifier).values(**row)
        claimed = self.session.execute(stmt.on_conflict_do_nothing().returning(unique_identifier.c.rid)).first()
        if claimed is not None:
            return
        holder = self.session.execute(
            select(resource.c.res_id).join(unique_identifier, unique_identifier.c.rid == resource.c.rid)
            .where(unique_identifier.c.res_type == row["res_type"], unique_identifier.c.system == row["system"],
                   unique_identifier.c.value == row["value"])).scalar()
        raise Conflict(INS_RECORDED, code="duplicate",
                       patients=(str(holder),) if holder and row["res_type"] == "Patient" else ())

    def _drop_index(self, row_id: int) -> None:
        if row_id in self._queued:
            self.flush()  # queued rows of this resource must go before they can be deleted
        if self.session.get_bind().dialect.name == "postgresql":
            _DROP_INDEX_PG.rows_writing(self.session, {"row": row_id})
            return
        for table in (*_INDEX_TABLES, unique_identifier):
            self.session.execute(delete(table).where(table.c.rid == row_id))  # search_text: by rowid on SQLite

    def reindex(self, current: ResourceVersion) -> None:
        """Rewrite the index rows of a stored current version (``dui reindex``)."""
        self._drop_index(current.rid)
        if not current.deleted:
            self._write_index(current.rid, current.type, current.resource())

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def savepoint(self) -> Iterator[Any]:
        queued = len(self._pending)
        key = self.bodies.mark()
        try:
            with self.session.begin_nested() as nested:
                yield nested
                self.flush()
        except BaseException:
            del self._pending[queued:]  # rows of the rolled-back work
            self.bodies.rolled_back(key)  # a data key created inside is gone too
            raise

    def lock(self, key: str) -> None:
        if self.session.get_bind().dialect.name == "postgresql":  # on SQLite, BEGIN IMMEDIATE serialises writers
            _ADVISORY_LOCK.rows_writing(self.session, {"key": advisory_key(key)})


def _utc(moment: datetime) -> datetime:
    """UtcDateTime's own conversion, which a direct row has not been through (idempotent on the others)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _versions() -> Select[Any]:
    return select(
        resource.c.rid, resource_version.c.res_type, resource.c.res_id, resource_version.c.version,
        resource_version.c.last_updated, resource_version.c.method, resource_version.c.body,
        resource_version.c.vid,
    ).select_from(resource_version.join(resource, resource.c.rid == resource_version.c.rid))


def _one_value(plan: SearchPlan, kind: str, modifiers: tuple[str | None, ...]) -> tuple[Leaf, dict[str, Any]] | None:
    """The plan's one criterion when a prebuilt page statement can serve it: one value of a ``kind`` parameter
    with one of ``modifiers``, no sort, a page forward, and no scope or the one scope a prebuilt statement carries
    (the Patients an establishment sees: ``Scoped.page_scope``); with the parameters every such statement takes
    (the scope's among them)."""
    if len(plan.criteria) != 1 or plan.sort or (plan.cursor is not None and plan.cursor.get("d") == "p"):
        return None
    leaf = plan.criteria[0]
    if not isinstance(leaf, Leaf) or leaf.kind != kind or leaf.modifier not in modifiers or len(leaf.values) != 1:
        return None
    params = {"rtype": leaf.rtype, "param": leaf.code, "after": int(plan.cursor["r"]) if plan.cursor else 0}
    if plan.within is not None and plan.within.hides(leaf.rtype):
        scope = plan.within.page_scope(leaf.rtype)
        if scope is None:
            return None
        params.update(scope)  # :finess, :now
    return leaf, params


def _simple_token(plan: SearchPlan) -> dict[str, Any] | None:
    """Parameters of the prebuilt token query when the plan is one plain token value, unsorted."""
    found = _one_value(plan, "token", (None,))
    if found is None:
        return None
    leaf, params = found
    parts = split_values(leaf.values[0], "|")
    if len(parts) > 2 or any(p == "" for p in parts):
        return None
    params["code"] = parts[-1]
    if len(parts) == 2:
        params["system"] = parts[0]
    return params


def _simple_string(plan: SearchPlan) -> dict[str, Any] | None:
    """Parameters of the prebuilt string query when the plan is one plain string value (no modifier: starts with;
    or ``:exact``), unsorted: the same condition as ``Criteria`` would build (``where.Criteria._string``)."""
    found = _one_value(plan, "string", (None, "exact"))
    if found is None:
        return None
    leaf, params = found
    if leaf.modifier == "exact":
        params["exact"] = leaf.values[0][:TEXT_INDEX]
        return params
    norm = normalize(leaf.values[0])[:TEXT_INDEX]
    if not norm:
        return None  # refused, with its reason, by the general path
    params["prefix"] = norm.replace("/", "//").replace("%", "/%").replace("_", "/_")  # as autoescape would
    return params


def _page(table: Table, conditions: list[Any], windowed: bool, scoped: bool) -> Select[Any]:
    """A page of the row ids of ``table`` meeting ``conditions``: after ``:after``, by row id, ``:limit`` of them
    (and the total, ``windowed``), as ``order.page_query`` builds it for one unsorted criterion; ``scoped``: of the
    Patients an establishment sees (``:finess``, ``:now``), as ``Sight.keep`` adds it."""
    if scoped:
        conditions = [*conditions, table.c.rid.in_(SEEN_PATIENT_ROWS)]
    matches = select(table.c.rid).where(*conditions, table.c.rid > bindparam("after")).distinct().subquery("matches")
    columns = [matches.c.rid, func.count().over().label("total")] if windowed else [matches.c.rid]
    return select(*columns).order_by(matches.c.rid).limit(bindparam("limit"))


def _token_page(windowed: bool, with_system: bool, scoped: bool) -> Select[Any]:
    conditions = [search_token.c.res_type == bindparam("rtype"), search_token.c.param == bindparam("param"),
                  search_token.c.code == bindparam("code")]
    if with_system:
        conditions.append(search_token.c.system == bindparam("system"))
    return _page(search_token, conditions, windowed, scoped)


def _string_page(windowed: bool, exact: bool, scoped: bool) -> Select[Any]:
    conditions = [search_string.c.res_type == bindparam("rtype"), search_string.c.param == bindparam("param"),
                  search_string.c.exact == bindparam("exact") if exact else
                  search_string.c.value.startswith(bindparam("prefix"), escape="/")]
    return _page(search_string, conditions, windowed, scoped)


# Keyed by (windowed, with a system / exact, scoped)
_FLAGS = [(a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)]
_TOKEN_PAGES = {flags: DirectQuery(_token_page(*flags)) for flags in _FLAGS}
_STRING_PAGES = {flags: DirectQuery(_string_page(*flags)) for flags in _FLAGS}

# The hottest statements, built once: constructing a statement costs more than running it here. In a read-only unit on
# PostgreSQL they run on psycopg directly (``dui.direct_sql``).
_READ = DirectQuery(_versions().where(resource.c.res_type == bindparam("rtype"), resource.c.res_id == bindparam("id"),
                                      resource_version.c.version == resource.c.version))
_VREAD = DirectQuery(_versions().where(resource.c.res_type == bindparam("rtype"), resource.c.res_id == bindparam("id"),
                                       resource_version.c.version == bindparam("version")))
# One row id: PostgreSQL's generic plan for ``rid = ANY($1)`` (a prepared statement, once psycopg has run it 5 times)
# cannot know the array holds one id and, on small tables, scans: 26 buffers and 0.17 ms a fetch against 5 and 0.03
# for ``rid = $1`` (pg_stat_statements, 400 residents).
_FETCH_ONE = DirectQuery(_versions().where(resource.c.rid == bindparam("rid"),
                                           resource_version.c.version == resource.c.version))
# The statements of a write (``DirectQuery.rows_writing``: on a writing unit's own connection, in its transaction).
_CURRENT_ROW = select(*_CURRENT_COLUMNS).where(resource.c.res_type == bindparam("rtype"),
                                                resource.c.res_id == bindparam("id"))
_CURRENT = DirectQuery(_CURRENT_ROW)
_CURRENT_LOCKED = DirectQuery(_CURRENT_ROW.with_for_update())
_INSERT_RESOURCE = DirectQuery(insert(resource).values(
    res_type=bindparam("rtype"), res_id=bindparam("id"), version=bindparam("first"),
    last_updated=bindparam("now"), deleted=false()).returning(resource.c.rid))
_UPDATE_RESOURCE = DirectQuery(update(resource).where(resource.c.rid == bindparam("row")).values(
    version=bindparam("next"), last_updated=bindparam("now"), deleted=false()))
# Every index row of a resource, in one statement on PostgreSQL (data-modifying WITH clauses all run): through the
# session it was a DELETE per table, nine in all.
_DROPPED = (*_INDEX_TABLES, unique_identifier)
_DROP_INDEX_PG = DirectQuery(text(
    "WITH " + ", ".join(f"d_{t.name} AS (DELETE FROM {t.name} WHERE {t.c.rid.name} = :row)" for t in _DROPPED[:-1])
    + f" DELETE FROM {_DROPPED[-1].name} WHERE {_DROPPED[-1].c.rid.name} = :row"))
_ADVISORY_LOCK = DirectQuery(select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger))))
_FETCH = DirectQuery(
    _versions().where(resource.c.rid.in_(bindparam("rids", expanding=True)),
                      resource_version.c.version == resource.c.version),
    direct=_versions().where(resource.c.rid == any_(bindparam("rids")),
                             resource_version.c.version == resource.c.version))


def _conflict(exc: IntegrityError, rtype: str) -> Conflict:
    text = str(exc.orig)
    if "resource" in text:
        return Conflict(f"A concurrent request created the same {rtype}; retry the request", code="conflict")
    return Conflict("The change conflicts with data written concurrently; retry the request")
