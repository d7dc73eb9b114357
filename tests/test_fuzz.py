"""Hostile input against the real server: schemathesis over every phase with every check, the numeric bounds through every
POST route, and a table of bad requests (framing, encodings, sizes, types, NaN, unknown categories, repeated keys)."""
import json, os, re, socket, subprocess, sys
from pathlib import Path

import httpx
import pytest

from churn_deploy.data import NUMERIC_RANGES, SAMPLE_CUSTOMER
from test_edge import raw
from test_server import assert_error, metric_samples, running_server

BIN = Path(sys.executable).parent
KEY = "fuzz-key-0123456789abcdef"
# Examples per operation and phase. The default run generates over 2,000 cases in all (the closing note has the count);
# CHURN_FUZZ_EXAMPLES=2000 is the long run.
EXAMPLES = int(os.environ.get("CHURN_FUZZ_EXAMPLES", "200"))
JSON = {"content-type": "application/json"}
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

def _customer_json(**raw: str) -> bytes:
    "The sample customer as JSON, with fields replaced by raw JSON text."
    text = json.dumps({**SAMPLE_CUSTOMER, **{k: f"@@{k}@@" for k in raw}})
    for k, v in raw.items(): text = text.replace(f'"@@{k}@@"', v)
    return text.encode()


GOOD = json.dumps(SAMPLE_CUSTOMER).encode()
CATALOGUE = {  # name: (route, body, extra headers, status, the message starts with)
    "repeated key, last wins elsewhere": ("/predict", GOOD[:-1] + b', "tenure": 70}', {}, 422, "tenure: duplicate key"),
    "repeated key in a batch row": ("/predict/batch", b'{"customers": [' + GOOD[:-1] + b', "contract": "two_year"}]}', {}, 422,
                                    "contract: duplicate key"),
    "repeated envelope key": ("/predict/batch", b'{"customers": [' + GOOD + b'], "customers": [' + GOOD + b']}', {}, 422,
                              "customers: duplicate key"),
    "gzip body": ("/predict", GOOD, {"content-encoding": "gzip"}, 415, "content-encoding: gzip is not supported"),
    "br body": ("/predict/batch", GOOD, {"content-encoding": "br"}, 415, "content-encoding: br is not supported"),
    "latin-1 charset": ("/predict", GOOD, {"content-type": "application/json; charset=latin-1"}, 415, "content-type: charset latin-1"),
    "utf-16 body": ("/predict", GOOD.decode().encode("utf-16"), {}, 400, "body is not valid JSON"),
    "byte order mark": ("/predict", b"\xef\xbb\xbf" + GOOD, {}, 400, "body is not valid JSON"),
    "trailing garbage": ("/predict", GOOD + b"x", {}, 400, "body is not valid JSON"),
    "two documents": ("/predict", GOOD + GOOD, {}, 400, "body is not valid JSON"),
    "single quotes": ("/predict", GOOD.replace(b'"', b"'"), {}, 400, "body is not valid JSON"),
    "NaN": ("/predict", _customer_json(monthlycharges="NaN"), {}, 422, "monthlycharges: "),
    "-Infinity in a batch": ("/predict/batch", b'{"customers": [' + _customer_json(totalcharges="-Infinity") + b"]}", {}, 422,
                             "customers[0].totalcharges: "),
    "number with 5000 digits": ("/explain", _customer_json(tenure="9" * 5000), {}, 400, "body is not valid JSON: Invalid JSON: number out of range"),
    "exponent overflow": ("/predict", _customer_json(monthlycharges="1e999999"), {}, 422, "monthlycharges: "),
    "fractional tenure": ("/predict", _customer_json(tenure="12.5"), {}, 422, "tenure: "),
    "boolean seniorcitizen": ("/predict", _customer_json(seniorcitizen="false"), {}, 422, "seniorcitizen: "),
    "unknown category": ("/predict", _customer_json(paymentmethod='"bitcoin"'), {}, 422, "paymentmethod: "),
    "category in raw CSV spelling": ("/explain", _customer_json(internetservice='"Fiber optic"'), {}, 422, "internetservice: "),
    "category with a null byte": ("/predict", _customer_json(gender='"female\\u0000"'), {}, 422, "gender: "),
    "object as a value": ("/predict", _customer_json(contract='{"a": 1}'), {}, 422, "contract: "),
    "array as a value": ("/predict", _customer_json(tenure="[1]"), {}, 422, "tenure: "),
    "unknown key with escapes": ("/predict", GOOD[:-1] + b', "\\u0063olour": 1}', {}, 422, "colour: Extra inputs"),
    "very long unknown key": ("/predict", GOOD[:-1] + b', "' + b"k" * 50_000 + b'": 1}', {}, 422, "kkkk"),
    "deep nesting": ("/predict", b"[" * 10_000 + b"]" * 10_000, {}, 400, "body is not valid JSON"),
    "empty body": ("/predict/batch", b"", {}, 400, "body is not valid JSON"),
    "batch of strings": ("/predict/batch", b'{"customers": ["a", "b"]}', {}, 422, "customers[0]: "),
    "batch of 10001 empty objects": ("/predict/batch", b'{"customers": [' + b",".join([b"{}"] * 10_001) + b"]}", {}, 422,
                                     "customers: 10001 objects where at most 10000"),
    "one object with 1000 keys": ("/predict/batch", b'{"customers": [{' + b",".join(b'"k%d": 1' % i for i in range(1000)) + b"}]}",
                                  {}, 422, "customers: an object with 1000 keys"),
    "one customer over 64 KB": ("/predict", GOOD[:-1] + b" " * 70_000 + b"}", {}, 413, "body: over the limit of 65536 bytes"),
    "batch over 8 MB": ("/predict/batch", b"[" + b" " * (8 * 1024 * 1024) + b"]", {}, 413, "body: "),
    "no content type": ("/explain", GOOD, {"content-type": ""}, 415, "content-type: expected application/json"),
    "form encoded": ("/predict", b"gender=female", {"content-type": "application/x-www-form-urlencoded"}, 415, "content-type: "),
}


@pytest.mark.parametrize("case", CATALOGUE)
def test_bad_input_catalogue(server, case):
    route, body, headers, status, start = CATALOGUE[case]
    r = httpx.post(server[0] + route, content=body, headers={**JSON, **headers}, timeout=60)
    err = assert_error(r, status)
    assert err["message"].startswith(start) or start in err["message"], err["message"][:300]


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
