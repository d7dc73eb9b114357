"""The benchmark of issue 5 in its smoke mode: every stage runs, tiny, and every figure is printed. No timing assertions.

Also: the baseline is the workshop's code, independent of the project, so the benchmark's agreement check is a cross-check.
"""
import json, os, shutil, subprocess, sys

import pytest

from churn_deploy.data import SAMPLE_CUSTOMER as SAMPLE
from conftest import ROOT

pytestmark = pytest.mark.long_unit  # minutes of a worker: handed out first (conftest.py)

FIGURES = ["production: HTTP /predict throughput", "production: HTTP /predict p99", "production: worker RSS",
           "in-process single prediction", "HTTP /predict throughput, 1 worker", "HTTP /predict p99 latency",
           "cold start, spawn → first 200", "worker RSS after", "batch scoring"]

BASELINE_PROBE = """
import json, sys
sys.modules["churn_deploy"] = None  # any import of the project, direct or indirect, raises ImportError
sys.path.insert(0, "bench")
import baseline_app, baseline_score
r = baseline_app.app.test_client().post("/predict", json=json.loads(sys.argv[1]))
rows = baseline_score.to_dicts(baseline_score.read_customers(sys.argv[2]))
print(json.dumps({"status": r.status_code, "answer": r.get_json(), "first": rows[0], "n": len(rows)}))
"""


def test_baseline_runs_without_the_project(data_csv, model_dir):
    "The baseline app and cleaning work with churn_deploy blocked, and agree with the project's sample and model."
    r = subprocess.run([sys.executable, "-c", BASELINE_PROBE, json.dumps(SAMPLE), str(data_csv)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["status"] == 200 and set(out["answer"]) == {"churn_probability", "churn"}, out
    from churn_deploy.predict import load_model
    p = load_model(model_dir).predict_proba(SAMPLE)
    assert abs(out["answer"]["churn_probability"] - p) <= 1e-12 and out["answer"]["churn"] is (p >= 0.5), (out, p)
    assert out["first"] == SAMPLE, "the CSV's first row is the workshop's customer, cleaned the same way by both"
    with open(data_csv) as f: rows = sum(1 for line in f if line.strip()) - 1
    assert out["n"] == rows, (out["n"], rows)


@pytest.mark.skipif(shutil.which("wrk") is None and not os.environ.get("GITHUB_ACTIONS"),
                    reason="wrk, the benchmark's load generator, is not installed (apt-get install wrk)")
def test_bench_smoke(tmp_path, data_csv):
    assert shutil.which("wrk"), "the CI workflow installs wrk, so the benchmark must run there"
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--data", str(data_csv), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    log = r.stdout[-6000:] + r.stderr[-4000:]
    assert r.returncode == 0, log
    table = r.stdout.split("== results ==", 1)[1]
    for label in FIGURES:
        row = next((l for l in table.splitlines() if l.startswith(f"| {label}")), None)
        assert row and "n/a" not in row, f"{label!r} missing from the table:\n{table}"
    assert "2 workers vs 1" in table and "errors under load" in table, table
    res = json.loads(out.read_text())
    for label, f in res["figures"].items():
        assert f["baseline"] > 0 and f["project"] > 0, (label, f)
    assert res["total_errors"] == 0 and all(v == 0 for v in res["errors"].values()), res["errors"]
    assert set(res["errors"]) == {"baseline", "project", "project_2w", "project production", "project all-on", "project shadow",
                                  "project drift-off", "project log-1.0"}, res["errors"]
    # The production row comes first, and its prediction log holds one record per answered prediction in each sink (issue 18).
    rows = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| figure")]
    assert rows[0].startswith("| production: HTTP /predict throughput"), rows[:2]
    prod = res["production"]
    assert prod["log_complete"] and prod["answered"] == prod["log_file_records"] == prod["log_stdout_records"] > 0, prod
    for row in ("production vs the bare service", "production: prediction log records", "cold start against the floor"):
        assert row in table, f"{row!r} missing from the table"
    assert res["cold"]["floor"]["cold_ms"] > 0 and "compileall" in res["bytecode"], (res["cold"], res["bytecode"])
    # the shadow, monitoring and what-if rows were printed
    for row in ("shadow on (routing off)", "drift counting on", "prediction log at sample 1.0", "what-if"):
        assert row in table, f"{row!r} missing from the table"
    # the what-if figure was measured (its target is a time, judged by the full run, not by a test on a shared machine)
    assert res["monitor"]["log_records"] > 0 and res["whatif"]["best_us"] > 0, (res["monitor"], res["whatif"])
    # The edge stage ran: every feature on, /health under big batches, memory under the worst bad batches, 431 cost.
    edge = res["edge"]
    assert edge["all_on"]["http_max_diff"] <= 1e-12 and edge["batch_failures"] == 0 and edge["bad_codes"] == [422], edge
    for row in ("every edge feature on", "/health p99 while 16 clients", "peak worker RSS, 16 clients", "server CPU per 431"):
        assert row in table, f"{row!r} missing from the table"
    assert res["same_probabilities"] and res["max_diff"] <= 1e-12, res["max_diff"]
    # Each agreement check ran: in-process over every row, the HTTP answers of both servers, the batch outputs.
    assert res["inprocess"]["max_diff"] <= 1e-12 and res["batch"]["max_diff"] <= 1e-12, res
    assert res["batch"]["label_mismatch"] == 0
    assert all(h["http_max_diff"] <= 1e-12 for h in res["http"].values()), res["http"]
