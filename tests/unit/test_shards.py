"""`make test` runs the suite as two shards side by side (scripts/run-tests): every test is in exactly one shard,
the log scan in every shard."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import in_shard


def item(nodeid: str) -> Any:
    return SimpleNamespace(nodeid=nodeid)


def shards_of(test: Any, count: int = 2) -> list[int]:
    return [k for k in range(1, count + 1) if in_shard(test, f"{k}/{count}")]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_test_is_in_exactly_one_shard_and_the_shards_are_even(count: int) -> None:
    tests = [item(f"tests/functional/test_{n}.py::test_{n}[{db}]") for n in range(300)
             for db in ("sqlite", "postgresql")]
    sizes = dict.fromkeys(range(1, count + 1), 0)
    for test in tests:
        (shard,) = shards_of(test, count)  # exactly one
        sizes[shard] += 1
    assert min(sizes.values()) > 0.8 * len(tests) / count, sizes


def test_both_databases_are_dealt_to_every_shard() -> None:
    for db in ("sqlite", "postgresql"):
        tests = [item(f"tests/functional/test_{n}.py::test_{n}[{db}]") for n in range(100)]
        assert {s for t in tests for s in shards_of(t)} == {1, 2}, db


def test_the_log_scan_runs_in_every_shard() -> None:
    assert shards_of(item("tests/zzz/test_log_scan.py::test_no_identifying_value_in_the_logs")) == [1, 2]


@pytest.mark.parametrize("shard", ["postgresql", "0/2", "3/2", "1/", "a/b"])
def test_a_malformed_shard_is_a_usage_error(shard: str) -> None:
    with pytest.raises(pytest.UsageError, match="DUI_TEST_SHARD"):
        in_shard(item("tests/unit/test_a.py::test_b"), shard)
