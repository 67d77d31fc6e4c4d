"""The deployment drill (deploy/drill/) runs deploy/README.md's own commands: its step list is read from the README,
and every change it makes is keyed by a README command that must still be there. The drill itself (a debootstrap
chroot, 10 to 20 minutes) is not run here; its last log is deploy/drill/last-run.log."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRILL = ROOT / "deploy" / "drill"


def _load(name: str):  # a module
    spec = importlib.util.spec_from_file_location(f"drill_{name}", DRILL / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


steps_module = _load("readme_steps")
unit_start = _load("unit_start")


def test_every_change_the_drill_makes_is_keyed_by_a_readme_command() -> None:
    commands = [step.command for step in steps_module.steps()]
    for table in (steps_module.ADAPTED, steps_module.BEFORE, steps_module.AFTER):
        for command in table:
            assert command in commands, f"the README no longer has: {command}"


def test_the_steps_are_the_readmes_install_commands_in_order() -> None:
    steps = steps_module.steps()
    sections = [step.section.split(".")[0] for step in steps]
    assert sections == sorted(sections, key=int) and set(sections) == {str(n) for n in range(1, 9)}
    commands = [step.command for step in steps]
    assert commands[:2] == ["apt-get update",
                            "apt-get install -y python3 python3-venv postgresql nginx-light openssl curl"]
    keys = [c.split()[-1] for c in commands if " keys generate " in c]
    assert keys == ["/etc/dui/master.key", "/etc/dui/audit.key", "/etc/dui/token-signing.pem"]
    # Section 8: the restore block (the one after <!-- restore -->), not the one that puts a copy in service.
    readme = steps_module.README.read_text()
    restore = readme.split("<!-- restore -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    in_8 = [step.command for step in steps if step.section.startswith("8.")]
    assert "\n".join(in_8) == "\n".join(line for line in restore.splitlines() if line.strip())
    assert commands.index("systemctl enable --now dui-web dui-worker") < commands.index(
        "nginx -t && systemctl reload nginx")


def test_what_needs_systemd_is_adapted_and_ports_are_the_drills() -> None:
    for step in steps_module.steps():
        if "systemctl" in step.command:
            assert step.command in steps_module.ADAPTED
        for line in step.run:
            assert "systemctl" not in line
            if "# PORTS" not in line:  # the drill's own port moves name the README's ports to replace them
                assert "127.0.0.1:5432" not in line and "127.0.0.1:8080" not in line


def test_the_generated_script_is_valid_bash_and_prints_commands_unexpanded() -> None:
    script = steps_module.script()
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    # The passwords are printed as the README has them ($OWNER_PW), never their values.
    assert "cmd 'OWNER_PW=$(openssl rand -hex 24)'" in script


def test_unit_start_reads_the_units_as_systemd_does() -> None:
    pairs = unit_start.read_unit(ROOT / "deploy" / "systemd" / "dui-web.service")
    settings = dict(pairs)
    assert settings["User"] == "dui" and settings["EnvironmentFile"] == "/etc/dui/dui.env"
    assert settings["ExecStart"].startswith("/opt/dui/venv/bin/dui serve --host 127.0.0.1 --port 8080 ")
    assert settings["Type"] == "notify"


def test_unit_start_reads_an_environment_file_like_dui_admin(tmp_path: Path) -> None:
    env = tmp_path / "dui.env"
    env.write_text('# comment\n\nDUI_A=one\nDUI_B="two words"\n; other comment\nDUI_C=\'x\'\n')
    assert unit_start.read_environment_file(env) == {"DUI_A": "one", "DUI_B": "two words", "DUI_C": "x"}
