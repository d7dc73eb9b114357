"""The hardened HTTP edge as real `churn_serve` processes: JSON logs, request ids, named keys, rate limits (in memory and in a
real Redis), forged addresses, CORS, header limits, request deadlines, the connection cap, bounded memory, graceful shutdown."""
import json, os, re, shutil, signal, socket, subprocess, threading, time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port
from churn_deploy.api import CUSTOMER_BODY_LIMIT
from churn_deploy.config import Settings, key_hash
from churn_deploy.data import SAMPLE_CUSTOMER
from conftest import assert_error, metric_samples, raw, running_server, sample_value
from support import assert_serve_error, serve

JSON = {"content-type": "application/json"}
CRM, WEB = "crm-key-6f1d0c9a2b7e", "web-key-3a8e5d2c9b4f"
KEYS = f"crm:{key_hash(CRM)},web:{key_hash(WEB)}"
# A customer whose numbers appear nowhere else, so a log line holding them can only be a logged body.
MARKED = {**SAMPLE_CUSTOMER, "monthlycharges": 73.1415, "totalcharges": 9876.5432}


def vm_hwm_mib(pid: int) -> float:
    "Peak resident memory of a process, MiB."
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def port_of(url: str) -> int: return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------- every feature on: JSON logs, keys, limits, CORS

@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "A server with every edge feature on: JSON access log, two named keys, a rate limit, CORS."
    with running_server(tmp_path_factory.mktemp("full"), CHURN_LOG_FORMAT="json", CHURN_ACCESS_LOG="true",
                        CHURN_API_KEYS=KEYS, CHURN_RATE_LIMIT="100000/minute", CHURN_CORS_ORIGINS="https://desk.example.com",
                        ) as (url, proc, log):
        yield url, proc, log


def test_json_logs_every_line_and_access_fields(full):
    url, proc, log = full
    with httpx.Client(base_url=url, timeout=30) as c:
        ok = c.post("/predict", json=MARKED, headers={"X-API-Key": CRM, "X-Request-ID": "trace-42"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-42"
        bad = c.post("/predict", json={**MARKED, "tenure": -1}, headers={"X-API-Key": WEB})
        assert_error(bad, 422, "tenure")
        assert c.post("/predict/batch", json={"customers": [MARKED] * 3}, headers={"X-API-Key": WEB}).status_code == 200
        assert c.post("/explain", json=MARKED, headers={"X-API-Key": CRM}).status_code == 200
        assert c.post("/predict", json=MARKED, headers={"X-API-Key": "not-a-known-key-at-all"}).status_code == 401
        assert c.get("/health").status_code == 200
    time.sleep(0.3)
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    records = [json.loads(l) for l in lines]  # every line is one JSON object: uvicorn's, the app's, the access lines
    assert any(r["logger"] == "uvicorn.error" and "Application startup complete" in r["message"] for r in records)
    assert any(r["logger"] == "churn" and "loaded from" in r["message"] for r in records)
    access = [r for r in records if r["logger"] == "churn.access"]
    first = next(r for r in access if r["request_id"] == "trace-42")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", first["time"]), first["time"]
    model_version = ok.json()["model_version"]
    assert {k: first[k] for k in ("level", "method", "route", "status", "model_version", "key_name", "client")} == \
        {"level": "INFO", "method": "POST", "route": "/predict", "status": 200, "model_version": model_version,
         "key_name": "crm", "client": "127.0.0.1"}
    assert first["bytes"] == len(ok.content) and 0 < first["duration_ms"] < 5000
    e422 = next(r for r in access if r["request_id"] == bad.headers["x-request-id"])
    assert (e422["status"], e422["key_name"]) == (422, "web") and bad.json()["error"]["request_id"] == e422["request_id"]
    assert {r["route"] for r in access} >= {"/predict", "/predict/batch", "/explain", "/health"}
    assert any(r["status"] == 401 and r["key_name"] is None for r in access)


def test_cors_preflight_and_disallowed_origin(full):
    url = full[0]
    pre = httpx.options(url + "/predict", headers={"Origin": "https://desk.example.com", "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type, x-api-key"}, timeout=30)
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://desk.example.com"
    assert {"content-type", "x-api-key"} <= {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert "access-control-allow-credentials" not in pre.headers
    evil = httpx.options(url + "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "access-control-allow-origin" not in evil.headers
    r = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, headers={"Origin": "https://evil.example", "X-API-Key": CRM}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin", ["https://desk.example.com.evil.example", "https://xdesk.example.com", "http://desk.example.com",
                                    "https://desk.example.com:8443", "https://DESK.example.com/", "https://desk.example.co"])
def test_cors_origins_matched_exactly(full, origin):
    "Near misses of the one allowed origin (a suffix, a prefix, another scheme or port) get no CORS grant, preflight or not."
    url = full[0]
    pre = httpx.options(url + "/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "access-control-allow-origin" not in pre.headers, (origin, pre.headers)
    r = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, headers={"Origin": origin, "X-API-Key": CRM}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers, (origin, r.headers)
    ok = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, headers={"Origin": "https://desk.example.com", "X-API-Key": CRM}, timeout=30)
    assert ok.headers["access-control-allow-origin"] == "https://desk.example.com"  # the exact origin is granted


def test_response_headers_and_no_host_redirect(full):
    url = full[0]
    r = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, headers={"X-API-Key": CRM}, timeout=30)
    assert (r.headers["x-content-type-options"], r.headers["cache-control"]) == ("nosniff", "no-store")
    assert r.headers["x-model-version"] == r.json()["model_version"]
    assert httpx.get(url + "/health", timeout=30).headers["x-content-type-options"] == "nosniff"
    slash = httpx.post(url + "/predict/", json=SAMPLE_CUSTOMER, headers={"X-API-Key": CRM, "Host": "evil.example"},
                       follow_redirects=False, timeout=30)
    assert slash.status_code == 404 and "location" not in slash.headers


@pytest.mark.parametrize("rid, kept", [("abc-123_x.y", True), ("x" * 64, True), ("x" * 65, False), ("has space", False),
                                       ("<script>", False), ("", False)])
def test_request_id_kept_only_when_well_formed(full, rid, kept):
    r = httpx.get(full[0] + "/health", headers={"X-Request-ID": rid}, timeout=30)
    assert (r.headers["x-request-id"] == rid) is kept
    if not kept: assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])


def test_rate_limit_headers_and_batch_cost(tmp_path):
    "A batch costs its rows; the 429 carries Retry-After and RateLimit-*; probes and metrics are free."
    with running_server(tmp_path, CHURN_API_KEYS=KEYS, CHURN_RATE_LIMIT="10/minute") as (url, _, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 8}, headers={"X-API-Key": CRM}).status_code == 200
            r = c.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 3}, headers={"X-API-Key": CRM})
            err = assert_error(r, 429)
            assert err["message"].startswith("rate limit: over 10 per 1 minute; retry in "), err
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("10", "0")
            assert 1 <= int(r.headers["ratelimit-reset"]) <= 60
            # each key name has its own budget
            assert c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-API-Key": WEB}).status_code == 200
            for _ in range(30):
                assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
                assert c.get("/metrics", headers={"X-API-Key": CRM}).status_code == 200
            limited = sample_value(metric_samples_with_key(c), "churn_rate_limited_total")
            assert limited >= 1


@pytest.mark.parametrize("rows", [8, 160], ids=["small body, event loop", "over 64 KiB, worker thread"])
def test_batch_costs_its_rows_on_both_paths(tmp_path, rows):
    "A batch is charged its row count whether its body is read on the event loop or, over 64 KiB, checked in a worker thread."
    customer = SAMPLE_CUSTOMER
    batch = {"customers": [customer] * rows}
    assert (len(json.dumps(batch)) > CUSTOMER_BODY_LIMIT) is (rows > 100), len(json.dumps(batch))
    with running_server(tmp_path, CHURN_API_KEYS=KEYS, CHURN_RATE_LIMIT=f"{rows + 2}/minute") as (url, _, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/predict/batch", json=batch, headers={"X-API-Key": CRM}).status_code == 200  # spends `rows`
            r = c.post("/predict/batch", json={"customers": [customer] * 3}, headers={"X-API-Key": CRM})
            assert_error(r, 429)  # rows + 3 > rows + 2: the first batch was charged every row
            assert c.post("/predict/batch", json={"customers": [customer] * 3}, headers={"X-API-Key": WEB}).status_code == 200


def metric_samples_with_key(c: httpx.Client):
    from prometheus_client.parser import text_string_to_metric_families
    text = c.get("/metrics", headers={"X-API-Key": CRM}).text
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


@pytest.mark.parametrize("env", [{"CHURN_API_KEY": " " * 16}, {"CHURN_API_KEY": "\t" * 24},
                                 {"CHURN_API_KEYS": f"crm:{key_hash(CRM)},blank:{key_hash(' ' * 16)}"},
                                 {"CHURN_API_KEY": CRM + "\n"}],
                         ids=["16 spaces", "24 tabs", "hash of 16 spaces", "trailing newline"])
def test_blank_api_key_refused_at_start(env):
    "A key of only whitespace passes a length check but is no secret; one with whitespace at an end no client can send."
    line = assert_serve_error(serve(ROOT / "model", **env), "whitespace")
    assert ("api_keys" if "CHURN_API_KEYS" in env else "api_key") in line, line


def test_trusted_proxy_defaults_to_none(monkeypatch):
    "Out of the box no proxy is believed: the default is `none`, whatever the platform."
    monkeypatch.delenv("CHURN_TRUSTED_PROXY", raising=False)
    assert Settings.model_fields["trusted_proxy"].default == "none" and Settings().trusted_proxy == "none"


@pytest.mark.parametrize("trusted, forged_counts", [("none", False), (None, False), ("k8s", True)], ids=["none", "unset", "k8s"])
def test_forged_forwarded_for_changes_nothing_unless_trusted(tmp_path, trusted, forged_counts):
    "With CHURN_TRUSTED_PROXY=none or unset a forged X-Forwarded-For is ignored; trusting the peer's network makes it count (so the test can fail)."
    env = {} if trusted is None else {"CHURN_TRUSTED_PROXY": trusted}
    with running_server(tmp_path, CHURN_RATE_LIMIT="5/minute", **env) as (url, _, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            statuses = [c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Forwarded-For": f"203.0.113.{i}",
                                                                           "Fly-Client-IP": f"198.51.100.{i}"}).status_code
                        for i in range(12)]
    if forged_counts: assert statuses == [200] * 12, statuses  # each forged address has its own budget
    else: assert statuses == [200] * 5 + [429] * 7, statuses


@contextmanager
def redis_server(d: Path):
    "A real redis-server on a free port in `d`: yield (URL, process); never left stopped or running."
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    d.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"): break
            except OSError: time.sleep(0.1)
        else: pytest.fail("redis-server did not answer PING")
        yield f"redis://127.0.0.1:{port}", proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process would ignore the SIGTERM until then
        proc.terminate()
        try: proc.wait(timeout=10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    "A real redis-server shared by this module's tests."
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _): yield url


def test_two_replicas_sharing_redis_admit_the_limit_in_total(tmp_path, redis_url):
    limit = 20
    env = dict(CHURN_API_KEYS=KEYS, CHURN_RATE_LIMIT=f"{limit}/minute", CHURN_RATE_LIMIT_STORAGE=redis_url)
    with running_server(tmp_path / "a", **env) as (a, _, _), running_server(tmp_path / "b", **env) as (b, _, _):
        codes = []
        with httpx.Client(timeout=30) as c:
            for i in range(2 * limit):  # alternate between the replicas, as a load balancer would
                codes.append(c.post((a, b)[i % 2] + "/predict", json=SAMPLE_CUSTOMER, headers={"X-API-Key": CRM}).status_code)
    assert codes.count(200) == limit and codes.count(429) == limit, codes
    assert codes[:limit] == [200] * limit  # and the refusals come after the budget, on both replicas


def test_redis_down_admits_and_says_so(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}"
    with running_server(tmp_path, CHURN_RATE_LIMIT="1/minute", CHURN_RATE_LIMIT_STORAGE=dead) as (url, _, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            assert [c.post("/predict", json=SAMPLE_CUSTOMER).status_code for _ in range(3)] == [200] * 3
            assert sample_value(metric_samples(c, "churn_rate_limit_storage_errors"), "churn_rate_limit_storage_errors_total") >= 3
    text = log.read_text()
    assert text.count("rate limit storage failed") == 1 and "Traceback" not in text


def test_stalled_redis_admits_within_the_timeout(tmp_path):
    "A Redis stopped by SIGSTOP (a stalled network): each request waits at most the timeout, is admitted, counted as a storage error "
    "and logged once; /ready stays 200; after SIGCONT the limit counts again."
    timeout, limit = 0.5, 3
    with redis_server(tmp_path / "redis") as (redis, rproc), \
         running_server(tmp_path, CHURN_RATE_LIMIT=f"{limit}/minute", CHURN_RATE_LIMIT_STORAGE=redis,
                        CHURN_RATE_LIMIT_TIMEOUT=str(timeout)) as (url, _, log):
        def timed_post(_):
            with httpx.Client(base_url=url, timeout=15) as c:  # 15 s: on a hang the test fails instead of waiting for Redis
                start = time.monotonic()
                r = c.post("/predict", json=SAMPLE_CUSTOMER)
                return r.status_code, time.monotonic() - start
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/predict", json=SAMPLE_CUSTOMER).status_code == 200  # Redis counts: 1 of 3
            errors = lambda: sample_value(metric_samples(c, "churn_rate_limit_storage_errors"), "churn_rate_limit_storage_errors_total")
            assert errors() == 0
            os.kill(rproc.pid, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(8) as pool: stalled = list(pool.map(timed_post, range(16)))
                stalled_ready, stalled_errors = c.get("/ready"), errors()
                assert c.get("/health").status_code == 200
            finally: os.kill(rproc.pid, signal.SIGCONT)
            # Redis is back: the same connection pool counts again, and the 4th request in this minute is over the limit
            after = [c.post("/predict", json=SAMPLE_CUSTOMER).status_code for _ in range(limit + 1)]
            ready = c.get("/ready")
    # 16 requests over a limit of 3, all admitted, none waiting for Redis: a bound against a hang, not a latency figure
    assert [code for code, _ in stalled] == [200] * 16, stalled
    assert max(took for _, took in stalled) < timeout + 2, stalled
    assert stalled_errors >= 16
    assert 429 in after, after
    # /ready says so in its body but stays 200: failing it would take every replica out of service
    assert stalled_ready.status_code == 200 and "degraded" in stalled_ready.text, stalled_ready.text
    assert ready.status_code == 200 and "degraded" not in ready.text, ready.text
    text = log.read_text()
    assert text.count("rate limit storage failed") == 1 and "Traceback" not in text, text[-2000:]
    assert "rate limit storage answers again" in text


# ---------------------------------------------------------------- headers, deadlines, connections, memory

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    "A server with a 1 s request deadline and a cap of 6 connections."
    with running_server(tmp_path_factory.mktemp("guarded"), CHURN_REQUEST_TIMEOUT="1", CHURN_MAX_CONNECTIONS="6") as (url, proc, log):
        yield url, proc, log


def test_header_limits_431(guarded):
    url, proc, _ = guarded
    port = port_of(url)
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
    assert raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431")
    over = raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 17_000 + b"\r\n\r\n")
    assert over.startswith(b"HTTP/1.1 431") and b'"status":431' in over
    before = vm_hwm_mib(proc.pid)
    # A 20 MB header: the server answers 431 and closes after the first tens of KB, so the sender
    # is cut off (reset) long before the end, and the server never holds more than a read's worth.
    sent, reply = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(20_000): s.sendall(b"v" * 1000); sent += 1000
        except (ConnectionResetError, BrokenPipeError): pass
        try: reply = s.recv(4096)
        except ConnectionResetError: pass
    assert sent < 10_000_000, f"the server read {sent} bytes of header before refusing"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert vm_hwm_mib(proc.pid) - before < 10, "a 20 MB header was buffered"
    assert httpx.get(url + "/health", timeout=30).status_code == 200


def _held(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    return s


def _closed_within(s: socket.socket, seconds: float) -> float | None:
    "Seconds until the server closes `s`, or None if it is still open after `seconds`."
    start = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(4096): pass
        return time.monotonic() - start
    except socket.timeout: return None
    except ConnectionResetError: return time.monotonic() - start


@pytest.mark.parametrize("partial", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-", 
                                     b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"gen"],
                         ids=["nothing sent", "headers unfinished", "body unfinished"])
def test_incomplete_request_is_dropped(guarded, partial):
    url, _, log = guarded
    with _held(port_of(url), partial) as s:
        took = _closed_within(s, 8)
    assert took is not None and 0.5 < took < 5, took


def test_dropped_body_is_a_499_not_a_500(guarded):
    url, _, log = guarded
    with httpx.Client(base_url=url, timeout=30) as c:
        before = metric_samples(c, "churn_http_requests")
        with _held(port_of(url), b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{") as s:
            assert _closed_within(s, 8) is not None
        time.sleep(0.3)
        after = metric_samples(c, "churn_http_requests")
    def n(samples, status): return sample_value(samples, "churn_http_requests_total", method="POST", route="/predict", status=status)
    assert n(after, "499") - n(before, "499") == 1
    assert not any(s.labels.get("status", "").startswith("5") for s in after if s.name == "churn_http_requests_total")
    assert "Traceback" not in log.read_text() and "ERROR" not in log.read_text()


def test_a_big_batch_waiting_for_a_slot_is_not_dropped_by_the_deadline(guarded):
    """The deadline is the client's time to send its request, not the time the server keeps it waiting.
    Two stalled big batches hold both batch slots until their own deadline (1 s) drops them; three whole 10,000-customer
    batches sent at once wait behind them, and each behind the others' scoring, longer than 1 s in all: every one is answered."""
    url, _, log = guarded
    port = port_of(url)
    stalled = [_held(port, b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 200000\r\n\r\n{\"customers\": [") for _ in range(2)]
    time.sleep(0.2)  # both slots taken
    body = json.dumps({"customers": [SAMPLE_CUSTOMER] * 10_000}).encode()
    def send(_):
        try: r = httpx.post(url + "/predict/batch", content=body, headers=JSON, timeout=60)
        except httpx.TransportError as e: return repr(e)
        return r.status_code, len(r.json()["predictions"]) if r.status_code == 200 else r.text[:200]
    with ThreadPoolExecutor(3) as ex: answers = list(ex.map(send, range(3)))
    try: assert all(_closed_within(s, 5) is not None for s in stalled), "a stalled batch kept its slot past the deadline"
    finally:
        for s in stalled: s.close()
    assert answers == [(200, 10_000)] * 3, answers
    assert "Traceback" not in log.read_text()


def test_connection_cap_answers_503(guarded):
    url, _, _ = guarded
    port = port_of(url)
    held = [_held(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(6)]  # keep-alive: stay open
    try:
        time.sleep(0.3)
        over = raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert over.startswith(b"HTTP/1.1 503"), over[:80]
    finally:
        for s in held: s.close()
    time.sleep(0.3)
    assert httpx.get(url + "/health", timeout=30).status_code == 200


def test_sigterm_with_a_stalled_client_exits_within_the_grace_period(tmp_path):
    with running_server(tmp_path, CHURN_REQUEST_TIMEOUT="60", CHURN_GRACE_PERIOD="2") as (url, proc, log):
        s = _held(port_of(url), b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.3)
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - start
        s.close()
    assert code == 0 and took < 2 + 3, (code, took, log.read_text()[-2000:])


WORST = {  # the worst bodies that fit the default 8 MB limit
    "2.6M empty objects": b'{"customers": [' + b",".join([b"{}"] * 2_600_000) + b"]}",
    "one object, 700k keys": b'{"customers": [{' + b",".join(b'"k%d":1' % i for i in range(700_000)) + b"}]}",
    "10k customers, every field wrong": json.dumps({"customers": [{k: [] for k in SAMPLE_CUSTOMER}] * 10_000}).encode(),
    "10k customers, 40 unknown keys each": json.dumps({"customers": [{f"x{i}": 0 for i in range(38)}] * 10_000}).encode(),
}


def test_peak_memory_with_16_clients_sending_the_worst_bad_batches(tmp_path):
    with running_server(tmp_path) as (url, proc, log):
        for body in WORST.values(): assert len(body) <= 8 * 1024 * 1024, len(body)
        def send(body):
            with httpx.Client(timeout=120) as c: return c.post(url + "/predict/batch", content=body, headers=JSON)
        with ThreadPoolExecutor(16) as pool:
            for name, body in WORST.items():
                responses = list(pool.map(send, [body] * 16))
                for r in responses:
                    err = assert_error(r, 422)
                    assert len(r.content) < 64 * 1024
        peak = vm_hwm_mib(proc.pid)
    assert peak < 200, f"peak RSS {peak:.0f} MiB"
    print(f"peak RSS after 16 x {len(WORST)} worst bad batches: {peak:.0f} MiB")


# ---------------------------------------------------------------- graceful shutdown under load, 1 and 2 workers

def _read_response(s: socket.socket) -> tuple[int, bytes]:
    "Status and body of one HTTP/1.1 response with a Content-Length, read from `s`."
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk: raise ConnectionError(f"closed after {len(data)} bytes")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk: raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split()[1]), body


@pytest.mark.parametrize("workers", [1, 2])
def test_graceful_shutdown_under_load(tmp_path, workers):
    "SIGTERM while big batches are in flight: every request already sent gets its 200, new connections are refused, exit 0."
    body = json.dumps({"customers": [SAMPLE_CUSTOMER] * 10_000}).encode()
    request = b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with running_server(tmp_path, "--workers", str(workers), CHURN_GRACE_PERIOD="20", startup=60) as (url, proc, log):
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete") < workers and time.monotonic() < deadline: time.sleep(0.2)
        socks = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=60) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool: list(pool.map(lambda s: s.sendall(request), socks))  # all 8 requests sent whole
        os.killpg(proc.pid, signal.SIGTERM)
        with ThreadPoolExecutor(8) as pool: results = list(pool.map(_read_response, socks))
        for s in socks: s.close()
        code = proc.wait(timeout=30)
        refused = False
        try: httpx.get(url + "/health", timeout=2)
        except httpx.ConnectError: refused = True
    assert [(status, len(json.loads(b)["predictions"])) for status, b in results] == [(200, 10_000)] * 8
    assert code == 0 and refused, (code, refused)
    text = log.read_text()
    assert "SIGTERM: draining" in text and "Traceback" not in text, text[-3000:]


# ---------------------------------------------------------------- deploy files agree with the grace period

def test_platform_grace_periods_agree():
    "fly.toml's kill_timeout and the k8s terminationGracePeriodSeconds cover CHURN_GRACE_PERIOD plus the preStop pause."
    import tomllib, yaml
    from churn_deploy.config import Settings
    grace = Settings().grace_period
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert fly["kill_signal"] in ("SIGTERM", "SIGINT")
    fly_grace = float(fly.get("env", {}).get("CHURN_GRACE_PERIOD", grace))
    assert _seconds(fly["kill_timeout"]) > fly_grace, (fly["kill_timeout"], fly_grace)
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()))
    dep = next(d for d in docs if d and d.get("kind") == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "churn-serve"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    k8s_grace = float(env.get("CHURN_GRACE_PERIOD", grace))
    pause = int(re.search(r"sleep\D*(\d+)", json.dumps(c["lifecycle"]["preStop"])).group(1))
    assert spec["terminationGracePeriodSeconds"] >= pause + k8s_grace, (spec["terminationGracePeriodSeconds"], pause, k8s_grace)


def _seconds(v) -> float:
    if isinstance(v, (int, float)): return float(v)
    m = re.fullmatch(r"(\d+)(s|m)", v)
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)
