"""The real `churn_serve` process over HTTP: every endpoint, every error case, the API key and the size limits."""
import hashlib, json, math, os, re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, assert_error, metric_samples, running_server, sample_value
from churn_deploy.data import FEATURES, SAMPLE_CUSTOMER
from churn_deploy.refusals import bad_requests

MODEL_META = json.loads((ROOT / "model" / "model.json").read_text())
MODEL_JSON_SHA256 = hashlib.sha256((ROOT / "model" / "model.json").read_bytes()).hexdigest()
KEY = "test-key-0123456789abcdef"  # CHURN_API_KEY of the key server (16 characters at least)
POST_ROUTES = ("/predict", "/predict/batch", "/explain")
ROUTES = {"/predict", "/predict/batch", "/explain", "/whatif", "/health", "/ready", "/model", "/metrics"}
JSON = {"content-type": "application/json"}
SMALL_BODY, SMALL_BATCH = 4096, 5  # the limits of the `small_server`


def logit(p: float) -> float: return math.log(p / (1 - p))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The service with the default settings: (base URL, stderr log)."
    with running_server(tmp_path_factory.mktemp("server")) as (url, _, log): yield url, log


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c: yield c


@pytest.fixture(scope="module")
def key_server(tmp_path_factory):
    "The service with CHURN_API_KEY=KEY."
    with running_server(tmp_path_factory.mktemp("key_server"), CHURN_API_KEY=KEY) as (url, _, log): yield url


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    "The service with small limits: 4 KiB bodies, 5-customer batches."
    with running_server(tmp_path_factory.mktemp("small_server"), CHURN_MAX_BODY_BYTES=str(SMALL_BODY),
                        CHURN_MAX_BATCH=str(SMALL_BATCH)) as (url, _, log): yield url


@pytest.fixture(scope="module")
def pipeline(model_dir):
    "The saved scikit-learn Pipeline: the reference every served probability is checked against."
    from churn_deploy.predict import load_pipeline
    return load_pipeline(model_dir)


@pytest.fixture(scope="module")
def customers(data_csv):
    "307 real customers (every 23rd row), as the workshop's dicts."
    from churn_deploy.data import load_churn_data
    from churn_deploy.train import to_records
    return to_records(load_churn_data(data_csv))[::23]


def proba(pipeline, customers: list[dict]) -> list[float]:
    return [float(p) for p in pipeline.predict_proba(customers)[:, 1]]


# ---------------------------------------------------------------- predictions

def test_predict_workshop_sample(client, pipeline):
    r = client.post("/predict", json=SAMPLE_CUSTOMER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"churn_probability", "churn", "model_version"}
    p = proba(pipeline, [SAMPLE_CUSTOMER])[0]
    assert abs(body["churn_probability"] - p) <= 1e-9
    assert body["churn"] is (p >= 0.5) and body["churn"] is True  # the workshop's customer gets the offer
    assert body["model_version"] == MODEL_META["version"]


def test_predict_real_customers_one_by_one(client, pipeline, customers):
    few = customers[:25]
    for c, p in zip(few, proba(pipeline, few)):
        body = client.post("/predict", json=c).json()
        assert abs(body["churn_probability"] - p) <= 1e-9, (c, body, p)
        assert body["churn"] is (p >= 0.5)


def test_batch_real_customers_in_order(client, pipeline, customers):
    assert len(customers) > 300
    r = client.post("/predict/batch", json={"customers": customers})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    expected = proba(pipeline, customers)
    assert len(preds) == len(customers)
    assert {p > 0.5 for p in expected} == {True, False}  # both answers occur, so order matters
    for i, (got, p) in enumerate(zip(preds, expected)):
        assert set(got) == {"churn_probability", "churn", "model_version", "role"} and got["role"] == "champion"
        assert abs(got["churn_probability"] - p) <= 1e-9, (i, got, p)
        assert got["churn"] is (p >= 0.5) and got["model_version"] == MODEL_META["version"]


def test_batch_reversed_is_reversed(client, customers):
    "Order is the input's: reversing the request reverses the answer."
    few = customers[:40]
    fwd = [p["churn_probability"] for p in client.post("/predict/batch", json={"customers": few}).json()["predictions"]]
    bwd = [p["churn_probability"] for p in client.post("/predict/batch", json={"customers": few[::-1]}).json()["predictions"]]
    assert fwd == bwd[::-1] and fwd != bwd


def test_batch_of_one(client, pipeline):
    r = client.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER]})
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert abs(pred["churn_probability"] - proba(pipeline, [SAMPLE_CUSTOMER])[0]) <= 1e-9


def test_batch_at_the_default_maximum(client):
    r = client.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 10_000})
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["predictions"]) == 10_000


def test_batch_over_the_default_maximum(client):
    err = assert_error(client.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 10_001}), 422, "customers")
    assert "10000" in err["message"], err["message"]


def test_explain(client, pipeline, customers):
    dv, lr = pipeline[0], pipeline[-1]
    coef = dict(zip(dv.feature_names_, lr.coef_[0]))
    for c in [SAMPLE_CUSTOMER, *customers[:10]]:
        r = client.post("/explain", json=c)
        assert r.status_code == 200, r.text
        e = r.json()
        p = proba(pipeline, [c])[0]
        assert abs(e["churn_probability"] - p) <= 1e-9
        assert abs(e["intercept"] - lr.intercept_[0]) <= 1e-12
        assert abs(e["intercept"] + sum(x["contribution"] for x in e["contributions"]) - logit(p)) <= 1e-9
        assert abs(e["logit"] - logit(p)) <= 1e-9
        assert len(e["contributions"]) == 19 and sorted(x["feature"] for x in e["contributions"]) == sorted(FEATURES)
        sizes = [abs(x["contribution"]) for x in e["contributions"]]
        assert sizes == sorted(sizes, reverse=True)
        for x in e["contributions"]:  # coefficient × value, from the pickled Pipeline's own weights
            assert x["value"] == c[x["feature"]]
            k = x["feature"] if x["feature"] in coef else f"{x['feature']}={x['value']}"
            assert abs(x["contribution"] - coef[k] * (x["value"] if k == x["feature"] else 1)) <= 1e-12, x
        assert e["reasons"] and all(isinstance(s, str) and s for s in e["reasons"])
        assert e["reasons"][0].startswith(f"{e['contributions'][0]['feature']} = ")
        assert e["model_version"] == MODEL_META["version"]


# ---------------------------------------------------------------- health, model, metrics, docs

def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready(client):
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready", "model_version": MODEL_META["version"]}


def test_model_metadata(client):
    r = client.get("/model")
    assert r.status_code == 200
    meta = r.json()
    assert "weights" not in meta and "weights" not in json.dumps(meta).replace("weights_sha256", "")
    assert meta["metrics"]["test"]["auc"] >= 0.857
    served = meta.pop("served")
    assert meta == {**{k: v for k, v in MODEL_META.items() if k != "weights"}, "file_sha256": MODEL_JSON_SHA256}
    assert served["champion"]["version"] == MODEL_META["version"] and served["champion"]["sha256"] == MODEL_JSON_SHA256
    assert served["challenger"] is None and served["routing"] == {"mode": "off", "fraction": 0.0}


def test_metrics_exposition(client):
    assert client.post("/predict", json=SAMPLE_CUSTOMER).status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert re.search(r'^churn_http_requests_total\{[^}]*route="/predict"[^}]*status="200"[^}]*\} [1-9]', text, re.M), text
    for name in ("churn_http_request_duration_seconds_bucket", "churn_predicted_probability_bucket", "churn_model_info"):
        assert re.search(rf"^{name}\{{", text, re.M), f"{name} missing"
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["churn_http_requests"].type == "counter"
    assert fams["churn_http_request_duration_seconds"].type == "histogram"
    assert fams["churn_predicted_probability"].type == "histogram"
    (info,) = fams["churn_model_info"].samples
    assert info.labels["version"] == MODEL_META["version"] and info.value == 1.0
    assert any(s.labels.get("route") == "/predict" for s in fams["churn_http_request_duration_seconds"].samples)


def test_metrics_count_requests_and_probabilities(client):
    before = metric_samples(client, "churn_http_requests")
    probs = metric_samples(client, "churn_predicted_probability")
    client.post("/predict", json=SAMPLE_CUSTOMER)  # p = 0.645
    client.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 3})
    client.post("/predict", content=b"{", headers=JSON)
    after = metric_samples(client, "churn_http_requests")
    probs2 = metric_samples(client, "churn_predicted_probability")
    total = "churn_http_requests_total"
    for route, status, n in (("/predict", "200", 1), ("/predict/batch", "200", 1), ("/predict", "400", 1)):
        got = sample_value(after, total, method="POST", route=route, status=status) - \
              sample_value(before, total, method="POST", route=route, status=status)
        assert got == n, (route, status, got)
    count = "churn_predicted_probability_count"
    assert sample_value(probs2, count) - sample_value(probs, count) == 4
    bucket = "churn_predicted_probability_bucket"
    assert sample_value(probs2, bucket, le="0.6") == sample_value(probs, bucket, le="0.6")
    assert sample_value(probs2, bucket, le="0.7") - sample_value(probs, bucket, le="0.7") == 4


def test_metrics_do_not_label_unknown_paths(client):
    "An unknown path is counted as <unmatched>, so scanners cannot blow up the label set."
    assert client.get("/no-such-page-7f3a").status_code == 404
    samples = metric_samples(client, "churn_http_requests")
    assert not any("7f3a" in s.labels.get("route", "") for s in samples)
    assert sample_value(samples, "churn_http_requests_total", method="GET", route="<unmatched>", status="404") >= 1


@pytest.mark.parametrize("page, bundle", [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")])
def test_docs_render_offline(client, page, bundle):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert any(a.endswith(".js") for a in assets), assets
    if page == "/docs": assert any(a.endswith(".css") for a in assets), assets
    assert "openapi.json" in r.text
    for a in assets:
        assert a.startswith("/") and not a.startswith("//"), f"{page} loads {a} from elsewhere"
        got = client.get(a)
        assert got.status_code == 200 and len(got.content) > 100, (a, got.status_code)
    js = [a for a in assets if a.endswith(".js")][0]
    assert bundle in client.get(js).text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_have_a_content_policy_and_frame_protection(client, page):
    "As the desk's page: no framing, scripts only from the service or the page's own inline start-up script (by hash)."
    r = client.get(page)
    csp = r.headers.get("content-security-policy", "")
    assert r.status_code == 200 and r.headers.get("x-frame-options") == "DENY", r.headers
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-eval" not in csp, csp
    scripts = re.findall(r"script-src ([^;]*)", csp)[0].split()
    assert scripts[0] == "'self'" and all(s.startswith("'sha256-") for s in scripts[1:]), csp
    inline = re.findall(r"<script>(.*?)</script>", r.text, re.S)
    assert len(scripts) - 1 == len(inline), (csp, len(inline))
    import base64
    for body in inline: assert f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'" in scripts


def test_docs_render_under_their_policy_in_a_browser(server):
    "Swagger UI and ReDoc, in Debian's chromium, draw the operations under the policy; nothing but a remote logo is blocked."
    import shutil
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium): pytest.fail(f"this test needs Debian's chromium at {chromium}: apt-get install chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            for path, drawn in [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id^='tag/predict']")]:
                page, problems = browser.new_page(), []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "cdn.redoc.ly" not in m.text else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(server[0] + path)
                page.wait_for_selector(drawn, timeout=20_000)
                assert page.locator(drawn).count() >= 1 and problems == [], (path, problems)
        finally: browser.close()


def test_batch_customer_ids_reach_the_prediction_log_hashed(tmp_path, customers):
    "A batch's customer_ids: one record per customer, each with its own id hashed like X-Customer-Id, in order; bad ids are 422."
    import hmac
    secret, logfile = "batch-ids-secret-0123456789", tmp_path / "predictions.jsonl"
    batch, ids = customers[:5], [f"{i:04d}-CUST{i}" for i in range(5)]
    with running_server(tmp_path / "server", CHURN_PREDICTION_LOG_SAMPLE="1", CHURN_PREDICTION_LOG_FILE=str(logfile),
                        CHURN_PREDICTION_LOG_KEY=secret) as (url, proc, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/predict/batch", json={"customers": batch, "customer_ids": ids})
            assert r.status_code == 200, r.text
            assert_error(c.post("/predict/batch", json={"customers": batch, "customer_ids": ids[:4]}), 422, "customer_ids",
                         in_message="4 ids for 5 customers")
            assert_error(c.post("/predict/batch", json={"customers": batch, "customer_ids": [*ids[:3], "", "x"]}), 422, "customer_ids[3]")
            assert_error(c.post("/predict/batch", json={"customers": batch, "customer_ids": [*ids[:3], "x" * 129, "x"]}), 422, "customer_ids[3]")
            no_ids = c.post("/predict/batch", json={"customers": batch[:1]})
            assert no_ids.status_code == 200, no_ids.text
    records = [json.loads(l) for l in logfile.read_text().splitlines()]
    hashed = [hmac.new(secret.encode(), i.encode(), hashlib.sha256).hexdigest() for i in ids]
    assert [x["customer"] for x in records] == hashed + [None], [x["customer"] for x in records]
    assert [x["probability"] for x in records[:5]] == [p["churn_probability"] for p in r.json()["predictions"]]
    assert len({x["request_id"] for x in records[:5]}) == 1


def test_openapi_documents_every_route_and_error(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert set(doc["paths"]) == ROUTES
    schemas = doc["components"]["schemas"]
    assert {"Customer", "ErrorResponse"} <= set(schemas)
    for path in POST_ROUTES:
        op = doc["paths"][path]["post"]
        assert {"200", "400", "413", "415", "422", "503"} <= set(op["responses"]), (path, sorted(op["responses"]))
        for code in ("400", "413", "415", "422", "503"):
            ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorResponse", (path, code, ref)
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
    customer = schemas["Customer"]
    assert sorted(customer["properties"]) == sorted(FEATURES) and sorted(customer["required"]) == sorted(FEATURES)
    assert customer.get("additionalProperties") is False
    assert customer["properties"]["streamingtv"]["enum"] == ["no", "no_internet_service", "yes"]


# ---------------------------------------------------------------- bad input: one error shape, never a 5xx

# The catalogue of refusals (churn_deploy.refusals, 15_refusals) is the one table of bad requests: its customer and
# body rows run here; its hostile, route-specific rows in test_fuzz; all of it in-process in the serve notebook.
REFUSALS = [r for r in bad_requests() if r.group in ("customer", "body")]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: f"{r.route} {r.name}")
def test_bad_request_is_refused_naming_the_field(client, refusal):
    "A customer's bad field (alone, and as a batch's fourth customer) and a body that is not JSON, on every route it fits."
    r = client.post(refusal.route, content=refusal.body, headers=refusal.request_headers())
    refusal.check(r.status_code, assert_error(r, refusal.status))


def test_json_content_type_with_charset_is_fine(client):
    r = client.post("/predict", content=json.dumps(SAMPLE_CUSTOMER).encode(),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_unknown_route_is_404(client):
    err = assert_error(client.get("/predictions"), 404)
    assert "/predictions" in err["message"]
    assert_error(client.post("/predictions", json=SAMPLE_CUSTOMER), 404)


@pytest.mark.parametrize("method, path", [("GET", "/predict"), ("PUT", "/predict/batch"), ("DELETE", "/explain"),
                                          ("POST", "/health"), ("POST", "/ready"), ("POST", "/metrics")])
def test_wrong_method_is_405(client, method, path):
    r = client.request(method, path, json=SAMPLE_CUSTOMER if method != "GET" else None)
    err = assert_error(r, 405)
    assert method in err["message"] and path in err["message"]
    assert "allow" in r.headers


# ---------------------------------------------------------------- size limits (a server with small ones)

def _padded(size: int) -> bytes:
    "A valid customer JSON body of exactly `size` bytes (padded with spaces, which JSON ignores)."
    body = json.dumps(SAMPLE_CUSTOMER).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


def _chunks(body: bytes, n: int = 1000):
    "A generator, so httpx sends the body chunked, with no Content-Length."
    for i in range(0, len(body), n): yield body[i:i + n]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_at_the_limit_is_accepted(small_server, chunked):
    body = _padded(SMALL_BODY)
    r = httpx.post(small_server + "/predict", content=_chunks(body) if chunked else body, headers=JSON, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(small_server, route, chunked):
    body = _padded(SMALL_BODY + 1)
    r = httpx.post(small_server + route, content=_chunks(body) if chunked else body, headers=JSON, timeout=30)
    err = assert_error(r, 413)
    assert err["message"].startswith("body: ") and str(SMALL_BODY) in err["message"], err


def test_much_larger_chunked_body_is_413(small_server):
    body = _padded(60_000)
    r = httpx.post(small_server + "/predict/batch", content=_chunks(body, 4096), headers=JSON, timeout=30)
    assert_error(r, 413)


def test_server_still_serves_after_413(small_server):
    with httpx.Client(base_url=small_server, timeout=30) as c:
        assert_error(c.post("/predict", content=_chunks(_padded(SMALL_BODY * 2)), headers=JSON), 413)
        assert c.post("/predict", json=SAMPLE_CUSTOMER).status_code == 200


def test_configured_max_batch(small_server):
    ok = httpx.post(small_server + "/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * SMALL_BATCH}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == SMALL_BATCH
    over = httpx.post(small_server + "/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * (SMALL_BATCH + 1)}, timeout=30)
    err = assert_error(over, 422, "customers")
    assert str(SMALL_BATCH) in err["message"]


# ---------------------------------------------------------------- the API key

@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}, {"x-api-key": KEY.upper()}, {"x-api-key": KEY + "2"},
                                     {"x-api-key": KEY[:-1]}, {"authorization": f"Bearer {KEY}"}],
                         ids=["no header", "wrong", "empty", "other case", "key as prefix", "key shortened", "bearer instead"])
def test_api_key_refused(key_server, headers):
    r = httpx.post(key_server + "/predict", json=SAMPLE_CUSTOMER, headers=headers, timeout=30)
    err = assert_error(r, 401)
    assert "x-api-key" in err["message"].lower()
    assert "www-authenticate" in r.headers


def test_api_key_accepted(key_server, pipeline):
    r = httpx.post(key_server + "/predict", json=SAMPLE_CUSTOMER, headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 200, r.text
    assert abs(r.json()["churn_probability"] - proba(pipeline, [SAMPLE_CUSTOMER])[0]) <= 1e-9


@pytest.mark.parametrize("method, path", [("POST", "/predict/batch"), ("POST", "/explain"), ("GET", "/metrics"), ("GET", "/model")])
def test_api_key_guards_every_other_route(key_server, method, path):
    body = {"customers": [SAMPLE_CUSTOMER]} if path == "/predict/batch" else SAMPLE_CUSTOMER
    kw = {"json": body} if method == "POST" else {}
    assert_error(httpx.request(method, key_server + path, timeout=30, **kw), 401)
    ok = httpx.request(method, key_server + path, headers={"X-API-Key": KEY}, timeout=30, **kw)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_need_no_api_key(key_server, path):
    assert httpx.get(key_server + path, timeout=30).status_code == 200


def test_api_key_checked_before_the_body(key_server):
    "A caller without the key learns nothing about the schema."
    assert_error(httpx.post(key_server + "/predict", content=b"{", headers=JSON, timeout=30), 401)
    assert_error(httpx.post(key_server + "/predict", content=b"{", headers={**JSON, "X-API-Key": KEY}, timeout=30), 400)


def test_openapi_documents_the_api_key(key_server):
    doc = httpx.get(key_server + "/openapi.json", timeout=30).json()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path in POST_ROUTES:
        assert "401" in doc["paths"][path]["post"]["responses"] and doc["paths"][path]["post"]["security"]
    assert "security" not in doc["paths"]["/health"]["get"] and "security" not in doc["paths"]["/ready"]["get"]


# ---------------------------------------------------------------- last: nothing above made the server fail

def test_no_5xx_and_no_traceback_in_the_server(client, server):
    samples = metric_samples(client, "churn_http_requests")
    statuses = {s.labels["status"] for s in samples if s.name == "churn_http_requests_total"}
    assert statuses and not any(s.startswith("5") for s in statuses), statuses
    log = server[1].read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
