"""The benchmark of issue 5 in its smoke mode: every stage runs, tiny, and every figure is printed. No timing assertions."""
import json, shutil, subprocess, sys

import pytest

from conftest import ROOT

FIGURES = ["in-process single prediction", "HTTP /predict throughput, 1 worker", "HTTP /predict p99 latency",
           "cold start, spawn → first 200", "worker RSS after", "batch scoring"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk, the benchmark's load generator, is not installed (apt-get install wrk)")
def test_bench_smoke(tmp_path, data_csv):
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
    assert set(res["errors"]) == {"baseline", "project", "project_2w"}, res["errors"]
    assert res["same_probabilities"] and res["max_diff"] <= 1e-12, res["max_diff"]
