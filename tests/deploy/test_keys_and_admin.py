"""The keys of deploy/README.md, made in its order on a host where nothing is configured but DUI_ENV=prod, are the
ones a production `dui serve` accepts; and deploy/dui-admin gives a `dui` command the service's environment."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.server.conftest import running_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "deploy" / "README.md"
DUI = str(Path(sys.executable).with_name("dui"))


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DUI_")}, **extra}


def readme_key_commands() -> list[list[str]]:
    """The README's `dui keys generate` lines, in order."""
    lines = [line.strip() for line in README.read_text().splitlines()
             if re.match(r"\s*(DUI_ENV=prod )?/opt/dui/venv/bin/dui keys generate ", line)]
    return [shlex.split(line) for line in lines]


def test_the_readme_makes_the_keys_in_order_under_prod_and_prod_serves_with_them(tmp_path: Path) -> None:
    commands = readme_key_commands()
    assert [c[-1] for c in commands] == ["/etc/dui/master.key", "/etc/dui/audit.key", "/etc/dui/token-signing.pem"]
    etc = tmp_path / "etc-dui"
    for command in commands:
        assert command[0] == "DUI_ENV=prod"  # as typed: prod set, nothing else configured
        argv = [DUI if part == "/opt/dui/venv/bin/dui" else part.replace("/etc/dui", str(etc))
                for part in command[1:]]
        done = subprocess.run(argv, env=clean_env(DUI_ENV="prod"), cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(Path(argv[-1]).stat().st_mode) == 0o600
    again = subprocess.run([DUI, "keys", "generate", str(etc / "master.key")], env=clean_env(DUI_ENV="prod"),
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    assert not (tmp_path / "var").exists()  # nothing else written

    env = {"DUI_ENV": "prod", "DUI_DATABASE_URL": f"sqlite:///{tmp_path / 'dui.sqlite'}",
           "DUI_BASE_URL": "https://dui.example-ehpad.fr", "DUI_MASTER_KEY_FILE": str(etc / "master.key"),
           "DUI_AUDIT_KEY_FILE": str(etc / "audit.key"), "DUI_AUTH_SIGNING_KEY": str(etc / "token-signing.pem"),
           "DUI_DOCUMENT_OID": "1.2.250.1.999.99999.1", "DUI_TRUSTED_PROXIES": "127.0.0.1"}
    upgraded = subprocess.run([DUI, "db", "upgrade"], env=clean_env(**env), cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    with running_server(env, tmp_path, workers=1, threads=2, base_url=False) as base:
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
        assert requests.get(f"{base}/fhir/Patient", timeout=10).status_code == 401  # prod: a token is required
        jwks = requests.get(f"{base}/auth/jwks", timeout=10).json()
        assert jwks["keys"] and jwks["keys"][0]["crv"] == "P-256"  # the key made above signs the tokens
    (etc / "master.key").chmod(0o640)  # readable by the group: refused in prod, with one line
    refused = subprocess.run([DUI, "keys", "status"], env=clean_env(**env), cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "0640" in refused.stderr, refused.stderr


def test_dui_admin_runs_dui_with_the_services_environment(tmp_path: Path) -> None:
    database = tmp_path / "dui.sqlite"
    env_file = tmp_path / "dui.env"
    env_file.write_text(f"# a comment\n\nDUI_DATABASE_URL=sqlite:///{database}\n"
                        f"DUI_MASTER_KEY_FILE=\"{tmp_path / 'master.key'}\"\n"
                        "DUI_TRUSTED_PROXIES=10.0.0.0/24, 2001:db8::/32\n")
    made = subprocess.run([DUI, "keys", "generate", str(tmp_path / "master.key")], env=clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    admin = clean_env(DUI_ENV_FILE=str(env_file), DUI_BIN=DUI, DUI_USER=me, DUI_HOME=str(tmp_path))

    def dui_admin(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(ROOT / "deploy" / "dui-admin"), *args], env={**admin, **extra},
                              cwd="/", capture_output=True, text=True, timeout=120)

    upgraded = dui_admin("db", "upgrade")
    assert upgraded.returncode == 0 and "database at revision" in upgraded.stdout, upgraded.stderr
    assert database.exists()
    status = dui_admin("keys", "status")
    assert status.returncode == 0 and re.search(r"master key: local:[0-9a-f]{16}", status.stdout), status.stderr
    other = tmp_path / "other.sqlite"  # the caller's variable wins over the file's (the owner's URL for upgrades)
    assert dui_admin("db", "upgrade", DUI_DATABASE_URL=f"sqlite:///{other}").returncode == 0
    assert other.exists()
    env_file.write_text("not an assignment\n")
    bad = dui_admin("db", "current")
    assert bad.returncode == 2 and "not NAME=VALUE" in bad.stderr


@pytest.mark.parametrize("script", ["backup.sh", "restore.sh", "dui-admin"])
def test_the_scripts_are_executable_bash(script: str) -> None:
    path = ROOT / "deploy" / script
    assert path.stat().st_mode & 0o111 and path.read_text().startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, timeout=30).returncode == 0


def readme_block(marker: str) -> str:
    text = README.read_text()
    return text.split(f"<!-- {marker} -->\n```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_environment_steps_give_a_production_configuration(tmp_path: Path) -> None:
    """Section 4 of deploy/README.md run as typed (folders moved under tmp_path, no chown), then the file read as
    systemd reads it: with the keys of section 2, a configuration `dui serve` starts with in prod."""
    from dui.cli.serve import startup_checks
    from dui.settings import Settings

    etc, anchors = tmp_path / "etc-dui", tmp_path / "anchors"
    etc.mkdir()
    script = (readme_block("environment").replace("/opt/dui/src", str(ROOT)).replace("/etc/dui", str(etc))
              .replace("/srv/dui-anchors", str(anchors)).replace("-o root -g dui ", "").replace("-o dui -g dui ", ""))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=clean_env(SERVICE_PW="s3rvice"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    env: dict[str, str] = {}
    for line in (etc / "dui.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value.replace("/etc/dui", str(etc)).replace("/srv/dui-anchors", str(anchors))
    assert env["DUI_DATABASE_URL"] == "postgresql://dui_service:s3rvice@127.0.0.1:5432/dui"
    assert env["DUI_BASE_URL"] == "https://dui.example-ehpad.fr" and env["DUI_TRUSTED_PROXIES"] == "127.0.0.1"
    assert not [name for name in env if name.startswith(("DUI_INSI_", "DUI_DMP_", "DUI_MSSANTE_"))]
    assert "DUI_AUTH_OIDC_ISSUERS" not in env and anchors.is_dir()
    for command in readme_key_commands():
        subprocess.run([DUI, *command[2:-1], command[-1].replace("/etc/dui", str(etc))], env=clean_env(DUI_ENV="prod"),
                       check=True, capture_output=True, timeout=60)
    settings = Settings.from_env(env)
    assert settings.is_prod
    startup_checks(settings)
    # The restore step's address of the restored database, from this file.
    line = next(x for x in readme_block("restore").splitlines() if x.startswith("RESTORED_URL="))
    restored = subprocess.run(["bash", "-c", line.replace("/etc/dui", str(etc)) + '\necho "$RESTORED_URL"'],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert restored == "postgresql://dui_service:s3rvice@127.0.0.1:5432/dui_restored"
