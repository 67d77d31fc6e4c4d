"""Query plans of the slow searches, for docs/benchmarks.md (PostgreSQL, after `bench/run.py compare`).

    python bench/explain.py postgresql://postgres@127.0.0.1:5432/dui_bench_18100
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine

from bench import data
from dui.db import normalize_url
from dui.fhir.search import compartment, order
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import parse_search
from dui.fhir.search.where import Criteria
from dui.settings import Limits

SEARCHES = [
    "Observation?code=http://loinc.org|29463-7&date=ge2026-08-01&date=lt2026-09-01",
    "Observation?subject=Patient/bench-000007&code=http://loinc.org|29463-7",
    f"Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|{data.ins_of(7)}",
    "Patient?family=mart",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="the PostgreSQL database `bench/run.py compare` loaded")
    engine = create_engine(normalize_url(parser.parse_args().database_url))
    registry = SearchParameterRegistry()
    with engine.connect() as conn:
        for query in SEARCHES:
            rtype, params = query.split("?", 1)
            plan = parse_search(rtype, parse_qsl(params), registry, Limits(), True)
            matches = Criteria(ZoneInfo("Europe/Paris"), "http://x/fhir", datetime.now(UTC)).matches(plan)
            stmt, _ = order.page_query(plan, matches, 21, with_total=True)
            _explain(conn, query + " (first page, with its total)", stmt)
        options = {"since": None, "types": None}
        patient = conn.exec_driver_sql("SELECT rid FROM resource WHERE res_type = 'Patient' "
                                       "AND res_id = 'bench-999999'").scalar()
        if patient is not None:  # the heavy resident (bench/run.py compare)
            stmt = compartment.record_page(patient, "bench-999999", patient + 5000, options, 101)
            _explain(conn, "Patient/bench-999999/$everything, a page in the middle", stmt)
        patient = conn.exec_driver_sql("SELECT rid FROM resource WHERE res_type = 'Patient' "
                                       "AND res_id = 'bench-000007'").scalar_one()
        stmt = compartment.referenced_page(patient, "bench-000007", 0, options, 101)
        _explain(conn, "Patient/bench-000007/$everything, its last page: what the record points at", stmt)


def _explain(conn, title: str, stmt) -> None:  # type: ignore[no-untyped-def]
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) " + str(compiled), compiled.params)
    print(f"#### {title}\n```")
    for (line,) in rows:
        print(line if len(line) < 160 else line[:157] + "...")
    print("```\n")


if __name__ == "__main__":
    main()
