"""Exposing the metrics: one process's (the tests, ``flask run``, ``dui worker``), or the sum over every worker of
``dui serve`` (prometheus_client's multiprocess mode), with the database gauges read at the scrape.

Multiprocess mode: ``dui serve`` creates a fresh directory for the run (``run_directory``, under ``DUI_METRICS_DIR``
or the system's temporary folder) and names it in ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts; each worker
writes its values to files there, the worker answering a scrape sums them (``MultiProcessCollector``). When a worker
exits, its per-process gauges go (``worker_exited``); counters keep what it counted. The directory is removed when
the server stops; one left by a server that was killed is removed by the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

PREFIX = "dui-metrics-"
_RUN = re.compile(re.escape(PREFIX) + r"(\d+)-")


def run_directory(parent: str | None) -> Path:
    """A new, empty directory for this run's metric files, named in ``PROMETHEUS_MULTIPROC_DIR`` (the workers inherit
    it). Directories of earlier runs whose server is gone are removed first."""
    base = Path(parent or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(PREFIX + "*"):
        found = _RUN.match(stale.name)
        if found and stale.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(stale, ignore_errors=True)
    if "dui.metrics.counters" in sys.modules:  # its metrics would keep their values in the arbiter's memory
        raise RuntimeError("dui.metrics.counters was imported before the metrics directory was chosen")
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client chooses where values live when it is imported: choose again, now that the variable is set
    # (the metrics of dui.metrics.counters are created after this: the arbiter imports them with the worker class).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def worker_exited(pid: int, directory: Path) -> None:
    """A worker is gone: its per-process gauges (the database pool) go with it."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def forget_exited_workers(directory: Path) -> None:
    """The per-process gauges of every worker that is gone, removed (where the server has no hook of its own when a
    worker exits: granian's workers call this as they start)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            worker_exited(int(pid), directory)


def remove_run_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class Exposition:
    """What a scrape answers: this process's metrics, or every worker's (``directory``: the run's, under ``dui
    serve``), and ``collectors`` computed at the scrape (the database gauges)."""

    def __init__(self, collectors: tuple[Collector, ...] = (), directory: Path | None = None) -> None:
        self.collectors = collectors
        self.directory = directory

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The text of a scrape, in the format ``accept`` asks for (Prometheus text or OpenMetrics), and its type."""
        registry = CollectorRegistry(auto_describe=False)
        if self.directory is not None:
            multiprocess.MultiProcessCollector(registry, str(self.directory))  # type: ignore[no-untyped-call]
        else:
            registry.register(_Process())
        for collector in self.collectors:
            registry.register(collector)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


class _Process(Collector):
    """This process's own metrics (``counters.REGISTRY``), as one collector of a scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        from dui.metrics import counters  # not at import: ``run_directory`` must come before the metrics exist

        return counters.REGISTRY.collect()

    def describe(self) -> list[Metric]:
        return []


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # named after this process before it made its own: an earlier run's (pid 1 in a container)
        return False
    with contextlib.suppress(PermissionError):  # someone else's process: alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
    return True
