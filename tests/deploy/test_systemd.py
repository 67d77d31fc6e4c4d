"""deploy/systemd: the units load (systemd-analyze verify), carry the hardening the README promises, stop within
what `dui serve` and `dui worker` need, and start commands the CLI accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dui.cli.serve import GRACEFUL_SECONDS, serve
from dui.cli.worker import worker

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
NAMES = ("dui-web.service", "dui-worker.service")
DUI = str(Path(sys.executable).with_name("dui"))


def directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian: the systemd package)")
    for name in NAMES:  # the installed venv's dui stands in for /opt/dui/venv/bin/dui, which must exist
        (tmp_path / name).write_text((UNITS / name).read_text().replace("/opt/dui/venv/bin/dui", DUI))
    done = subprocess.run([analyze, "verify", *(str(tmp_path / name) for name in NAMES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_the_units_are_hardened(name: str) -> None:
    unit = directives(name)
    expected = {"User": "dui", "Group": "dui", "EnvironmentFile": "/etc/dui/dui.env", "NoNewPrivileges": "yes",
                "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                "AmbientCapabilities": "", "StateDirectory": "dui", "Restart": "on-failure", "KillSignal": "SIGTERM",
                "KillMode": "mixed", "UMask": "0077"}
    for key, value in expected.items():
        assert unit.get(key) == [value], f"{name}: {key}={unit.get(key)}, expected {value!r}"


def test_the_metrics_folder_of_the_example_exists_for_the_web() -> None:
    example = (ROOT / "deploy" / "dui.env.example").read_text()
    assert "DUI_METRICS_DIR=/run/dui" in example
    assert directives("dui-web.service")["RuntimeDirectory"] == ["dui"]  # /run/dui, writable under ProtectSystem
    assert "RuntimeDirectory" not in directives("dui-worker.service")  # one owner: stopping it removes the folder


def test_the_web_stops_after_its_graceful_timeout() -> None:
    graceful = GRACEFUL_SECONDS  # gunicorn's graceful_timeout, granian's workers_kill_timeout
    assert graceful == 30
    stop = int(directives("dui-web.service")["TimeoutStopSec"][0])
    assert graceful < stop <= graceful + 30  # the workers' graceful end, then SIGKILL soon after


def test_the_worker_stops_on_sigterm() -> None:
    """`dui worker` ends its loop on SIGTERM (dui/cli/worker.py), so the unit's KillSignal stops it cleanly."""
    source = (ROOT / "dui" / "cli" / "worker.py").read_text()
    assert "signal.SIGTERM" in source
    assert int(directives("dui-worker.service")["TimeoutStopSec"][0]) >= 60


@pytest.mark.parametrize(("name", "command"), [("dui-web.service", serve), ("dui-worker.service", worker)])
def test_the_start_commands_are_accepted(name: str, command: object) -> None:
    argv = shlex.split(directives(name)["ExecStart"][0])
    assert argv[0] == "/opt/dui/venv/bin/dui"
    assert argv[1] == command.name  # type: ignore[attr-defined]
    context = command.make_context(argv[1], argv[2:])  # type: ignore[attr-defined]
    if name == "dui-web.service":
        assert context.params["host"] == "127.0.0.1" and context.params["port"] == 8080
        assert context.params["timeout"] > 20  # above DUI_REQUEST_BUDGET's default, as dui serve requires
