"""deploy/nginx/dui.conf: `nginx -t` accepts it, and nginx running it in front of a small upstream that echoes what
it receives does what deploy/README.md says: TLS 1.2+ only, HSTS, no version, the client's address in
X-Forwarded-For, client certificates required on /fhir and /ws/subscriptions only, the websocket upgrade passed, the
alert stream unbuffered, bodies above DUI_MAX_REQUEST_BYTES refused. Throwaway certificates are made with
`cryptography`; skipped, saying so, where nginx is not installed (scripts/ensure-test-servers installs it)."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from simple_websocket import Client

from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.settings import Limits
from tests.authkit import client_jwks, token_form, write_json
from tests.conftest import TEST_MASTER_KEY_FILE, empty_database
from tests.helpers import FhirClient
from tests.server.conftest import running_server
from tests.webserver import serving

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "dui.conf"
PARC = ESTABLISHMENTS[1]["finess"]
SCOPES = "system/Subscription.cruds system/Observation.rs"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("nginx is not installed on this machine (Debian: apt-get install nginx-light; "
                    "scripts/ensure-test-servers does it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"), x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              common)])


def _certificate(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *,
                 ca: bool = False, server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("dui.example-ehpad.fr"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.with_suffix(".key").chmod(0o600)


class Proxy:
    def __init__(self, https: str, http: str, tls: Path) -> None:
        self.https, self.http, self.tls = https, http, tls
        self.ca = str(tls / "server-ca.crt")
        self.partner = (str(tls / "partner.crt"), str(tls / "partner.key"))
        self.stranger = (str(tls / "stranger.crt"), str(tls / "stranger.key"))


def make_pki(tls: Path) -> None:
    tls.mkdir()
    server_ca = _certificate("Test server CA", None, ca=True)
    _write(tls / "server-ca", server_ca[0])
    server = _certificate("dui.example-ehpad.fr", server_ca, server=True)
    _write(tls / "dui", server[0], server[1])
    igc = _certificate("Test IGC-Santé CA", None, ca=True)  # stands for the IGC-Santé bundle
    (tls / "igc-sante-ca.pem").write_bytes(igc[0].public_bytes(serialization.Encoding.PEM))
    partner = _certificate("Hôpital partenaire", igc)
    _write(tls / "partner", partner[0], partner[1])
    stranger = _certificate("Someone else", _certificate("Another CA", None, ca=True))
    _write(tls / "stranger", stranger[0], stranger[1])


def write_config(work: Path, upstream: int, https: int, http: int) -> Path:
    """The site as shipped, with this test's files, ports and upstream for its paths, inside a main configuration
    of its own (what Debian's /etc/nginx/nginx.conf gives, reduced)."""
    site = SITE.read_text()
    site = site.replace("/etc/nginx/tls/", f"{work}/tls/").replace("/var/log/nginx/", f"{work}/")
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{upstream}")
    site = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", site, flags=re.M)  # IPv6 may be off where the tests run
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http};")
    (work / "dui.conf").write_text(site)
    temp = "".join(f"    {kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                             "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = work / "nginx.conf"
    main.write_text(f"{user}worker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
                    "events { worker_connections 64; }\n"
                    f"http {{\n    access_log {work}/access.log;\n    default_type application/octet-stream;\n{temp}"
                    "    ssl_protocols TLSv1.2 TLSv1.3;\n"
                    f"    include {work}/dui.conf;\n}}\n")
    return main


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = nginx_binary()
    make_pki(tmp_path / "tls")
    main = write_config(tmp_path, 8080, _free_port(), _free_port())
    done = subprocess.run([nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def echo(environ: dict[str, Any], start_response: Any) -> Any:
    """What the upstream received; an event stream that waits between its two events."""
    path = environ["PATH_INFO"]
    if path == "/api/alerts/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream"),
                                  ("X-Seen-Forwarded-For", environ.get("HTTP_X_FORWARDED_FOR", ""))])

        def events() -> Iterator[bytes]:
            yield b"data: first\n\n"
            time.sleep(1.5)
            yield b"data: second\n\n"
        return events()
    seen = {"path": path, **{name: environ.get(f"HTTP_{name.upper().replace('-', '_')}") for name in
                             ("X-Forwarded-For", "X-Forwarded-Proto", "Host", "Upgrade", "Connection")}}
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Strict-Transport-Security", "max-age=1")])  # replaced by nginx's own
    return [json.dumps(seen).encode()]


@contextlib.contextmanager
def running_nginx(work: Path, upstream: int, https: int | None = None) -> Iterator[Proxy]:
    """nginx with the shipped site (this test's certificates, ports and upstream) until the block ends."""
    nginx = nginx_binary()
    make_pki(work / "tls")
    https, http = https or _free_port(), _free_port()
    main = write_config(work, upstream, https, http)
    output = open(work / "nginx.out", "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen([nginx, "-p", str(work), "-c", str(main), "-g", "daemon off;"],
                               stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start: {(work / 'nginx.out').read_text()}\n"
                            f"{(work / 'error.log').read_text()}")
            time.sleep(0.1)
        yield Proxy(f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", work / "tls")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx_binary()
    with serving(echo) as upstream, running_nginx(tmp_path_factory.mktemp("nginx"),
                                                  int(upstream.rsplit(":", 1)[1])) as running:
        yield running


def _handshake(proxy: Proxy, maximum: ssl.TLSVersion) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(proxy.ca)
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: offering them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("ALL:@SECLEVEL=0")  # this client would offer TLS 1.0 and 1.1: the server must refuse
    port = int(proxy.https.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="dui.example-ehpad.fr") as tls:
            return tls.version()
    except (ssl.SSLError, ConnectionResetError):
        return None


def test_tls_1_2_and_1_3_only(proxy: Proxy) -> None:
    assert _handshake(proxy, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert _handshake(proxy, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(proxy, ssl.TLSVersion.TLSv1_1) is None
    assert _handshake(proxy, ssl.TLSVersion.TLSv1) is None


def test_http_redirects_and_answers_carry_hsts_without_a_version(proxy: Proxy) -> None:
    moved = requests.get(f"{proxy.http}/api/residents", allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"].startswith("https://")
    answer = requests.get(f"{proxy.https}/api/residents", verify=proxy.ca, timeout=10)
    assert answer.status_code == 200 and answer.headers["Server"] == "nginx"
    assert answer.raw.headers.getlist("Strict-Transport-Security") == ["max-age=31536000"]


def test_the_client_address_replaces_what_the_client_sent(proxy: Proxy) -> None:
    for path, cert in (("/api/residents", None), ("/fhir/Patient", proxy.partner)):
        seen = requests.get(f"{proxy.https}{path}", headers={"X-Forwarded-For": "6.6.6.6"}, verify=proxy.ca,
                            cert=cert, timeout=10).json()
        assert seen["X-Forwarded-For"] == "127.0.0.1" and seen["X-Forwarded-Proto"] == "https", path


def test_partner_paths_need_a_verified_client_certificate(proxy: Proxy) -> None:
    for path in ("/fhir/metadata", "/fhir/Patient?name=x", "/ws/subscriptions"):
        assert requests.get(f"{proxy.https}{path}", verify=proxy.ca, timeout=10).status_code == 403, path
        with_cert = requests.get(f"{proxy.https}{path}", verify=proxy.ca, cert=proxy.partner, timeout=10)
        assert with_cert.status_code == 200 and with_cert.json()["path"] == path.split("?")[0], path
        stranger = requests.get(f"{proxy.https}{path}", verify=proxy.ca, cert=proxy.stranger, timeout=10)
        assert stranger.status_code == 400, path  # a certificate the IGC-Santé bundle does not sign
    for path in ("/api/residents", "/auth/token", "/.well-known/smart-configuration", "/healthz",  # staff: tokens
                 "/metrics"):  # the monitoring system's address (here, this host's) and its token
        assert requests.get(f"{proxy.https}{path}", verify=proxy.ca, timeout=10).status_code == 200, path


def test_the_websocket_upgrade_is_passed(proxy: Proxy) -> None:
    seen = requests.get(f"{proxy.https}/ws/subscriptions", verify=proxy.ca, cert=proxy.partner, timeout=10,
                        headers={"Upgrade": "websocket", "Connection": "Upgrade"}).json()
    assert seen["Upgrade"] == "websocket" and seen["Connection"] == "upgrade"
    assert seen["X-Forwarded-For"] == "127.0.0.1" and seen["X-Forwarded-Proto"] == "https"  # not lost on this path
    assert seen["Host"] and not seen["Host"].startswith("127.0.0.1:")
    plain = requests.get(f"{proxy.https}/api/residents", verify=proxy.ca, timeout=10,
                         headers={"Upgrade": "websocket", "Connection": "Upgrade"}).json()
    assert plain["Upgrade"] is None  # elsewhere, no upgrade reaches the service


def test_the_alert_stream_is_not_buffered(proxy: Proxy) -> None:
    started = time.monotonic()
    with requests.get(f"{proxy.https}/api/alerts/stream", verify=proxy.ca, stream=True, timeout=10) as stream:
        chunks = stream.iter_content(chunk_size=None)
        first = next(chunks)
        waited = time.monotonic() - started
        rest = b"".join(chunks)
    assert first == b"data: first\n\n" and waited < 1.2, (first, waited)
    assert stream.headers["X-Seen-Forwarded-For"] == "127.0.0.1"
    assert rest == b"data: second\n\n"


def test_bodies_above_the_services_limit_are_refused(proxy: Proxy) -> None:
    limit = int(re.search(r"client_max_body_size (\d+)m;", SITE.read_text()).group(1)) * 1024 * 1024  # type: ignore[union-attr]
    assert limit == Limits().max_request_bytes == 20971520
    port = int(proxy.https.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=proxy.ca)
    for size, status in ((limit + 1, 413), (limit, 200)):
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        try:
            connection.putrequest("POST", "/api/devices/events")
            connection.putheader("Content-Length", str(size))
            connection.putheader("Content-Type", "application/json")
            connection.endheaders()
            if status == 200:
                chunk = b" " * (1024 * 1024)
                for _ in range(size // len(chunk)):
                    connection.send(chunk)
            assert connection.getresponse().status == status, size
        finally:
            connection.close()


def test_a_partner_binds_a_subscription_websocket_through_nginx(database_url: str, app: Flask, tmp_path: Path) -> None:
    """End to end: nginx with the shipped site in front of a real `dui serve`; the partner's system, with its client
    certificate, gets a token, creates a websocket Subscription and binds it over wss:// (a real upgrade, 101)."""
    nginx_binary()
    empty_database(app)
    local = FhirClient(app.test_client())
    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):
        assert local.post("", bundle).status_code == 200
    jwks = write_json(tmp_path / "client.jwks.json", client_jwks())
    created = app.test_cli_runner().invoke(args=["clients", "create", "Appel malade", "--scope", SCOPES,
                                                 "--jwks-file", str(jwks), "--establishment", PARC])
    assert created.exit_code == 0, created.output
    work = tmp_path / "nginx"
    work.mkdir()
    nginx_https = _free_port()
    # the public address is nginx's: the token audience, the websocket's URL in the CapabilityStatement
    env = {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_TRUSTED_PROXIES": "127.0.0.1", "DUI_BASE_URL": f"https://127.0.0.1:{nginx_https}",
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path / "insi")}
    with running_server(env, tmp_path, workers=1, threads=8, base_url=False) as upstream, \
            running_nginx(work, int(upstream.rsplit(":", 1)[1]), https=nginx_https) as proxy:
        base = proxy.https
        answer = requests.post(f"{base}/auth/token", verify=proxy.ca, timeout=30,
                               data=token_form(created.stdout.strip(), f"{base}/auth/token", scope=SCOPES))
        assert answer.status_code == 200, answer.text
        auth = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert requests.get(f"{base}/fhir/metadata", verify=proxy.ca, timeout=30).status_code == 403  # no cert
        made = requests.post(f"{base}/fhir/Subscription", verify=proxy.ca, cert=proxy.partner, timeout=30,
                             headers={**auth, "Content-Type": "application/fhir+json"},
                             json={"resourceType": "Subscription", "status": "requested", "reason": "Appel malade",
                                   "criteria": "Observation?code=http://snomed.info/sct|1912002",
                                   "channel": {"type": "websocket"}})
        assert made.status_code == 201, made.text
        sub = made.json()["id"]
        statement = requests.get(f"{base}/fhir/metadata", verify=proxy.ca, cert=proxy.partner, timeout=30).json()
        where = next(e["valueUri"] for e in statement["rest"][0]["extension"] if e["url"].endswith("-websocket"))
        assert where == f"wss://127.0.0.1:{nginx_https}/ws/subscriptions"
        # (without a certificate nginx answers 403 there: test_partner_paths_need_a_verified_client_certificate)
        context = ssl.create_default_context(cafile=proxy.ca)
        context.load_cert_chain(*proxy.partner)
        ws = Client.connect(where, headers=auth, ssl_context=context)
        try:
            ws.send(f"bind {sub}")
            assert ws.receive(timeout=10) == f"bound {sub}"
        finally:
            ws.close()
        deadline = time.monotonic() + 10  # nginx logs the websocket once it is closed
        while '"GET /ws/subscriptions HTTP/1.1" 101' not in (work / "dui.access.log").read_text():
            assert time.monotonic() < deadline, (work / "dui.access.log").read_text()
            time.sleep(0.1)
        logged = next(line for line in (work / "dui.access.log").read_text().splitlines() if " 101 " in line)
        assert '"SUCCESS"' in logged and "pital partenaire,O=Test" in logged  # the partner's verified subject
