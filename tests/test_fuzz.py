"""Hostile input against the real server: schemathesis over every phase with every check, the numeric bounds through every
POST route, the hostile rows of the catalogue of refusals (repeated keys, escapes, huge numbers, envelopes, sizes) and
malformed HTTP framing."""
import os, re, subprocess, sys
from pathlib import Path

import httpx
import pytest

from churn_deploy.data import NUMERIC_RANGES, SAMPLE_CUSTOMER
from churn_deploy.refusals import bad_requests
from conftest import assert_error, metric_samples, raw, running_server

pytestmark = pytest.mark.long_unit  # minutes of a worker: handed out first (conftest.py)

BIN = Path(sys.executable).parent
KEY = "fuzz-key-0123456789abcdef"
# Examples per operation and phase. The default run generates over 2,000 cases in all (the closing note has the count);
# CHURN_FUZZ_EXAMPLES=2000 is the long run.
EXAMPLES = int(os.environ.get("CHURN_FUZZ_EXAMPLES", "200"))
POST_ROUTES = ("/predict", "/predict/batch", "/explain")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("fuzz")) as (url, proc, log): yield url, log


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    "Every edge feature on: a key, JSON logs, a generous rate limit, CORS."
    with running_server(tmp_path_factory.mktemp("fuzz-keyed"), CHURN_API_KEY=KEY, CHURN_LOG_FORMAT="json", CHURN_ACCESS_LOG="true",
                        CHURN_RATE_LIMIT="1000000/minute", CHURN_CORS_ORIGINS="https://desk.example.com") as (url, proc, log):
        yield url, log


def schemathesis(url: str, *extra: str) -> tuple[int, str]:
    # Every check but positive_data_acceptance: a batch's optional customer_ids must hold one id per customer, which
    # JSON Schema cannot say, so schema-valid bodies with another count are rightly refused (422 naming customer_ids;
    # tests/test_server.py checks that and the accepted case).
    r = subprocess.run([str(BIN / "schemathesis"), "run", f"{url}/openapi.json", "--checks", "all",
                        "--exclude-checks", "positive_data_acceptance",
                        "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(EXAMPLES), "--seed", "20261127",
                        "--no-color", *extra], capture_output=True, text=True, timeout=1800)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("which", ["default", "every feature on"])
def test_schemathesis_finds_nothing(request, which):
    url, log = request.getfixturevalue("server" if which == "default" else "keyed")
    extra = ("--header", f"X-API-Key: {KEY}") if which != "default" else ()
    code, out = schemathesis(url, *extra)
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    assert code == 0 and m, out[-4000:]
    generated, passed = map(int, m.groups())
    assert generated == passed and generated >= 1000, out[-2000:]
    print(f"schemathesis ({which}): {generated} cases, {passed} passed")
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as c:
        statuses = {s.labels["status"] for s in metric_samples(c, "churn_http_requests") if s.name == "churn_http_requests_total"}
    assert not any(s.startswith("5") for s in statuses), statuses
    assert "Traceback" not in log.read_text()


# ---------------------------------------------------------------- every numeric bound through every POST route

def _post(client: httpx.Client, route: str, customer: dict) -> httpx.Response:
    body = {"customers": [customer]} if route == "/predict/batch" else customer
    return client.post(route, json=body)


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("field", list(NUMERIC_RANGES))
def test_numeric_bounds(server, route, field):
    lo, hi = NUMERIC_RANGES[field]
    with httpx.Client(base_url=server[0], timeout=30) as c:
        for v in (lo, hi, float(lo), float(hi)):  # 12.0 is a JSON Schema integer too
            r = _post(c, route, {**SAMPLE_CUSTOMER, field: v})
            assert r.status_code == 200, (field, v, r.text)
        for v in (lo - 1, hi + 1):
            where = f"customers[0].{field}" if route == "/predict/batch" else field
            assert_error(_post(c, route, {**SAMPLE_CUSTOMER, field: v}), 422, where)


# ---------------------------------------------------------------- the bad-input catalogue

# The catalogue of refusals (churn_deploy.refusals, 15_refusals) is the one table of bad requests: its hostile,
# route-specific rows run here (repeated keys, escapes, huge numbers, envelopes, the limits of a default server);
# its customer and body rows in test_server; all of it in-process in the serve notebook.
HOSTILE = [r for r in bad_requests() if r.group == "route"]


@pytest.mark.parametrize("refusal", HOSTILE, ids=lambda r: r.name)
def test_bad_input_catalogue(server, refusal):
    r = httpx.post(server[0] + refusal.route, content=refusal.body, headers=refusal.request_headers(), timeout=60)
    refusal.check(r.status_code, assert_error(r, refusal.status))


@pytest.mark.parametrize("framing", [
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
], ids=["two content lengths", "bad chunk size", "not HTTP", "unknown version"])
def test_malformed_framing_gets_uvicorns_plain_400(server, framing):
    "Framing errors are refused by uvicorn before the app, with a plain-text 400 (documented in the README), never a 5xx."
    reply = raw(int(server[0].rsplit(":", 1)[1]), framing)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert httpx.get(server[0] + "/health", timeout=30).status_code == 200
