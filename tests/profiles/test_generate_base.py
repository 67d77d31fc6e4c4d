"""scripts/generate_profile_base.py regenerates the committed base R4 data exactly."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import conformance_dir

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "fhir_profiles" / "r4"


@pytest.mark.conformance
def test_regenerating_reproduces_the_committed_files(tmp_path: Path) -> None:
    source = conformance_dir("fhir-r4-core")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_profile_base.py"), str(source), str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    assert "left out (not FHIR R4): Binary.url" in run.stdout
    for name in ("structure.json.gz", "terminology.json.gz"):
        fresh, committed = (tmp_path / name).read_bytes(), (COMMITTED / name).read_bytes()
        # the content must match byte for byte; the gzip framing only if the same zlib compressed it
        assert gzip.decompress(fresh) == gzip.decompress(committed), f"{name} differs: regenerate and commit it"
        assert fresh[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
    build = dict(line.split("=", 1) for line in (source / "version.info").read_text().splitlines() if "=" in line)
    assert f"build {build['buildId']}" in (COMMITTED / "README.md").read_text(encoding="utf-8")
