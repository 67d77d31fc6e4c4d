"""deploy/docker: the compose trial names only settings the service reads, keeps the keys apart from the database,
runs the services the way deploy/README.md says; the Dockerfile installs the project alone and runs it as a non-root
user. The image is built only where a Docker daemon answers (it pulls python:3.11-slim: skipped otherwise)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with the test extras)")
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def settings_read() -> set[str]:
    return set(re.findall(r'"(DUI_[A-Z0-9_]+)"', (ROOT / "dui" / "settings.py").read_text()))


def test_compose_names_only_settings_of_the_environment_example() -> None:
    example = set(re.findall(r"\b(DUI_[A-Z0-9_]+)\b", (ROOT / "deploy" / "dui.env.example").read_text()))
    named: set[str] = set()
    for service in compose()["services"].values():
        named.update(name for name in (service.get("environment") or {}) if name.startswith("DUI_"))
    assert named, "no DUI_ setting in compose.yaml"
    assert named - example == set(), f"not in deploy/dui.env.example: {sorted(named - example)}"
    assert named - settings_read() == set()


def test_compose_runs_postgresql_15_the_web_and_the_worker_in_prod_with_keys_apart() -> None:
    spec = compose()
    services = spec["services"]
    assert services["db"]["image"] == "postgres:15"
    for name in ("web", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["DUI_ENV"] == "prod" and env["DUI_BASE_URL"].startswith(("https://", "${DUI_BASE_URL:-https://"))
        assert {env[k].rsplit("/", 1)[0] for k in ("DUI_MASTER_KEY_FILE", "DUI_AUDIT_KEY_FILE",
                                                   "DUI_AUTH_SIGNING_KEY")} == {"/keys"}
        assert "keys:/keys:ro" in services[name]["volumes"]
    assert services["web"]["environment"]["DUI_DATABASE_URL"].startswith("postgresql://dui_service:")
    assert services["migrate"]["environment"]["DUI_DATABASE_URL"].startswith("postgresql://dui_owner:")
    assert services["worker"]["command"] == ["worker"]
    assert services["keygen"]["entrypoint"] == ["dui", "keys", "generate"]
    assert services["keygen"]["environment"] == {"DUI_ENV": "prod"} and services["keygen"]["network_mode"] == "none"
    db_volumes = {v.split(":")[0] for v in services["db"]["volumes"]}
    assert "keys" not in db_volumes and "db-data" in db_volumes
    assert set(spec["volumes"]) == {"db-data", "keys", "exports"}
    # bulk export files: written by the worker, served by web
    assert all("exports:/exports" in services[name]["volumes"] for name in ("web", "worker"))
    assert services["web"]["environment"]["DUI_EXPORT_DIR"] == "/exports" and "exports" not in db_volumes
    assert services["web"]["stop_grace_period"] == "45s"  # as the systemd unit: gunicorn's 30 s, then a margin
    # The steps at the top of the file name every key, in the order of deploy/README.md.
    steps = [line for line in (DOCKER / "compose.yaml").read_text().splitlines() if "run --rm keygen" in line]
    assert [s.split()[-1] for s in steps] == ["/keys/master.key", "/keys/audit.key", "/keys/token-signing.pem"]
    assert (DOCKER / "initdb.sh").stat().st_mode & 0o111


def test_the_dockerfile_installs_the_project_alone_as_a_non_root_user() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM python:3.11-slim") == 2
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    assert sorted(" ".join(copied).split()) == sorted(["pyproject.toml", "README.md", "LICENSE", "dui", "ins",
                                                       "mssante", "fhir_profiles"])
    instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "tests" not in instructions and ".[test]" not in instructions
    assert re.search(r"^USER dui$", text, flags=re.M)
    assert 'ENTRYPOINT ["dui"]' in text and 'CMD ["serve"' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("**") + 1:].count("!dui") == 1 and "!var" not in ignore


def test_the_image_builds(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed on this machine")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon answers on this machine (docker info fails)")
    built = subprocess.run([docker, "build", "-q", "-f", str(DOCKER / "Dockerfile"), "-t", "dui:test", str(ROOT)],
                           capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([docker, "run", "--rm", "dui:test", "--help"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "serve" in ran.stdout
    whoami = subprocess.run([docker, "run", "--rm", "--entrypoint", "id", "dui:test", "-u"], capture_output=True,
                            text=True, timeout=120)
    assert whoami.stdout.strip() == "10001"


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("docker compose is not installed on this machine")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "TRIAL_DB_PASSWORD": "a", "TRIAL_OWNER_PASSWORD": "b",
           "TRIAL_SERVICE_PASSWORD": "c"}
    done = subprocess.run([docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
