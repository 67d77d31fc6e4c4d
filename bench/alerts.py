"""Fall-sensor alert latency: from a sensor gateway's POST to the staff's SSE stream, and to a FHIR Subscription's
websocket.

    python bench/alerts.py --residents 200 --rate 20 --seconds 60 [--servers dui-postgresql,dui-sqlite]

For each server (``dui serve``, gunicorn 2 workers x 8 threads, a fresh database with ``dui demo load --residents
N``: every resident in a room with its fall sensor), the script registers a device client per establishment
(``dui clients create --device``, token from /auth/token with a signed assertion) and opens one SSE stream per
establishment with a nurse's token. Then the sensors post fall events (each of the N sensors in turn, at ``--rate``
events per second in all, from 16 threads), and each event is timed from the moment its POST left to the moment
the stream delivered the alert event it produced (raised, or merged into the room's open alert: matched by the
alert's id and its event count).

With ``--websocket`` (the default), each establishment also has an API client with a websocket Subscription on
falls (``Observation?code=...|1912002``), bound on ``/ws/subscriptions``, and ``dui worker --notify-interval 0.25``
runs beside the server: each fall that raised an alert is also timed from its POST to the ``ping`` it produced. A
ping names the Subscription, not the fall: the pings of an establishment are paired, in the order they arrive, with
its raised alerts in the order the SSE stream delivered them (the order their transactions committed).

The baseline, in the same run and on the same server, is the POST's own round trip (the gateway's wait for its
answer): the ratio says what the delivery to the staff adds to writing the event. Results: JSON in bench/results/,
Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from simple_websocket import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import DUI, RESULTS, Server, _percentiles, dui_server, machine  # noqa: E402
from dui.demo.data import ESTABLISHMENTS  # noqa: E402

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PASSWORD = "Banc-alertes-2026!"


FALLS = "Observation?code=http://snomed.info/sct|1912002"
SUBSCRIBER_SCOPES = "system/Subscription.cruds system/Observation.rs"


def device_token(server: Server, finess: str, workdir: Path) -> dict[str, str]:
    return client_token(server, finess, workdir, f"capteurs-{finess}", "system/Observation.c system/Flag.c",
                        device=True)


def client_token(server: Server, finess: str, workdir: Path, name: str, scope: str,
                 device: bool = False) -> dict[str, str]:
    """An API client registered for ``finess`` (a device client with ``device``), and a token it obtained."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = workdir / f"jwks-{name}.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES384", "use": "sig"}]}))
    kind = ["--device"] if device else ["--scope", scope]
    created = subprocess.run([str(DUI), "clients", "create", name, *kind, "--jwks-file", str(jwks), "--establishment",
                              finess], env=server.env, cwd=workdir, check=True, capture_output=True, text=True)
    client_id = created.stdout.split()[0]
    root = server.base.removesuffix("/fhir")
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": root + "/auth/token", "iat": now,
                            "exp": now + 240, "jti": uuid.uuid4().hex}, key, algorithm="ES384", headers={"kid": "k1"})
    answer = requests.post(root + "/auth/token", timeout=30, data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION, "client_assertion": assertion,
        "scope": scope})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def subscribed_socket(server: Server, finess: str, workdir: Path, out: queue.Queue[tuple[float, str]],
                      stop: threading.Event) -> threading.Thread:
    """A client of ``finess`` with a websocket Subscription on falls, bound; a thread puts each ping received (its
    time, the establishment) in ``out`` until ``stop``."""
    headers = client_token(server, finess, workdir, f"appel-malade-{finess}", SUBSCRIBER_SCOPES)
    made = requests.post(server.base + "/Subscription", timeout=30,
                         headers={**headers, "Content-Type": "application/fhir+json"},
                         json={"resourceType": "Subscription", "status": "requested", "reason": "bench",
                               "criteria": FALLS, "channel": {"type": "websocket"}})
    made.raise_for_status()
    sub = made.json()["id"]
    ws = Client.connect(server.base.removesuffix("/fhir").replace("http://", "ws://") + "/ws/subscriptions",
                        headers=headers)
    ws.send(f"bind {sub}")
    if ws.receive(timeout=10) != f"bound {sub}":
        raise RuntimeError("the Subscription could not be bound")

    def read() -> None:
        try:
            while not stop.is_set():
                message = ws.receive(timeout=0.5)
                if message == f"ping {sub}":
                    out.put((time.perf_counter(), finess))
        finally:
            ws.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def nurse_token(server: Server, finess: str) -> dict[str, str]:
    login = f"bench.ide.{finess}"
    subprocess.run([str(DUI), "users", "create", login, "--role", "infirmier", "--establishment", finess,
                    "--password-stdin"], env=server.env, cwd=server.workdir, input=PASSWORD.encode(), check=True,
                   capture_output=True)
    answer = requests.post(server.base.removesuffix("/fhir") + "/auth/token", timeout=30,
                           data={"grant_type": "password", "username": login, "password": PASSWORD})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def listen(url: str, headers: dict[str, str], out: queue.Queue[tuple[float, str, dict[str, Any], str]],
           stop: threading.Event, finess: str) -> None:
    """Read the SSE stream of ``finess``, reconnecting with Last-Event-ID when it ends, until ``stop``."""
    last = None
    while not stop.is_set():
        sent = {**headers, **({"Last-Event-ID": last} if last else {})}
        with requests.get(url, headers=sent, stream=True, timeout=(5, 30)) as answer:
            answer.raise_for_status()
            event: dict[str, str] = {}
            for line in answer.iter_lines(decode_unicode=True):
                if stop.is_set():
                    return
                if line == "":
                    if "data" in event:
                        last = event.get("id", last)
                        out.put((time.perf_counter(), event.get("event", ""), json.loads(event["data"]), finess))
                    event = {}
                elif not line.startswith(":") and ": " in line:
                    name, value = line.split(": ", 1)
                    event[name] = value


def run_server(kind: str, args: argparse.Namespace, port: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-alerts-{kind}-"))
    server = dui_server(kind, port, workdir, workers=2)
    server.env["DUI_ALERT_STREAM_SECONDS"] = "3600"
    loaded = subprocess.run([str(DUI), "demo", "load", "--residents", str(args.residents)], env=server.env,
                            cwd=workdir, capture_output=True, text=True)  # the server's (development) keys
    if loaded.returncode != 0:
        raise RuntimeError(f"demo load failed: {loaded.stderr[-500:]}")
    server.start()
    try:
        root = server.base.removesuffix("/fhir")
        sensors = [(ESTABLISHMENTS[i % 2]["finess"], f"CAPTEUR-{ESTABLISHMENTS[i % 2]['finess']}-{100 + i}")
                   for i in range(1, args.residents + 1)]
        devices = {o["finess"]: device_token(server, o["finess"], workdir) for o in ESTABLISHMENTS}
        received: queue.Queue[tuple[float, str, dict[str, Any], str]] = queue.Queue()
        stop = threading.Event()
        nurses = [(o["finess"], nurse_token(server, o["finess"])) for o in ESTABLISHMENTS]
        listeners = [threading.Thread(target=listen, args=(root + "/api/alerts/stream", headers, received, stop,
                                                           finess), daemon=True) for finess, headers in nurses]
        for t in listeners:
            t.start()
        pings: queue.Queue[tuple[float, str]] = queue.Queue()
        worker = None
        if args.websocket:
            log = open(workdir / "worker.log", "ab")  # noqa: SIM115 (closed with the process)
            worker = subprocess.Popen([str(DUI), "worker", "--notify-interval", "0.25"], env=server.env, cwd=workdir,
                                      stdout=log, stderr=log, start_new_session=True)
            for o in ESTABLISHMENTS:
                subscribed_socket(server, o["finess"], workdir, pings, stop)
        time.sleep(1.0)  # the streams are open
        sent: dict[tuple[str, int], float] = {}
        posts: list[float] = []
        errors = 0
        failures: list[str] = []  # the first, to say why
        lock = threading.Lock()

        def post(n: int) -> None:
            nonlocal errors
            finess, sensor = sensors[n % len(sensors)]
            started = time.perf_counter()
            try:
                answer = requests.post(root + "/api/devices/events", headers=devices[finess], timeout=30,
                                       json={"event_id": f"e{n}-{uuid.uuid4().hex[:8]}", "sensor": sensor,
                                             "kind": "fall"})
                ok = answer.status_code in (200, 201)
                if not ok and not failures:
                    failures.append(f"{answer.status_code} {answer.text[:300]}")
            except requests.RequestException as exc:
                ok = False
                if not failures:
                    failures.append(str(exc)[:300])
            took = time.perf_counter() - started
            with lock:
                if not ok:
                    errors += 1
                    return
                alert = answer.json()
                sent[(alert["id"], alert["events"])] = started
                posts.append(took)

        total = int(args.rate * args.seconds)
        began = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            for n in range(total):
                due = began + n / args.rate
                time.sleep(max(0.0, due - time.perf_counter()))
                pool.submit(post, n)
        time.sleep(3.0)  # the last deliveries
        stop.set()
        latencies = []
        raised: dict[str, list[float]] = {}  # establishment -> POST times of its raised alerts, in commit order
        while not received.empty():
            at, kind_, alert, finess = received.get()
            if kind_ in ("raised", "merged") and (alert["id"], alert["events"]) in sent:
                latencies.append(at - sent[(alert["id"], alert["events"])])
            if kind_ == "raised" and (alert["id"], 1) in sent and alert.get("resident_id"):
                raised.setdefault(finess, []).append(sent[(alert["id"], 1)])
        by_establishment: dict[str, list[float]] = {}
        while not pings.empty():
            at, finess = pings.get()
            by_establishment.setdefault(finess, []).append(at)
        to_ping = [ping - posted for finess, times in by_establishment.items()
                   for ping, posted in zip(times, raised.get(finess, []), strict=False)]
        delivered = len(latencies)
        return {"server": server.name, "events_posted": len(posts), "post_errors": errors, "first_failure": failures,
                "delivered_to_streams": delivered, "post_round_trip": _percentiles(posts),
                "post_to_stream": _percentiles(latencies),
                "falls_raised": sum(len(v) for v in raised.values()),
                "pings": sum(len(v) for v in by_establishment.values()), "post_to_ping": _percentiles(to_ping)}
    finally:
        if args.websocket and worker is not None:
            worker.terminate()
            worker.wait(30)
        server.stop()


def markdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"Fall alerts, {args.residents} residents' sensors, {args.rate:g} events/s for {args.seconds:g} s",
             "", "| server | events posted (errors) | delivered to the streams | POST round trip p50 / p95 / p99 ms "
             "(baseline) | POST to SSE p50 / p95 / p99 ms | p95 ratio |", "|---|---|---|---|---|---|"]
    for r in runs:
        a, b = r["post_round_trip"], r["post_to_stream"]
        ratio = b.get("p95_ms", 0) / a["p95_ms"] if a.get("p95_ms") else 0
        lines.append(f"| {r['server']} | {r['events_posted']} ({r['post_errors']}) | {r['delivered_to_streams']} | "
                     f"{a.get('p50_ms')} / {a.get('p95_ms')} / {a.get('p99_ms')} | {b.get('p50_ms')} / "
                     f"{b.get('p95_ms')} / {b.get('p99_ms')} | {ratio:.1f}x |")
    if args.websocket:
        lines += ["", "| server | falls raised | pings received | POST to websocket ping p50 / p95 / p99 ms | "
                  "p95, ping / SSE |", "|---|---|---|---|---|"]
        for r in runs:
            b, c = r["post_to_stream"], r["post_to_ping"]
            ratio = c.get("p95_ms", 0) / b["p95_ms"] if b.get("p95_ms") else 0
            lines.append(f"| {r['server']} | {r['falls_raised']} | {r['pings']} | {c.get('p50_ms')} / "
                         f"{c.get('p95_ms')} / {c.get('p99_ms')} | {ratio:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second, all sensors together")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--servers", default="dui-postgresql,dui-sqlite")
    parser.add_argument("--websocket", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the pings of a websocket Subscription (dui worker runs beside the server)")
    args = parser.parse_args()
    runs = [run_server(name.removeprefix("dui-"), args, 18300 + n) for n, name in enumerate(args.servers.split(","))]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"alerts-{int(time.time())}.json").write_text(json.dumps({"machine": machine(), "runs": runs},
                                                                         indent=2))
    print(markdown(runs, args))


if __name__ == "__main__":
    main()
