"""`churn_monitor` (and `churn_score --prediction_log`) as real processes, on months made from the real data in code:
resampled, shifted, doubled, labelled well and badly. Exit codes: 0 fine, 1 error, 2 drift warn, 3 drift fail / AUC alert."""
import json, math, re, shutil, subprocess
from datetime import datetime, timedelta, timezone

import pytest

from churn_deploy.monitor import churn_monitor
from conftest import ROOT, script
from support import in_process

SECRET = "monitor-test-secret-0123456789"  # a prediction-log HMAC secret (not an API key: never a `<name>-key-<hex>`)
ROW = re.compile(r"^(\w+) +([\d,]+) +([\d.]+|–) +([\d.]+|–)  (ok|warn|FAIL|few rows)$", re.M)


def monitor(*args, process: bool = False, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """`churn_monitor ARGS` with the CHURN_PREDICTION_LOG* variables unset and `env` set: the command's function run in this
    process, or with `process` the console script as a shell runs it (a process spends seconds importing what the test has)."""
    if not process: return in_process(churn_monitor, *args, **env)
    import os
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_PREDICTION_LOG")} | env
    return subprocess.run([script("churn_monitor"), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=full_env)


def drift_table(stdout: str) -> dict[str, tuple[int, float, float, str]]:
    "feature → (rows, PSI, JS distance, status) from `churn_monitor drift`'s table (one model version)."
    return {m[1]: (int(m[2].replace(",", "")), float(m[3]), float(m[4]), m[5]) for m in ROW.finditer(stdout)}


def one_line_error(r: subprocess.CompletedProcess, *needles: str):
    usage = any(m in r.stderr for m in ("error: argument ", "unrecognized arguments", "arguments are required"))  # the parser's: 2
    assert r.returncode == (2 if usage else 1), (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("churn_monitor: error: "), r.stderr
    for n in needles: assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------- months made from the real data

@pytest.fixture(scope="module")
def data(data_csv, model_dir):
    "The raw CSV, the cleaned rows of full_train (what the reference describes), the committed model."
    from churn_deploy.data import check_raw, clean, read_raw
    from churn_deploy.predict import load_model
    from churn_deploy.train import split_data
    raw = read_raw(data_csv)
    df = clean(check_raw(raw))
    full_train = split_data(df).full_train
    return {"raw": raw, "full_train": full_train, "model": load_model(model_dir)}


@pytest.fixture(scope="module")
def month(data):
    "5,000 customers drawn with replacement from the training rows: the raw rows and the cleaned ones, in the same order."
    import numpy as np
    ft = data["full_train"]
    picks = np.random.default_rng(7).choice(ft.index.to_numpy(), 5000, replace=True)
    return data["raw"].loc[picks].reset_index(drop=True), ft.loc[picks].reset_index(drop=True)


def write_log(path, frame, model, version=None, time=None):
    "A prediction log of cleaned customers, as the service writes it."
    from churn_deploy.data import FEATURES
    from churn_deploy.drift import prediction_record
    rows = frame[FEATURES].to_dict(orient="records")
    with open(path, "w") as f:
        for r, p in zip(rows, model.predict_many(rows)):
            f.write(json.dumps(prediction_record(r, p, p >= 0.5, version or model.version, "test", time=time)) + "\n")
    return path


def test_resampled_month_has_no_drift(tmp_path, month, model_dir):
    "5,000 rows resampled from the training data, as a raw CSV: every PSI < 0.05, exit 0."
    raw, _ = month
    raw.to_csv(tmp_path / "month.csv", index=False)
    r = monitor("drift", "--input", tmp_path / "month.csv", "--model", model_dir, process=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    table = drift_table(r.stdout)
    assert len(table) == 20 and all(rows == 5000 for rows, *_ in table.values()), r.stdout
    worst = max(table, key=lambda f: table[f][1])
    print(f"resampled: largest PSI {table[worst][1]} ({worst})")
    assert table[worst][1] < 0.05, r.stdout
    assert "no drift (exit 0)" in r.stdout


def test_tenure_shift_fails_on_tenure_only(tmp_path, month, model_dir):
    "tenure + 1 sd in the raw CSV: tenure's PSI > 0.25 (exit 3), every other feature < 0.1; the score moves with it."
    raw, clean_rows = month
    sd = clean_rows.tenure.std()
    shifted = raw.copy()
    shifted["tenure"] = [str(round(int(t) + sd)) for t in raw["tenure"]]
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    r = monitor("drift", "--input", tmp_path / "shifted.csv", "--model", model_dir)
    assert r.returncode == 3, (r.stdout, r.stderr)
    table = drift_table(r.stdout)
    assert table["tenure"][1] > 0.25 and table["tenure"][3] == "FAIL", r.stdout
    others = {f: v[1] for f, v in table.items() if f not in ("tenure", "score")}
    assert max(others.values()) < 0.1, others
    print(f"tenure +1 sd: PSI {table['tenure'][1]}, others at most {max(others.values())}, score {table['score'][1]}")


@pytest.mark.parametrize("feature", ["monthlycharges", "totalcharges"])
def test_charges_shift_fails_on_that_feature_only(tmp_path, month, data, model_dir, feature):
    "The same through a prediction log, for the two charges."
    from churn_deploy.monitor import shift_numeric
    _, clean_rows = month
    write_log(tmp_path / "log.jsonl", shift_numeric(clean_rows, feature), data["model"])
    r = monitor("drift", "--input", tmp_path / "log.jsonl", "--model", model_dir)
    assert r.returncode == 3, (r.stdout, r.stderr)
    table = drift_table(r.stdout)
    assert table[feature][1] > 0.25, r.stdout
    assert max(v[1] for f, v in table.items() if f not in (feature, "score")) < 0.1, r.stdout


def doubled_payment_drift(tmp_path, month, data, model_dir, method: str) -> tuple[float, subprocess.CompletedProcess]:
    "One payment method at twice its training share, through a prediction log and `churn_monitor drift`: (its share, the run)."
    from churn_deploy.data import DOMAINS
    from churn_deploy.monitor import double_category
    _, clean_rows = month
    ref = data["model"].meta["reference"]["categorical"]["paymentmethod"]
    share = ref["proportions"][list(DOMAINS["paymentmethod"]).index(method)]
    write_log(tmp_path / "log.jsonl", double_category(clean_rows, "paymentmethod", method, share=share), data["model"])
    return share, monitor("drift", "--input", tmp_path / "log.jsonl", "--model", model_dir)


def test_doubled_category_fails_on_that_feature_only(tmp_path, month, data, model_dir):
    "paymentmethod=electronic_check at twice its training share: PSI > 0.25 there, < 0.1 elsewhere."
    _, r = doubled_payment_drift(tmp_path, month, data, model_dir, "electronic_check")
    assert r.returncode == 3, (r.stdout, r.stderr)
    table = drift_table(r.stdout)
    assert table["paymentmethod"][1] > 0.25, r.stdout
    assert max(v[1] for f, v in table.items() if f not in ("paymentmethod", "score")) < 0.1, r.stdout


def test_doubled_mailed_check_only_warns(tmp_path, month, data, model_dir):
    "mailed_check's share (about 23 %) doubled gives p·ln 2 + p·ln((1 − p)/(1 − 2p)) ≈ 0.244: a warning, exit 2, not a failure."
    p, r = doubled_payment_drift(tmp_path, month, data, model_dir, "mailed_check")
    table = drift_table(r.stdout)
    expected = p * math.log(2) + p * math.log((1 - p) / (1 - 2 * p))
    assert abs(table["paymentmethod"][1] - expected) < 0.02 and 0.1 <= table["paymentmethod"][1] < 0.25, (expected, r.stdout)
    assert r.returncode == 2 and "drift: warn (exit 2)" in r.stdout, (r.stdout, r.stderr)


def test_report_with_plots(tmp_path, month, data, model_dir):
    "--report writes Markdown or HTML that links one PNG per feature and the score, in a folder beside it."
    _, clean_rows = month
    write_log(tmp_path / "log.jsonl", clean_rows.head(800), data["model"])
    for name in ("drift.md", "drift.html"):
        r = monitor("drift", "--input", tmp_path / "log.jsonl", "--model", model_dir, "--report", tmp_path / name)
        assert r.returncode == 0, (r.stdout, r.stderr)
        body = (tmp_path / name).read_text()
        links = re.findall(r'(?:\]\(|src=")(drift-plots/[^")]+\.png)', body)
        assert len(links) == 20 and all((tmp_path / link).stat().st_size > 1000 for link in links), body[:1000]
        assert "tenure" in body and ("<table>" in body) == name.endswith(".html")


def test_each_record_against_its_own_version(tmp_path, month, data, model_dir):
    "A registry with a second version whose reference describes longer tenures: its shifted records are no drift for it,"
    " but the same records under the first version's name are."
    from churn_deploy.data import FEATURES, canonical_sha256
    from churn_deploy.drift import reference_profile
    _, clean_rows = month
    model, ft = data["model"], data["full_train"]
    sd = ft.tenure.std()  # one shift for the reference and the records
    longer = ft.assign(tenure=(ft.tenure + sd).round().astype(int))
    meta = json.loads((model_dir / "model.json").read_text())
    meta.pop("meta_sha256")
    meta["version"] = "0.1.0+longtenure01"
    records = longer[FEATURES].to_dict(orient="records")
    meta["reference"] = reference_profile(records, model.predict_many(records))
    meta["meta_sha256"] = canonical_sha256(meta)
    second = tmp_path / "second"; second.mkdir()
    (second / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(model_dir / "model.bin", second / "model.bin")
    reg = tmp_path / "registry"; shutil.copytree(model_dir, reg)
    r = subprocess.run([script("churn_models"), "add", str(second), "--models", str(reg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    normal = write_log(tmp_path / "a.jsonl", clean_rows.head(1000), model).read_text()
    shifted = clean_rows.head(1000).assign(tenure=(clean_rows.tenure.head(1000) + sd).round().astype(int))
    own = write_log(tmp_path / "b.jsonl", shifted, model, version="0.1.0+longtenure01").read_text()
    (tmp_path / "mixed.jsonl").write_text(normal + own)
    r = monitor("drift", "--input", tmp_path / "mixed.jsonl", "--model", reg, "--min_rows", 500)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.count("reference: model") == 2 and "0.1.0+longtenure01" in r.stdout
    mislabelled = write_log(tmp_path / "c.jsonl", shifted, model).read_text()
    (tmp_path / "mixed2.jsonl").write_text(normal + mislabelled)
    r = monitor("drift", "--input", tmp_path / "mixed2.jsonl", "--model", reg)
    assert r.returncode == 3 and r.stdout.count("reference: model") == 1, (r.stdout, r.stderr)


def test_drift_errors_are_one_line(tmp_path, data, model_dir):
    from conftest import HEADER, ROW
    (tmp_path / "bad.csv").write_text(HEADER + "\n" + ROW.replace("Month-to-month", "Weekly") + "\n")
    (tmp_path / "bad.jsonl").write_text('{"time": "2026-01-01T00:00:00Z"}\n')
    write_log(tmp_path / "ok.jsonl", data["full_train"].head(5), data["model"])
    cases = [
        (("drift", "--input", tmp_path / "none.csv", "--model", model_dir), "is not a file"),
        (("drift", "--input", tmp_path / "bad.csv", "--model", model_dir), "column 'Contract', line 2: 'Weekly' is not one of"),
        (("drift", "--input", tmp_path / "bad.jsonl", "--model", model_dir), "bad.jsonl, line 1: no 'model_version'"),
        (("drift", "--input", tmp_path / "ok.jsonl", "--model", tmp_path / "nomodel"), "no model in"),
        (("drift", "--input", tmp_path / "ok.jsonl", "--model", model_dir, "--warn", "0.3"), "need 0 < --warn < --fail"),
        (("drift", "--input", tmp_path / "ok.jsonl", "--model", model_dir, "--report", tmp_path / "r.pdf"), "use a .md or .html file"),
        (("drift", "--input", tmp_path / "ok.jsonl", "--model", model_dir, "--warn", "lots"), "argument --warn: invalid float value"),
        (("drift", "--input", tmp_path / "ok.jsonl", "--outcomes", "x.csv"), "drift does not take --outcomes"),
        (("drift",), "drift needs --input"),
        (("watch",), "unknown command 'watch'"),
        ((), "the following arguments are required: command"),
    ]
    one_line_error(monitor(*cases[0][0], process=True), cases[0][1])  # one as a real process, as a shell runs it
    for args, needle in cases[1:]: one_line_error(monitor(*args), needle)


# ---------------------------------------------------------------- live quality from outcomes

@pytest.fixture(scope="module")
def scored_month(tmp_path_factory, data, model_dir):
    "3,000 distinct customers scored by churn_score into a prediction log with the secret; their probabilities."
    import numpy as np
    d = tmp_path_factory.mktemp("quality")
    ids = data["full_train"].customerid.sample(3000, random_state=3)
    raw = data["raw"][data["raw"].customerID.isin(set(ids))]
    raw.to_csv(d / "month.csv", index=False)
    r = subprocess.run([script("churn_score"), "--input", d / "month.csv", "--output", d / "scored.csv", "--model", model_dir,
                        "--prediction_log", d / "log.jsonl", "--key_secret", SECRET], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3,000 prediction records" in r.stdout
    probs = np.array([json.loads(line)["probability"] for line in (d / "log.jsonl").read_text().splitlines()])
    return d, list(raw.customerID), probs


def outcomes(path, ids, churned, day):
    path.write_text("customerID,churned,date\n" + "".join(f"{c},{'yes' if y else 'no'},{day}\n" for c, y in zip(ids, churned)))
    return path


def values(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-zA-Z ]+): +(.+)$", stdout, re.M))


def test_good_month_no_alert_bad_month_alert(scored_month, model_dir):
    "Outcomes drawn from the predicted probabilities: AUC near the test AUC, exit 0. The same outcomes shuffled: exit 3."
    import numpy as np
    from sklearn.metrics import roc_auc_score
    d, ids, probs = scored_month
    y = np.random.default_rng(11).uniform(size=len(probs)) < probs
    soon = (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat()
    good = monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", outcomes(d / "good.csv", ids, y, soon),
                   "--model", model_dir, "--key-secret", SECRET, "--report", d / "quality.md")
    assert good.returncode == 0, (good.stdout, good.stderr)
    v = values(good.stdout)
    assert v["matched"] == "3,000" and v["status"] == "ok", good.stdout
    assert v["AUC"].startswith(f"{roc_auc_score(y, probs):.3f} ("), (v["AUC"], roc_auc_score(y, probs))
    lo, hi = map(float, re.search(r"\(([\d.]+)–([\d.]+)\)", v["AUC"]).groups())
    assert lo < roc_auc_score(y, probs) < hi
    assert (d / "quality-plots").is_dir() and "calibration" in (d / "quality.md").read_text()
    shuffled = np.random.default_rng(12).permutation(y)
    bad = monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", outcomes(d / "bad.csv", ids, shuffled, soon),
                  "--model", model_dir, "--key_secret", SECRET)
    assert bad.returncode == 3, (bad.stdout, bad.stderr)
    assert values(bad.stdout)["status"].startswith("ALERT: AUC"), bad.stdout
    # too few labels for the alert: 3,000 < 5,000
    r = monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", d / "bad.csv", "--model", model_dir,
                "--key_secret", SECRET, "--min_labels", 5000)
    assert r.returncode == 0 and "too few labels" in r.stdout, r.stdout


def test_match_rate_horizon_and_secret_from_the_environment(scored_month, model_dir):
    "Outcomes for 80 % of the customers: match rate 0.800; outcomes after the horizon match nothing; the secret from CHURN_PREDICTION_LOG_KEY."
    d, ids, probs = scored_month
    soon = (datetime.now(timezone.utc) + timedelta(days=10)).date().isoformat()
    outcomes(d / "some.csv", ids[:2400], [p > 0.5 for p in probs[:2400]], soon)
    r = monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", d / "some.csv", "--model", model_dir,
                CHURN_PREDICTION_LOG_KEY=SECRET, process=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert values(r.stdout)["matched"] == "2,400" and values(r.stdout)["match rate"].startswith("0.800 ("), r.stdout
    r = monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", d / "some.csv", "--model", model_dir,
                "--horizon_days", 5, "--key_secret", SECRET)
    assert r.returncode == 0 and values(r.stdout)["matched"] == "0", r.stdout


def test_scored_csv_joins_raw_ids(scored_month, model_dir):
    "A CSV from churn_score carries the raw customerID: no secret needed; --scored_at dates it."
    import numpy as np
    d, ids, probs = scored_month
    y = np.random.default_rng(13).uniform(size=len(probs)) < probs
    outcomes(d / "csv-outcomes.csv", ids, y, "2026-04-01")
    r = monitor("performance", "--predictions", d / "scored.csv", "--outcomes", d / "csv-outcomes.csv", "--model", model_dir,
                "--scored_at", "2026-03-01")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert values(r.stdout)["matched"] == "3,000" and "scored CSV" in r.stdout
    r = monitor("performance", "--predictions", d / "scored.csv", "--outcomes", d / "csv-outcomes.csv", "--model", model_dir,
                "--scored_at", "2026-05-01")
    assert values(r.stdout)["matched"] == "0", r.stdout  # the outcomes predate the scoring


def test_performance_errors_are_one_line(tmp_path, scored_month, model_dir):
    d, ids, _ = scored_month
    outcomes(tmp_path / "o.csv", ids, [0] * len(ids), "2026-01-01")
    (tmp_path / "nodate.csv").write_text("customer,churned\nx,1\n")
    (tmp_path / "maybe.csv").write_text("customer,churned,date\nx,maybe,2026-01-01\n")
    cases = [
        (("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "nodate.csv"), "no date column (found: customer, churned)"),
        (("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "maybe.csv"), "line 2: churned 'maybe' is not 0/1 or yes/no"),
        (("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "o.csv", "--model", model_dir), "give --key_secret"),
        (("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "o.csv", "--key_secret", "short"), "at least 16 characters"),
        (("performance", "--predictions", d / "log.jsonl"), "performance needs --predictions FILE and --outcomes FILE"),
        (("performance", "--predictions", tmp_path / "none.jsonl", "--outcomes", tmp_path / "maybe.csv"), "is not a file"),
        (("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "maybe.csv", "--horizon_days", "-1"), "must be 0 or more"),
        (("performance", "--predictions", d / "scored.csv", "--outcomes", tmp_path / "maybe.csv", "--scored_at", "soon"), "is not an ISO date"),
        (("performance", "--input", d / "scored.csv"), "performance does not take --input"),
    ]
    one_line_error(monitor(*cases[0][0], process=True), cases[0][1])
    for args, needle in cases[1:]: one_line_error(monitor(*args), needle)
    one_line_error(monitor("performance", "--predictions", d / "log.jsonl", "--outcomes", tmp_path / "o.csv",
                           CHURN_PREDICTION_LOG_KEY="short"), "CHURN_PREDICTION_LOG_KEY")


def test_one_implementation_of_each_metric():
    "AUC, log-loss, Brier, calibration error and the bootstrap live in evaluate; train, retrain, monitor and abtest define none of their own."
    import numpy as np
    from sklearn.metrics import roc_auc_score
    import churn_deploy.abtest, churn_deploy.evaluate as ev, churn_deploy.monitor, churn_deploy.retrain, churn_deploy.train
    metrics = ("auc", "log_loss", "brier", "calibration_error", "calibration_bins", "score_metrics", "weighted_aucs",
               "bootstrap_auc_diff", "with_intervals", "rate_interval")
    for mod in (churn_deploy.train, churn_deploy.retrain, churn_deploy.monitor, churn_deploy.abtest):
        for name in metrics:
            if name in vars(mod): assert vars(mod)[name] is getattr(ev, name), f"{mod.__name__}.{name} is another implementation"
    for seed in range(10):  # and the one AUC is scikit-learn's, which the bootstrap's weighted AUC matches
        rng = np.random.default_rng(seed)
        p = rng.uniform(size=5000).round(seed % 3 + 1)
        y = rng.uniform(size=5000) < p
        assert ev.auc(y, p) == roc_auc_score(y, p)
        assert abs(ev.weighted_aucs(y, p, np.ones(len(y)))[0] - ev.auc(y, p)) <= 1e-12


def test_service_imports_no_heavy_library():
    "What the service counts with (drift), and the log and outcome readers (outcomes), import no numpy, pandas or scikit-learn."
    r = subprocess.run([script("python"), "-c", "import sys, churn_deploy.drift as d, churn_deploy.outcomes; "
                        "d.psi([0.5, 0.5], [0.4, 0.6]); "
                        "print(sorted(k for k in ('numpy', 'pandas', 'sklearn', 'scipy', 'matplotlib') if k in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_report_template_is_well_formed():
    "The HTML report's page is a package file (not a Python string): every tag it opens closes, and it has its two fields."
    from html.parser import HTMLParser
    from importlib.resources import files
    from churn_deploy.monitor import report_template
    text = (files("churn_deploy") / "assets" / "monitor_report.html").read_text()
    assert report_template().template == text and sorted(report_template().get_identifiers()) == ["body", "title"]

    class Tags(HTMLParser):
        def __init__(self): super().__init__(); self.open = []
        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "img", "br", "link"): self.open.append(tag)
        def handle_endtag(self, tag): assert self.open and self.open.pop() == tag, (tag, self.open)
    t = Tags(); t.feed(report_template().substitute(title="t", body="<p>x</p>")); t.close()
    assert t.open == [] and text.lstrip().lower().startswith("<!doctype html>")
    assert "<style>" not in (ROOT / "churn_deploy" / "monitor.py").read_text()


def test_customer_hash_is_hmac_sha256():
    "The customer hash against RFC 4231's test case 2 and an independent computation with the hmac module."
    import hashlib, hmac
    from churn_deploy.drift import customer_hash
    assert customer_hash("what do ya want for nothing?", "Jefe") == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    for cid, key in (("7590-VHVEG", "a-secret-of-the-team"), ("é-1", "k" * 64), ("", "key-of-sixteen-ch")):
        assert customer_hash(cid, key) == hmac.new(key.encode(), cid.encode(), hashlib.sha256).hexdigest()
    assert customer_hash("7590-VHVEG", "a") != customer_hash("7590-VHVEG", "b")


def test_readme_example(tmp_path, data_csv):
    "The docs' 'Monitoring offline' commands (docs/monitoring.md), run as written with CHURN_DATA set, print exactly what they show."
    import os
    from conftest import BIN
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # wherever the section now lives
    (sec,) = [m.group(1) for page in pages if (m := re.search(r"^### Monitoring offline\n(.*?)(?=^#{1,3} |\Z)", page.read_text(), re.M | re.S))]
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", sec, re.M | re.S)
    commands, shown = [b for tag, b in fenced if tag == "bash"], [b for tag, b in fenced if tag == ""]
    assert len(commands) == len(shown) == 2, fenced
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHURN_MODEL_DIR": str(ROOT / "model"), "CHURN_DATA": str(data_csv)}
    script_text = "\necho '--- next block ---'\n".join(commands).replace("uv run ", "")  # one shell: the key carries over
    if not shutil.which("openssl"): script_text = script_text.replace("$(openssl rand -hex 24)", "0123456789abcdef0123456789abcdef")
    r = subprocess.run(["bash", "-uo", "pipefail", "-c", script_text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    said = [line for line in r.stderr.splitlines() if not line.startswith("churn_score: model ")]  # which model it used: expected
    assert r.returncode == 0 and not said, r.stderr
    got = r.stdout.split("--- next block ---\n")
    assert [g.strip() for g in got] == [s.strip() for s in shown], r.stdout
    assert (tmp_path / "runs" / "drift-plots").is_dir() and (tmp_path / "runs" / "quality-plots").is_dir()


def test_torn_last_line_is_skipped_with_one_warning(tmp_path, month, data, model_dir):
    "A log whose last record was cut short (a full disk): drift and performance read the rest and say so on stderr, in one line."
    " A bad line in the middle is still refused."
    _, clean_rows = month
    whole = write_log(tmp_path / "log.jsonl", clean_rows.head(600), data["model"]).read_text()
    torn = whole + whole.splitlines()[0][:70]  # partial JSON, no newline
    (tmp_path / "torn.jsonl").write_text(torn)
    r = monitor("drift", "--input", tmp_path / "torn.jsonl", "--model", model_dir)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [f"churn_monitor: warning: {tmp_path / 'torn.jsonl'}: skipped 1 torn record (line 601, the last: "
                                     "partial JSON without a newline, a write cut short, e.g. by a full disk)"], r.stderr
    assert "prediction log torn.jsonl, 600 records" in r.stdout
    assert r.stdout == monitor("drift", "--input", tmp_path / "log.jsonl", "--model", model_dir).stdout.replace("log.jsonl", "torn.jsonl")
    (tmp_path / "o.csv").write_text("customer_id,churned,date\nx,1,2026-01-01\n")
    r = monitor("performance", "--predictions", tmp_path / "torn.jsonl", "--outcomes", tmp_path / "o.csv", "--model", model_dir)
    assert "skipped 1 torn record (line 601" in r.stderr.splitlines()[0], r.stderr  # then: no customer in the records
    (tmp_path / "middle.jsonl").write_text(torn + "\n" + whole)  # written on after the tear
    one_line_error(monitor("drift", "--input", tmp_path / "middle.jsonl", "--model", model_dir), "middle.jsonl, line 601: not a JSON object")


def test_live_ab_readout(tmp_path, month, data, model_dir):
    "A shadow log scored by the committed model (champion) and a made-up challenger, and outcomes: a challenger that sees"
    " the truth is promoted (exit 0), a noisier one rejected (exit 3), too few outcomes keep watching (exit 2); a log"
    " without a challenger reads as before."
    import numpy as np
    from churn_deploy.data import FEATURES
    from churn_deploy.drift import customer_hash, prediction_record
    from churn_deploy.evaluate import bootstrap_auc_diff
    _, rows = month
    rows = rows.drop_duplicates("customerid").head(2500)
    model = data["model"]
    p = np.array(model.predict_many(rows[FEATURES].to_dict(orient="records")))
    logit, sigmoid = np.log(p / (1 - p)), lambda z: 1 / (1 + np.exp(-z))
    truth = sigmoid(logit + np.random.default_rng(1).normal(0, 0.7, len(p)))
    churned = np.random.default_rng(2).uniform(size=len(p)) < truth
    noisier = sigmoid(logit + np.random.default_rng(3).normal(0, 1.0, len(p)))
    when = datetime.now(timezone.utc)
    outcomes(tmp_path / "outcomes.csv", rows.customerid, churned, (when + timedelta(days=20)).date().isoformat())

    def shadow_log(name, challenger):
        with open(tmp_path / name, "w") as f:
            for r, a, b, c in zip(rows[FEATURES].to_dict(orient="records"), p, challenger, rows.customerid):
                f.write(json.dumps(prediction_record(r, float(a), bool(a >= 0.5), model.version, "req", customer=customer_hash(c, SECRET),
                                                     time=when, shadow_version="0.2.0+challenger", shadow_probability=float(b))) + "\n")
        return tmp_path / name

    def run(log, *extra):
        return monitor("performance", "--predictions", log, "--outcomes", tmp_path / "outcomes.csv", "--model", model_dir,
                       "--key_secret", SECRET, *extra)

    better = run(shadow_log("better.jsonl", truth), "--report", tmp_path / "ab.md")
    assert better.returncode == 0 and not better.stderr, (better.stdout, better.stderr)
    b = bootstrap_auc_diff(churned.astype(int), p, truth)
    assert f"AUC difference, challenger − champion: {b['auc_diff']:+.4f}, 95% paired bootstrap interval " \
           f"[{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]" in better.stdout, better.stdout
    for name in ("AUC", "log-loss", "Brier", "calibration error"):
        assert re.search(rf"^{name} +0\.\d{{4}} +0\.\d{{4}} +[+-]0\.\d{{4}}$", better.stdout, re.M), (name, better.stdout)
    assert "recommendation: promote 0.2.0+challenger" in better.stdout and "Brier difference <= +0.002" in better.stdout
    assert "promote 0.2.0+challenger`) (exit 0)\nreport written to" in better.stdout and "## Live A/B: 0.2.0+challenger" in (tmp_path / "ab.md").read_text()
    worse = run(shadow_log("worse.jsonl", noisier))
    assert worse.returncode == 3 and "recommendation: reject 0.2.0+challenger: failed: AUC difference" in worse.stdout, worse.stdout
    few = run(tmp_path / "better.jsonl", "--min_labels", 5000)
    assert few.returncode == 2 and "keep watching 0.2.0+challenger: too few outcomes (2,500 < 5,000)" in few.stdout, few.stdout
    plain = (tmp_path / "better.jsonl").read_text().replace(', "shadow_version": "0.2.0+challenger"', "")
    (tmp_path / "plain.jsonl").write_text(re.sub(r', "shadow_probability": [\d.e-]+', "", plain))
    alone = run(tmp_path / "plain.jsonl")
    assert alone.returncode == 0 and "live A/B" not in alone.stdout and alone.stdout.rstrip().endswith("no alert (exit 0)"), alone.stdout
