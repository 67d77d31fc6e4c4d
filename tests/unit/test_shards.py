"""`make test` runs the suite as two shards side by side (scripts/run-tests): every test is in exactly one shard,
the log scan in both."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import SHARDS, in_shard


def item(nodeid: str, **params: Any) -> Any:
    return SimpleNamespace(nodeid=nodeid, callspec=SimpleNamespace(params=params) if params else None)


def shards_of(test: Any) -> list[str]:
    return [shard for shard in SHARDS if in_shard(test, shard)]


def test_a_database_test_runs_in_its_database_shard() -> None:
    assert shards_of(item("tests/functional/test_x.py::test_y[postgresql]", database_url="postgresql")) == \
        ["postgresql"]
    assert shards_of(item("tests/functional/test_x.py::test_y[sqlite]", database_url="sqlite")) == ["sqlite"]


def test_tests_without_a_database_are_dealt_between_the_shards() -> None:
    tests = [item(f"tests/unit/test_{n}.py::test_{n}") for n in range(200)]
    counts = {shard: 0 for shard in SHARDS}
    for test in tests:
        (shard,) = shards_of(test)  # exactly one
        counts[shard] += 1
    assert min(counts.values()) > 60, counts
    other = item("tests/unit/test_p.py::test_q[a-b]", backend_kind="x")  # a parameter that is not the database
    assert len(shards_of(other)) == 1


def test_the_log_scan_runs_in_both_shards() -> None:
    assert shards_of(item("tests/zzz/test_log_scan.py::test_no_identifying_value_in_the_logs")) == list(SHARDS)


def test_an_unknown_shard_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="DUI_TEST_SHARD=mysql"):
        in_shard(item("tests/unit/test_a.py::test_b"), "mysql")
