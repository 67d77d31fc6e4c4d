"""``dui serve --port P`` without DUI_BASE_URL: every link the service writes names port P (``make run PORT=P``
serves there), not the default 8080."""

from __future__ import annotations

import pytest
import requests
from flask import Flask

from dui.cli.serve import base_url_for
from tests.conftest import TEST_MASTER_KEY_FILE
from tests.server.conftest import running_server


def test_the_links_name_the_port_served_on(database_url: str, app: Flask,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi"))}
    with running_server(env, tmp_path_factory.mktemp("base-url"), workers=1, threads=2, base_url=False) as base:
        assert not base.endswith(":8080")
        smart = requests.get(f"{base}/fhir/.well-known/smart-configuration", timeout=10).json()
        assert smart["token_endpoint"].startswith(f"{base}/")
        created = requests.post(f"{base}/fhir/Organization", json={"resourceType": "Organization", "name": "X"},
                                headers={"Content-Type": "application/fhir+json"}, timeout=10)
        assert created.status_code == 201, created.text
        assert created.headers["Location"].startswith(f"{base}/fhir/Organization/")


def test_a_wildcard_address_names_this_machine() -> None:
    assert base_url_for("0.0.0.0", 8401) == "http://127.0.0.1:8401"
    assert base_url_for("127.0.0.2", 9000) == "http://127.0.0.2:9000"
    assert base_url_for("::1", 8080) == "http://[::1]:8080"


pytestmark = pytest.mark.server
