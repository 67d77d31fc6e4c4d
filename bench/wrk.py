"""The wrk load generator (C, Debian package ``wrk``), driven from Python: a workload's requests rotated by a Lua
script (``bench/wrk.lua``), and the CPU time each group of processes spent per request.

wrk spends a few microseconds per request where the Python driver (``bench/run.py drive``, one process per client)
spends about a millisecond: on a 2-core machine the Python driver takes a large share of the cores it measures. The
CPU per request is measured here from the processes' own CPU times: the server (its process tree), PostgreSQL (the
backends of the benchmark's database) and wrk itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from requests.utils import requote_uri

LUA = Path(__file__).with_name("wrk.lua")
Request = tuple[str, str, str | None]  # method, URL, body


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    """``text`` as a Lua long bracket string (no escaping): enough ``=`` that the text cannot close it."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def script(requests: list[Request], headers: dict[str, str]) -> str:
    lines = ["REQUESTS = {"]
    for method, url, body in requests:
        parts = urlsplit(requote_uri(url))  # as requests sends it: a space or an apostrophe in a name, encoded
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines.append(f"  {{{_lua_string(method)}, {_lua_string(path)}, {_lua_string(body) if body else 'nil'}}},")
    lines.append("}")
    lines.append("HEADERS = {" + ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
                 + "}")
    return "\n".join(lines) + "\n" + LUA.read_text()


class CpuGroups:
    """CPU seconds of the server's process tree and of the PostgreSQL backends serving ``database`` (None: every
    backend; "": no PostgreSQL)."""

    def __init__(self, server_pid: int, database: str | None) -> None:
        self.server_pid, self.database = server_pid, database

    def sample(self) -> tuple[float, float]:
        root = psutil.Process(self.server_pid)
        server = cpu_seconds([root, *root.children(recursive=True)])
        if self.database == "":
            return server, 0.0
        postgres = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "postgres"
                    and (self.database is None or self.database in " ".join(p.info["cmdline"] or ()))]
        return server, cpu_seconds(postgres)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds of these processes (those gone since are left out)."""
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def drive(requests: list[Request], headers: dict[str, str], seconds: float, connections: int,
          cpu: CpuGroups | None = None, threads: int = 2, base: str | None = None) -> dict[str, Any]:
    """Run wrk for ``seconds`` with ``connections`` keep-alive connections over ``requests`` (rotated); its
    throughput, latency percentiles (ms), errors, and the CPU milliseconds per request of the server, of PostgreSQL
    and of wrk."""
    if base is None:
        parts = urlsplit(requests[0][1])
        base = f"{parts.scheme}://{parts.netloc}"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script(requests, headers))
    try:
        before = cpu.sample() if cpu else (0.0, 0.0)
        process = subprocess.Popen(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "30s",
             "-s", handle.name, base], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        out, err = process.stdout.read(), process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        after = cpu.sample() if cpu else (0.0, 0.0)
    finally:
        os.unlink(handle.name)
    if process.returncode != 0 or err.strip():  # a Lua error is printed, and wrk goes on with its defaults
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode(errors='replace')[:500]}")
    line = next((raw for raw in reversed(out.decode().splitlines()) if raw.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.decode(errors='replace')[-500:]}")
    summary = json.loads(line)
    count = max(summary["requests"], 1)
    elapsed = summary["duration_us"] / 1e6
    errors = sum(value for key, value in summary.items() if key.startswith("errors_"))
    result: dict[str, Any] = {
        "requests": summary["requests"], "errors": errors, "req_per_s": round(summary["requests"] / elapsed, 1),
        "p50_ms": round(summary["p50_us"] / 1000, 2), "p95_ms": round(summary["p95_us"] / 1000, 2),
        "p99_ms": round(summary["p99_us"] / 1000, 2), "max_ms": round(summary["max_us"] / 1000, 1),
        "load_generator_cpu_ms": round(1000 * (usage.ru_utime + usage.ru_stime) / count, 3),
    }
    if cpu:
        result["server_cpu_ms"] = round(1000 * (after[0] - before[0]) / count, 3)
        result["postgresql_cpu_ms"] = round(1000 * (after[1] - before[1]) / count, 3)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result
