"""The TLS proxy (deploy/proxy/nginx.conf, compose service ``proxy``) in front of API replicas,
without Docker: Debian's nginx runs the same config file, rendered the way the nginx image
renders it, against three real ``trading api`` processes sharing one TRADING_HOME, with a
certificate made at test time by scripts/make-local-cert.sh.

Which replica served a request is read from the replicas' own access logs: each request
carries a unique X-Request-ID, which nginx forwards and the API logs (``request_id=...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets

from tests.api.support import (
    START,
    ApiEnv,
    Server,
    add_signals,
    build_warehouse,
    frames,
    free_port,
    subscribe,
)
from trading_api.keys import create_key
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.settings import PROJECT_DIR, Settings
from trading_pipeline.trading.store import OpsStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TEMPLATE = PROJECT_DIR / "deploy" / "proxy" / "nginx.conf"
CERT_SCRIPT = PROJECT_DIR / "scripts" / "make-local-cert.sh"
MISSING_NGINX = (
    "nginx not found. `make test` installs it (`make proxy`: apt-get install nginx-light); "
    "or run: sudo apt-get install -y nginx-light"
)
_PLACEHOLDER = re.compile(r"\$\{(PROXY_[A-Z0-9_]+)\}|\$(PROXY_[A-Z0-9_]+)")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail(MISSING_NGINX)
    return found


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image's entrypoint does (envsubst limited to ``PROXY_*`` names): every
    ``${PROXY_X}`` / ``$PROXY_X`` becomes its value. A placeholder without a value would reach
    nginx as text, so it is an error here (the image would render it empty)."""
    missing = sorted({a or b for a, b in _PLACEHOLDER.findall(template)} - set(values))
    if missing:
        raise ValueError(f"deploy/proxy/nginx.conf needs values for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1) or m.group(2)], template)


def make_cert(out: Path, *names: str, force: bool = False) -> subprocess.CompletedProcess[str]:
    """scripts/make-local-cert.sh [--force] OUT [NAME...], as an operator runs it."""
    cmd = [str(CERT_SCRIPT), *(["--force"] if force else []), str(out), *names]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@dataclass
class Proxy:
    """A real nginx master process on the rendered config, its files under ``root``."""

    root: Path
    https_port: int
    http_port: int
    cert: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def client(self, **kwargs) -> httpx.Client:  # noqa: ANN003
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)),
                            timeout=10, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: what `docker stop` sends the image
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_proxy(root: Path, backends: list[int], cert_dir: Path) -> Proxy:
    root.mkdir(parents=True)
    (root / "run").mkdir()
    (root / "logs").mkdir()
    https_port, http_port = free_port(), free_port()
    conf = root / "nginx.conf"
    conf.write_text(render(TEMPLATE.read_text(), {
        "PROXY_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "PROXY_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
        "PROXY_PUBLIC_HTTPS_PORT": str(https_port),
        "PROXY_CERT_DIR": str(cert_dir),
        "PROXY_UPSTREAM_SERVERS": " ".join(f"server 127.0.0.1:{p};" for p in backends),
        "PROXY_RESOLVER": "127.0.0.1",  # unused: the servers are addresses, not names
        "PROXY_RUN_DIR": str(root / "run"),
        "PROXY_LOG_DIR": str(root / "logs"),
    }))
    nginx = nginx_binary()
    base = [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "logs" / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proxy = Proxy(root, https_port, http_port, cert_dir / "tls.crt", proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with proxy.client() as c:
                c.get("/health")
            return proxy
        except httpx.HTTPError:
            time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"nginx did not start: {proxy.error_log.read_text()}")


def raw_get(proxy: Proxy, target: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET with ``target`` sent byte for byte (httpx would normalise ``//metrics`` or ``/./``)."""
    ctx = ssl.create_default_context(cafile=str(proxy.cert))
    with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "localhost", **headers, "Connection": "close"}.items())
        tls.sendall(f"GET {target} HTTP/1.1\r\n{head}\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status_line, _, rest = data.decode("latin-1").partition("\r\n")
    return int(status_line.split()[1]), rest.partition("\r\n\r\n")[2]


@dataclass
class Stack:
    env: ApiEnv
    backends: list[Server]
    proxy: Proxy
    cert_dir: Path

    def replica(self, port: int) -> Server:
        return next(b for b in self.backends if b.port == port)

    def served_by(self, request_ids: list[str], timeout: float = 5.0) -> dict[str, int]:
        return served_by(self.backends, request_ids, timeout)


def served_by(replicas: list[Server], request_ids: list[str], timeout: float = 5.0) -> dict[str, int]:
    """request id -> port of the replica whose access log has it (waits for the log lines)."""
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(request_ids) and time.monotonic() < deadline:
        for b in replicas:
            log = b.log_path.read_text()
            for rid in request_ids:
                if f"request_id={rid}" in log:
                    assert found.setdefault(rid, b.port) == b.port, f"{rid} in two replicas' logs"
        if len(found) < len(request_ids):
            time.sleep(0.1)
    return found


def _api_env(home: Path) -> ApiEnv:
    """A TRADING_HOME the way tests/api/conftest.py's ``api_env`` builds it."""
    home.mkdir()
    settings = Settings(home=home, risk_file=PROJECT_DIR / "risk.yaml", broker="paper")
    build_warehouse(settings.warehouse_path)
    publish_snapshot(settings.warehouse_path, settings.serving_dir)
    store = OpsStore(settings.ops_store_url)
    _record, key = create_key(store, "proxy-tests")
    store.close()
    return ApiEnv(home, settings, settings.warehouse_path, settings.serving_dir, key, settings.ops_store_url)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("proxy")
    env = _api_env(root / "home")
    cert_dir = root / "certs"
    made = make_cert(cert_dir)
    assert made.returncode == 0, made.stderr
    backends: list[Server] = []
    proxy = None
    try:
        for _ in range(3):
            backends.append(Server(env))
        proxy = start_proxy(root / "nginx", [b.port for b in backends], cert_dir)
        yield Stack(env, backends, proxy, cert_dir)
    finally:
        if proxy:
            proxy.stop()
        for b in backends:
            b.stop()


def _rid() -> str:
    return uuid.uuid4().hex


def test_https_requests_round_robin_over_the_three_replicas(stack: Stack) -> None:
    rids = [_rid() for _ in range(9)]
    with stack.proxy.client() as c:
        for rid in rids:
            r = c.get("/health", headers={"X-Request-ID": rid})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == rid  # the API's answer, passed back unchanged
            assert r.headers["server"] == "nginx"  # no version (server_tokens off)
        # an authenticated route: the key header reaches the API, and a missing key is refused
        r = c.get("/signals", headers=stack.env.headers())
        assert r.status_code == 200 and isinstance(r.json(), (list, dict)), r.text
        assert c.get("/signals").status_code == 401
    served = stack.served_by(rids)
    assert set(served) == set(rids), f"requests missing from every replica's log: {set(rids) - set(served)}"
    per_replica = Counter(served.values())
    assert set(per_replica) == {b.port for b in stack.backends}, per_replica
    # one shared rotation (upstream zone) over three healthy replicas: 3 requests each
    assert sorted(per_replica.values()) == [3, 3, 3], per_replica
    # nginx's own log agrees, request by request
    lines = stack.proxy.access_log.read_text().splitlines()
    for rid, port in served.items():
        line = next(ln for ln in lines if f"request_id={rid} " in ln)
        assert f"upstream=127.0.0.1:{port} " in line and " status=200 " in line, line


def test_plain_http_is_redirected_to_https_and_reaches_no_replica(stack: Stack) -> None:
    rid = _rid()
    base = f"http://127.0.0.1:{stack.proxy.http_port}"
    for method in ("GET", "POST"):
        r = httpx.request(method, f"{base}/signals?symbol=GOOG&limit=2", headers={"X-Request-ID": rid}, timeout=10)
        assert r.status_code == 308, r.text  # 308: a POST stays a POST on the https side
        assert r.headers["location"] == f"{stack.proxy.url}/signals?symbol=GOOG&limit=2"
    assert stack.served_by([rid], timeout=1) == {}
    # following the redirect over verified TLS gets the API's answer
    rid = _rid()
    r = httpx.get(f"{base}/health", headers={"X-Request-ID": rid}, follow_redirects=True, timeout=10,
                  verify=ssl.create_default_context(cafile=str(stack.proxy.cert)))
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    assert str(r.url) == f"{stack.proxy.url}/health" and [h.status_code for h in r.history] == [308]
    assert len(stack.served_by([rid])) == 1


def test_the_certificate_is_verified_and_plain_http_on_the_tls_port_fails(stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.proxy.url}/health", timeout=10)  # system CAs do not know the local cert
    r = httpx.get(f"http://127.0.0.1:{stack.proxy.https_port}/health", timeout=10)
    assert r.status_code == 400  # nginx: "plain HTTP request was sent to HTTPS port"


def test_forwarded_for_and_proto_reach_the_api(stack: Stack) -> None:
    """The client connects from 127.0.0.2: the replica (trusting its proxy at 127.0.0.1) logs
    that address, not the proxy's, and not one the client claims in X-Forwarded-For."""
    rid = _rid()
    transport = httpx.HTTPTransport(local_address="127.0.0.2",
                                    verify=ssl.create_default_context(cafile=str(stack.proxy.cert)))
    with httpx.Client(base_url=stack.proxy.url, transport=transport, timeout=10) as c:
        r = c.get("/health", headers={"X-Request-ID": rid, "X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 200
        # the scheme the API sees is https: its own redirects point at the proxy's https URL
        slash = c.get("/signals/", headers={**stack.env.headers(), "X-Request-ID": _rid()})
    port = stack.served_by([rid])[rid]
    line = next(ln for ln in stack.replica(port).log_path.read_text().splitlines() if f"request_id={rid}" in ln)
    assert "client=127.0.0.2" in line and "203.0.113.7" not in line, line
    assert slash.status_code == 307, slash.text
    assert slash.headers["location"] == f"{stack.proxy.url}/signals"


def test_websocket_push_through_the_proxy(stack: Stack) -> None:
    ctx = ssl.create_default_context(cafile=str(stack.proxy.cert))
    url = f"wss://127.0.0.1:{stack.proxy.https_port}/ws?api_key={stack.env.key}"

    async def scenario() -> list[dict]:
        async with websockets.connect(url, ssl=ctx) as ws:
            sub, _ = await subscribe(ws, ["signals"])
            with writer(stack.env.warehouse) as con:
                add_signals(con, [("MSFT", START + timedelta(days=d), "breakout_up", 2.0) for d in (52, 53)])
            stack.env.publish()
            got = await frames(ws, "item", 10, lambda out: len(out) >= 2)
            assert [m["seq"] for m in got] == [sub["head_seq"] + 1, sub["head_seq"] + 2], got
            return got

    got = asyncio.run(scenario())
    assert all(m["channel"] == "signals" and m["data"]["symbol"] == "MSFT" for m in got)
    # the upgrade went through nginx (101), and the key in the URL is not in its log
    log = stack.proxy.access_log.read_text()
    assert re.search(r"method=GET path=/ws status=101 ", log), log[-2000:]
    assert stack.env.key not in log


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "//metrics", "/%6detrics", "/metrics?format=text", "/./metrics"])
def test_metrics_is_refused_by_the_proxy(stack: Stack, path: str) -> None:
    rid = _rid()
    status, body = raw_get(stack.proxy, path, {**stack.env.headers(), "X-Request-ID": rid})
    assert status == 404 and json.loads(body) == {"detail": "Not Found"}, body
    assert "trading_api_requests_total" not in body
    assert stack.served_by([rid], timeout=1) == {}, "the proxy passed /metrics on"


def test_metrics_still_served_directly_by_each_replica(stack: Stack) -> None:
    for b in stack.backends:
        r = httpx.get(f"{b.url}/metrics", headers=stack.env.headers(), timeout=10)
        assert r.status_code == 200 and "trading_api_requests_total" in r.text


def test_a_killed_replica_is_skipped(stack: Stack, tmp_path: Path) -> None:
    """A proxy of its own over two of the stack's replicas and one this test starts, then kills
    (SIGKILL: a crash, no graceful close). Every request still succeeds; after the first
    refused connection nginx stops trying the dead replica (max_fails=1, fail_timeout=10s)."""
    doomed = Server(stack.env)
    proxy = None
    try:
        live = [b.port for b in stack.backends[:2]]
        proxy = start_proxy(tmp_path / "nginx", [*live, doomed.port], stack.cert_dir)
        with proxy.client() as c:
            before = [_rid() for _ in range(6)]
            for rid in before:
                assert c.get("/health", headers={"X-Request-ID": rid}).status_code == 200
            warm = served_by([*stack.backends[:2], doomed], before)
            assert set(warm) == set(before) and Counter(warm.values())[doomed.port] == 2, warm

            doomed.proc.kill()
            doomed.proc.wait()
            after = [_rid() for _ in range(12)]
            t0 = time.monotonic()
            statuses = [c.get("/health", headers={"X-Request-ID": rid}).status_code for rid in after]
            elapsed = time.monotonic() - t0
        assert statuses == [200] * 12, statuses
        served = served_by(stack.backends[:2], after)
        assert set(served) == set(after) and set(served.values()) <= set(live), served
        # without the passive check every third request would try the dead replica (4 of 12);
        # with it, only the first does (a second only if the 10 s window ran out meanwhile)
        refused = [ln for ln in proxy.error_log.read_text().splitlines()
                   if "connect() failed" in ln and f":{doomed.port}" in ln]
        assert 1 <= len(refused) <= (1 if elapsed < 9 else 2), refused
        retried = [ln for ln in proxy.access_log.read_text().splitlines()
                   if any(f"request_id={rid} " in ln for rid in after) and f"127.0.0.1:{doomed.port}, " in ln]
        assert len(retried) == len(refused), retried  # the request that found it down was retried
    finally:
        if proxy:
            proxy.stop()
        doomed.stop()


# ---- the certificate script and the template: bad input is refused, nothing is lost ------------
def test_cert_script_makes_a_key_only_its_owner_reads_and_keeps_an_existing_pair(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = make_cert(out, force=True)  # --force on an empty folder is fine
    assert made.returncode == 0, made.stderr
    assert oct((out / "tls.key").stat().st_mode & 0o777) == "0o600"
    text = subprocess.run(["openssl", "x509", "-in", str(out / "tls.crt"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = make_cert(out)
    assert again.returncode == 1 and "--force" in again.stderr and "nothing was changed" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no leftovers
    replaced = make_cert(out, "trading.lan", "10.1.2.3", force=True)
    assert replaced.returncode == 0, replaced.stderr
    assert (out / "tls.crt").read_bytes() != before["tls.crt"]
    text = subprocess.run(["openssl", "x509", "-in", str(out / "tls.crt"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:trading.lan" in text and "IP Address:10.1.2.3" in text
    assert sorted(p.name for p in out.iterdir()) == ["tls.crt", "tls.key"]


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unknown option --bogus"),
    (["{out}", "bad,name"], "is not a host name or IP address"),
    (["{out}", "a b"], "is not a host name or IP address"),
])
def test_cert_script_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "certs"
    r = subprocess.run([str(CERT_SCRIPT), *(a.format(out=out) for a in args)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not out.exists()


def test_cert_script_explains_itself() -> None:
    r = subprocess.run([str(CERT_SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "deploy/proxy/certs" in r.stdout and "--force" in r.stdout


def test_render_names_every_missing_placeholder() -> None:
    with pytest.raises(ValueError, match="PROXY_CERT_DIR, PROXY_RESOLVER"):
        render(TEMPLATE.read_text(), {k: "x" for k in _placeholders() if k not in ("PROXY_CERT_DIR", "PROXY_RESOLVER")})


def _placeholders() -> set[str]:
    return {a or b for a, b in _PLACEHOLDER.findall(TEMPLATE.read_text())}


def test_nginx_refuses_to_start_without_a_certificate(tmp_path: Path) -> None:
    """A missing cert folder stops nginx at start with the path in the message (compose: the
    proxy container exits and `docker compose logs proxy` shows it)."""
    with pytest.raises(AssertionError, match=r"tls\.crt"):
        start_proxy(tmp_path / "nginx", [free_port()], tmp_path / "no-certs")
