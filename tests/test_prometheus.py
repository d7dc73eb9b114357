"""Monitoring with real components: promtool checks and unit-tests the shipped rules; the Grafana dashboard's queries are
valid PromQL; three service processes scraped by a real Prometheus give, in PromQL, the PSI the offline function gives
for the same rows; the prediction log keeps no raw customer id and survives a failing sink."""
import json, os, random, shutil, socket, subprocess, tempfile, time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, metric_samples, running_server, sample_value
from churn_deploy.data import FEATURES, SAMPLE_CUSTOMER

RULES, RULES_TEST = ROOT / "deploy" / "prometheus" / "rules.yml", ROOT / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "churn-deploy.json"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                      reason="Debian's prometheus package is not installed (apt-get install prometheus; .ci/run does)")


@needs_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_rules_use_the_offline_psi_formula():
    "The PromQL PSI clamps both shares at monitor.PSI_EPS, the constant of the offline function."
    from churn_deploy.drift import PSI_EPS
    import re
    clamps = re.findall(r"clamp_min\(churn:(feature_share:1h|reference_share), ([0-9.e+-]+)\)", RULES.read_text())
    assert sorted(k for k, _ in clamps) == ["feature_share:1h"] * 2 + ["reference_share"] * 2, clamps
    assert all(float(v) == PSI_EPS for _, v in clamps), (clamps, PSI_EPS)


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


@needs_prometheus
def test_dashboard_queries_are_valid_promql(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("traffic", "error", "latency", "score distribution", "psi", "model versions"):
        assert topic in titles, f"no panel on {topic}"
    # promtool validates PromQL: each query becomes a recording rule ($__rate_interval is Grafana's; 1m stands in for it)
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "1m")}
                                                         for i, e in enumerate(_dashboard_exprs())]}]}
    (tmp_path / "dash.yml").write_text(json.dumps(rules))
    r = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "dash.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- three replicas, one Prometheus, the same PSI offline

def _drifted_rows(data_csv, n: int, seed: int = 3) -> list[dict]:
    "Real customers resampled towards fiber-optic, month-to-month and higher charges: a drifted month."
    from churn_deploy.data import load_churn_data
    from churn_deploy.train import to_records
    rows = to_records(load_churn_data(data_csv))
    rnd = random.Random(seed)
    weights = [(3 if r["internetservice"] == "fiber_optic" else 1) * (2 if r["contract"] == "month-to-month" else 1) for r in rows]
    out = []
    for r in rnd.choices(rows, weights, k=n):
        r = dict(r)
        r["monthlycharges"] = round(min(r["monthlycharges"] * 1.15, 10_000), 2)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def prometheus_and_replicas(tmp_path_factory):
    if PROMETHEUS is None: pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus; .ci/run does)")
    tmp = tmp_path_factory.mktemp("prometheus")
    from contextlib import ExitStack
    with ExitStack() as stack:
        urls = [stack.enter_context(running_server(tmp / f"replica{i}"))[0] for i in range(3)]
        port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": "churn", "static_configs": [{"targets": [u.split("//")[1] for u in urls]}]}]}
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        log = open(tmp / "prometheus.log", "wb")
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        prom = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(prom + "/-/ready", timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            time.sleep(0.2)
        else: pytest.fail("prometheus did not get ready:\n" + (tmp / "prometheus.log").read_text()[-2000:])
        try: yield prom, urls
        finally:
            proc.terminate(); proc.wait(timeout=20); log.close()


def query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


@needs_prometheus
def test_promql_psi_equals_the_offline_psi_across_three_replicas(prometheus_and_replicas, data_csv):
    from churn_deploy.drift import bucket_of, psi
    from churn_deploy.predict import load_model
    prom, urls = prometheus_and_replicas
    model = load_model(ROOT / "model")
    ref = model.meta["reference"]
    rows = _drifted_rows(data_csv, 3000)
    # wait until every replica is scraped and its series (all at zero) are in
    deadline = time.monotonic() + 20
    while len(query(prom, 'count by (instance) (churn_feature_rows_total)')) < 3 and time.monotonic() < deadline: time.sleep(0.5)
    time.sleep(2)
    with httpx.Client(timeout=60) as c:  # the stream split across the replicas, as a load balancer would
        for i in range(0, len(rows), 100):
            r = c.post(urls[(i // 100) % 3] + "/predict/batch", json={"customers": rows[i:i + 100]})
            assert r.status_code == 200, r.text
    probs = [model.predict_proba(r) for r in rows]
    time.sleep(4)  # scraped, and the rules evaluated
    got = {s["metric"]["feature"]: float(s["value"][1]) for s in query(prom, f'churn:feature_psi:1h{{version="{model.version}"}}')}
    assert set(got) == {*FEATURES, "score"}, sorted(got)
    worst = 0.0
    for f in [*FEATURES, "score"]:
        spec = ref["score"] if f == "score" else ref["numeric"].get(f) or ref["categorical"][f]
        labels = [str(v) for v in spec.get("values") or range(len(spec["proportions"]))]
        values = probs if f == "score" else [r[f] for r in rows]
        counts = {b: 0 for b in labels}
        for v in values: counts[str(bucket_of(f, v, ref))] += 1
        offline = psi(spec["proportions"], [counts[b] / len(values) for b in labels])
        worst = max(worst, abs(offline - got[f]))
        assert abs(offline - got[f]) <= 0.005, (f, offline, got[f])
    assert max(got.values()) > 0.1, got  # the stream really drifted, so the comparison means something
    print(f"PromQL vs offline PSI over 3 replicas, {len(rows)} rows: max |diff| {worst:.2g}; "
          f"largest PSI {max(got, key=got.get)} {max(got.values()):.3f}")
    # and every dashboard query runs against the real thing
    for e in _dashboard_exprs(): query(prom, e.replace("$__rate_interval", "1m"))


# ---------------------------------------------------------------- the prediction log

RAW_ID = "cust-raw-4f2b9d"  # must never appear in a log: the conftest scan looks for it too


def test_prediction_log_records_hmac_and_survives_a_failing_sink(tmp_path):
    from churn_deploy.drift import customer_hash
    secret = "hmac-secret-for-the-tests-0123"
    logfile = tmp_path / "predictions.jsonl"
    with running_server(tmp_path / "a", CHURN_PREDICTION_LOG_SAMPLE="1", CHURN_PREDICTION_LOG_FILE=str(logfile),
                        CHURN_PREDICTION_LOG_KEY=secret) as (url, proc, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": RAW_ID, "X-Request-ID": "plog-1"})
            assert r.status_code == 200
            assert c.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 3}).status_code == 200
    records = [json.loads(l) for l in logfile.read_text().splitlines()]
    assert len(records) == 4
    first = next(x for x in records if x["request_id"] == "plog-1")
    assert first["customer"] == customer_hash(RAW_ID, secret) and first["features"] == SAMPLE_CUSTOMER
    assert abs(first["probability"] - r.json()["churn_probability"]) < 1e-15 and first["model_version"] == r.json()["model_version"]
    stdout = (tmp_path / "a" / "stdout.log").read_text()
    assert sum('"logger":"churn.predictions"' in l for l in stdout.splitlines()) == 4
    for text in (logfile.read_text(), stdout, log.read_text()): assert RAW_ID not in text and secret not in text
    # A full disk: predictions are still answered, the failures are counted, nothing is printed.
    with running_server(tmp_path / "b", CHURN_PREDICTION_LOG_SAMPLE="1", CHURN_PREDICTION_LOG_FILE="/dev/full") as (url, proc, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            assert all(c.post("/predict", json=SAMPLE_CUSTOMER).status_code == 200 for _ in range(20))
            time.sleep(0.5)
            lost = metric_samples(c, "churn_prediction_log_lost")
            assert sample_value(lost, "churn_prediction_log_lost", reason="sink_error") >= 1, lost
    text = log.read_text()
    assert "Traceback" not in text and sum("prediction records are being lost" in l for l in text.splitlines()) == 1, text[-2000:]


def test_prediction_log_sampling_keeps_the_same_customers(tmp_path):
    logfile = tmp_path / "p.jsonl"
    with running_server(tmp_path / "s", CHURN_PREDICTION_LOG_SAMPLE="0.3", CHURN_PREDICTION_LOG_FILE=str(logfile),
                        CHURN_PREDICTION_LOG_KEY="another-secret-0123456789") as (url, _, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(2):
                for i in range(200): c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": f"c{i}"})
    customers = [json.loads(l)["customer"] for l in logfile.read_text().splitlines()]
    kept = set(customers)
    assert 0.2 < len(kept) / 200 < 0.4, len(kept)
    assert all(customers.count(c) == 2 for c in kept)  # a kept customer is kept every time
