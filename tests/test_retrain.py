"""churn_retrain as a real process, and the monthly workflow that runs it.

- Bad input: one line on stderr, status 1, the registry untouched (a few as real processes, the rest through the
  command's function in the test's process, which the process runs in the same way).
- The drills: shuffled labels are rejected (status 3) for three seeds; the same data reproduces the champion byte for
  byte and registers no duplicate; a passing candidate is promoted with --promote, and the registry still works.
- .github/workflows/retrain.yml: valid for the GitHub workflow schema and actionlint (which reject broken copies),
  monthly and on demand, actions pinned like CI, and its gate step run as written.

The trainings (about 8 s of CPU each) start together, in the background, the first time a test needs one.
"""
import json, os, platform, re, shutil, subprocess, sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BIN, HEADER, ROOT, ROW, script
from support import SHA_PIN, actionlint, check_schema, in_process, month_older, telco_csv

pytestmark = pytest.mark.long_unit  # minutes of a worker: handed out first (conftest.py)

WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
MODELS = ROOT / "model"
ERROR = "churn_retrain: error: "


def champion_dir(models: Path = MODELS) -> Path:
    "The directory holding the champion's model.json, in either layout of a model directory."
    from churn_deploy.registry import is_legacy, read_registry, version_dir
    return models if is_legacy(models) else version_dir(models, read_registry(models).champion)


def env_for(data_csv: Path, **extra: str) -> dict:
    "This environment, finding the champion's data through CHURN_DATA, with no clock or BLAS override unless given."
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "OPENBLAS_CORETYPE", "CHURN_MODEL_DIR")}
    return {**env, "CHURN_DATA": str(data_csv), **extra}


def files(root: Path) -> dict[str, bytes]:
    "Every file under `root`, by relative path."
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def report_of(stdout: str, cwd: Path) -> dict:
    "The report.json of the run whose output is `stdout` (its last line names report.md)."
    (line,) = [l for l in stdout.splitlines() if l.startswith("report: ")]
    return json.loads((cwd / line.removeprefix("report: ")).with_name("report.json").read_text())


def _has_avx2() -> bool:
    try: return platform.machine().lower() in ("x86_64", "amd64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError: return False


def gate_step(cwd: Path, path: str, **env: str) -> subprocess.Popen:
    "Start the workflow's gate step as written, in `cwd`, with the tools in `path` standing in for `uv run --locked`."
    wf = yaml.safe_load(WORKFLOW.read_text())
    (gate,) = [s for job in wf["jobs"].values() for s in job["steps"] if s.get("id") == "gate"]
    (cwd / "github_output").write_text("")
    env = {**env_for(env.get("CHURN_DATA", "")), "PATH": f"{path}{os.pathsep}{os.environ['PATH']}", "RUNNER_TEMP": str(cwd),
           "GITHUB_OUTPUT": str(cwd / "github_output"), **env}
    return subprocess.Popen(["bash", "-e", "-c", gate["run"].replace("uv run --locked ", "")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outputs(cwd: Path) -> dict:
    "The step outputs the gate step wrote."
    return dict(l.split("=", 1) for l in (cwd / "github_output").read_text().splitlines())


# ---------------------------------------------------------------- the trainings, started together

@pytest.fixture(scope="module")
def unseen(data_csv):
    "The raw rows of the real CSV outside the frozen holdout (the champion's test split), as read."
    from churn_deploy.data import check_raw, clean, read_raw
    from churn_deploy.train import split_data
    raw = read_raw(data_csv)
    return raw.drop(split_data(clean(check_raw(raw))).test.index)


SEEDS = (1, 2, 3)


def holdout_sha256(data_csv: Path) -> str:
    "The rows sha256 of the champion's frozen holdout, as an earlier report would record it."
    from churn_deploy.data import load_churn_data
    from churn_deploy.retrain import rows_sha256
    from churn_deploy.train import split_data
    return rows_sha256(split_data(load_churn_data(data_csv)).test)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_csv, unseen):
    "Every training run of this file, started at once; each test waits for its own."
    base = tmp_path_factory.mktemp("retrain")
    champ = json.loads((champion_dir() / "model.json").read_text())
    epoch = str(int(datetime.fromisoformat(champ["created_at"]).timestamp()))
    from churn_deploy.data import read_raw
    jobs = {f"shuffled-{s}": (unseen.assign(Churn=np.random.default_rng(s).permutation(unseen.Churn.to_numpy())), [], {})
            for s in SEEDS}
    jobs["same"] = (None, [], {"SOURCE_DATE_EPOCH": epoch})
    raw = read_raw(data_csv)
    month2 = month_older(raw)  # the next export: the same customers a month older, rows shuffled
    jobs["promote"] = (month2, ["--promote", "--holdout_sha256", holdout_sha256(data_csv)], {})
    jobs["month2-sorted"] = (month2.sort_values("customerID"), [], {})
    jobs["reconsidered"] = (month2, [], {})  # rejected by a strict threshold, then run again with the defaults
    started = {}
    d = base / "workflow"  # the workflow's gate step on this month's data: the champion's own, retrained at another time
    shutil.copytree(MODELS, d / "model")
    started["workflow"] = (gate_step(d, str(BIN), NEW_DATA=str(data_csv), CHURN_DATA=str(data_csv)), d)
    for name, (frame, args, extra) in jobs.items():
        d = base / name
        shutil.copytree(MODELS, d / "model")
        data = data_csv if frame is None else d / ("month2.csv" if name in ("promote", "reconsidered") else f"{name}.csv")
        if frame is not None: frame.to_csv(data, index=False)
        cmd = [script("churn_retrain"), "--data", str(data), "--models", "model", *args]
        if name == "reconsidered":  # two runs in one process: the first is refused by the gate (status 3)
            q = lambda c: " ".join(f"'{a}'" for a in c)
            cmd = ["bash", "-c", f"{q(cmd + ['--min_auc_diff', '0.01'])}; echo \"status $?\"; echo ====; {q(cmd)}"]
        proc = subprocess.Popen(cmd, cwd=d, env=env_for(data_csv, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started[name] = (proc, d)
    results = {}

    def result(name: str):
        if name not in results:
            proc, d = started[name]
            out, err = proc.communicate(timeout=600)
            results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), d)
            if name == "workflow": results[name] += (outputs(d),)
        return results[name]

    yield result
    for proc, _ in started.values():
        if proc.poll() is None: proc.kill(); proc.wait()


# ---------------------------------------------------------------- bad input

def _case_files(tmp: Path, data_csv: Path) -> dict:
    "Each bad input: (arguments, extra environment, what the one line says)."
    (tmp / "weekly.csv").write_text(f"{HEADER}\n{ROW}\n{ROW.replace('Month-to-month', 'Weekly')}\n")
    (tmp / "eleven.csv").write_text(telco_csv(4, 7))
    (tmp / "empty.csv").write_text("")
    (tmp / "small.csv").write_text("".join(data_csv.read_text().splitlines(keepends=True)[:200]))
    data = ["--data", str(data_csv)]
    return {
        "no --data": ([], {}, "--data NEW.csv is required"),
        "missing file": (["--data", str(tmp / "none.csv")], {}, f"the given path {str(tmp / 'none.csv')!r} is not a file"),
        "empty file": (["--data", str(tmp / "empty.csv")], {}, "the file is empty"),
        "unknown category": (["--data", str(tmp / "weekly.csv")], {}, "column 'Contract', line 3: 'Weekly' is not one of"),
        "too little data": (["--data", str(tmp / "eleven.csv")], {}, "too little data to train: 11 rows (4 churned, 7 stayed)"),
        "missing holdout": ([*data, "--holdout", str(tmp / "none.csv")], {}, "is not a file"),
        "small holdout": ([*data, "--holdout", str(tmp / "eleven.csv")], {}, "a holdout needs at least 25 of each class"),
        "other holdout": ([*data, "--holdout_sha256", "0" * 64], {}, "not the expected 000000000000…"),
        "NaN threshold": ([*data, "--min_auc_diff", "nan"], {}, "--min_auc_diff must be a finite number"),
        "negative seed": ([*data, "--seed", "-1"], {}, "--seed must be 0 or more"),
    }


CASES = ["no --data", "missing file", "empty file", "unknown category", "too little data", "missing holdout",
         "small holdout", "other holdout", "NaN threshold", "negative seed"]


AS_PROCESS = ("no --data", "unknown category")  # the rest run the command's function in the test's process: no imports to wait for


def retrain(args: list[str], data_csv: Path, process: bool, **extra: str) -> subprocess.CompletedProcess:
    "`churn_retrain ARGS` with `env_for`'s environment: a real process, or the command's function in this one."
    if process: return subprocess.run([script("churn_retrain"), *args], capture_output=True, text=True, timeout=120,
                                      env=env_for(data_csv, **extra))
    from churn_deploy.retrain_cli import churn_retrain
    return in_process(churn_retrain, *args, drop=("SOURCE_DATE_EPOCH", "OPENBLAS_CORETYPE", "CHURN_MODEL_DIR"),
                      CHURN_DATA=str(data_csv), **extra)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line(case, tmp_path, data_csv, runs):  # runs: the trainings go on meanwhile
    args, extra, expected = _case_files(tmp_path, data_csv)[case]
    shutil.copytree(MODELS, tmp_path / "model")
    before = files(tmp_path / "model")
    r = retrain(["--models", str(tmp_path / "model"), *args], data_csv, case in AS_PROCESS, **extra)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and expected in lines[0], r.stderr
    assert files(tmp_path / "model") == before, "a refused run changed the registry"


@pytest.mark.parametrize("damage", ["no model", "edited champion", "broken registry"])
def test_bad_registry_one_line(damage, tmp_path, data_csv, runs):
    root = tmp_path / "model"
    shutil.copytree(MODELS, root)
    if damage == "no model": shutil.rmtree(root); root.mkdir()
    elif damage == "edited champion":
        meta = champion_dir(root) / "model.json"
        text = meta.read_text()
        assert '"C": 0.5,' in text
        meta.write_text(text.replace('"C": 0.5,', '"C": 5.0,', 1))
    else:
        from churn_deploy.registry import init_registry
        init_registry(root)
        (root / "registry.json").write_text('{"champion": ')
    before = files(root)
    r = retrain(["--models", str(root), "--data", str(data_csv)], data_csv, damage == "no model")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and str(root) in lines[0], r.stderr
    assert files(root) == before


# ---------------------------------------------------------------- the drills

@pytest.mark.parametrize("seed", SEEDS)
def test_shuffled_labels_are_rejected(runs, seed):
    from churn_deploy.registry import model_of, read_registry
    from churn_deploy.retrain import EXIT_REJECTED, decide
    r, d = runs(f"shuffled-{seed}")
    assert r.returncode == EXIT_REJECTED == 3, r.stdout + r.stderr
    assert "decision: rejected" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
    report = report_of(r.stdout, d)
    assert report["decision"] == decide(report) == "rejected"
    b = report["bootstrap"]
    assert b["ci_high"] < report["thresholds"]["min_auc_diff"], b  # far below the limit, not a near miss
    reg = read_registry(d / "model")
    v = report["candidate"]["version"]
    assert reg.rejected == [v] and reg.challenger is None and reg.champion == report["champion"]["version"], reg
    assert {"report.md", "report.json", "roc.png", "calibration.png", "model.json", "model.bin"} <= set(os.listdir(d / "model" / v))
    assert model_of(d / "model", v, reg).version == v  # kept, verified, with its report beside it


def test_same_data_trains_without_the_holdout(runs):
    "Retrained on the champion's own file: its 1,409 holdout customers are removed first, the rest split by customer id."
    from churn_deploy.registry import read_registry
    r, d = runs("same")
    assert r.returncode == 0, r.stdout + r.stderr
    report = report_of(r.stdout, d)
    assert report["holdout"]["removed_from_new_data"] == 1409 and report["holdout"]["overlap"] == 0, report["holdout"]
    assert report["candidate"]["data"]["rows"]["total"] == 7043 - 1409 and report["candidate"]["split"]["method"] == "customer id"
    assert not report["candidate"]["identical_to_champion"] and report["passed"], report["checks"]
    assert "1,409 of them removed from the new data before training" in r.stdout, r.stdout
    reg = read_registry(d / "model")
    assert reg.challenger == report["candidate"]["version"] and reg.rejected == [], reg


def test_promote_a_passing_candidate(runs, data_csv):
    "The next month's export passes; --promote makes it the champion; the registry still works with the reports."
    from churn_deploy.registry import model_of, read_registry, rollback
    from churn_deploy.retrain import decide
    r, d = runs("promote")
    assert r.returncode == 0, r.stdout + r.stderr
    report = report_of(r.stdout, d)
    assert report["passed"] and report["decision"] == decide(report) == "promoted", report["checks"]
    assert report["holdout"]["rows_sha256"] == holdout_sha256(data_csv)  # the pinned holdout was accepted
    assert report["holdout"]["removed_from_new_data"] == 1409 and report["holdout"]["overlap"] == 0, report["holdout"]
    assert "holdout customers in training" not in r.stdout.split("gate: ")[1].splitlines()[0]
    root = d / "model"
    reg = read_registry(root)
    assert (reg.champion, reg.previous) == (report["candidate"]["version"], report["champion"]["version"]), reg
    for v in reg.versions: assert model_of(root, v, reg).version == v
    rollback(root)
    assert read_registry(root).champion == report["champion"]["version"]
    listing = subprocess.run([script("churn_models"), "list", "--models", str(root)], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and report["candidate"]["version"] in listing.stdout, listing.stdout + listing.stderr


def _readme_retraining() -> str:
    "The 'Retraining' section, wherever the docs keep it now (the README, or a guide in docs/)."
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    (text,) = [t for t in (p.read_text() for p in pages) if "\n### Retraining\n" in t]
    return text.split("\n### Retraining\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.skipif(not _has_avx2(), reason="the README's figures come from OpenBLAS's AVX2 kernels, which this CPU lacks")
def test_readme_figures_are_a_real_run(runs):
    "The README's worked example is churn_retrain's output on the drifted file; its drill rows are the drills' numbers."
    sec = _readme_retraining()
    (example,) = [b for tag, b in re.findall(r"^```(\w*)\n(.*?)^```", sec, re.M | re.S) if "$ uv run churn_retrain" in b]
    r, _ = runs("promote")  # the same file; --promote changes only the decision and what follows
    got = r.stdout.splitlines()
    for prefix in ("candidate ", "holdout: ", "AUC ", "gate: "):
        (shown,) = [l for l in example.splitlines() if l.startswith(prefix)]
        assert shown in got, (shown, got)
    minus = lambda x: f"{x:+.4f}".replace("-", "−")
    for seed in SEEDS:
        r, d = runs(f"shuffled-{seed}")
        rep, b = report_of(r.stdout, d), report_of(r.stdout, d)["bootstrap"]
        h = rep["metrics"]["holdout"]
        ok = sum(t["passed"] for t in rep["behaviour"]["candidate"])
        row = (f"| shuffled labels, seed {seed} | {minus(b['auc_diff'])} | [{minus(b['ci_low'])}, {minus(b['ci_high'])}] | "
               f"{minus(h['candidate']['brier'] - h['champion']['brier'])} | {ok}/6 | rejected (status 3) |")
        assert row in sec, row


# ---------------------------------------------------------------- the workflow

@pytest.fixture(scope="module")
def workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    return wf


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def test_workflow_is_valid():
    r = check_schema("vendor.github-workflows", WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    r = actionlint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validators_reject_broken_copies(tmp_path, workflow):
    p = tmp_path / ".github" / "workflows" / "retrain.yml"
    p.parent.mkdir(parents=True)
    bad = json.loads(json.dumps(workflow))
    bad["on"]["schedule"] = [{"cron": "17 5 32 * *"}]  # no 32nd day
    (job,) = bad["jobs"].values()
    job["steps"].append({"if": "steps.gat.outputs.decision == 'challenger'", "run": "true"})  # no step `gat`
    p.write_text(yaml.safe_dump(bad, sort_keys=False))
    r = actionlint(p)
    assert r.returncode != 0 and "32" in r.stdout and "gat" in r.stdout, r.stdout
    job["timeout-minutes"] = "half an hour"
    p.write_text(yaml.safe_dump(bad, sort_keys=False))
    assert check_schema("vendor.github-workflows", p).returncode != 0


def test_workflow_runs_monthly_and_on_demand(workflow):
    on = workflow["on"]
    assert "workflow_dispatch" in on and "data_url" in on["workflow_dispatch"]["inputs"], on
    (cron,) = [c["cron"] for c in on["schedule"]]
    minute, hour, dom, month, dow = cron.split()
    assert dom.isdigit() and 1 <= int(dom) <= 28 and month == dow == "*", f"{cron!r} is not monthly"
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_workflow_actions_pinned_like_ci(workflow):
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    uses = [s["uses"] for s in _steps(workflow) if "uses" in s]
    assert uses and all(SHA_PIN.fullmatch(u) for u in uses), uses
    uv = {s["with"]["version"] for s in _steps(workflow) + _steps(ci) if s.get("uses", "").startswith("astral-sh/setup-uv@")}
    assert len(uv) == 1, f"retraining and CI must use one uv version: {uv}"
    ci_pins = {s["uses"].split("@")[0]: s["uses"] for s in _steps(ci) if "uses" in s}
    for u in uses:
        if u.split("@")[0] in ci_pins: assert u == ci_pins[u.split("@")[0]], (u, ci_pins)


def test_workflow_opens_a_pull_request_only_for_a_challenger(workflow):
    steps = {s.get("name", s.get("uses", "")): s for s in _steps(workflow)}
    gate = next(s for s in steps.values() if s.get("id") == "gate")
    assert "churn_retrain --data" in gate["run"] and "--models model" in gate["run"] and "--promote" not in gate["run"]
    pr = next(s for s in steps.values() if s.get("uses", "").startswith("peter-evans/create-pull-request@"))
    assert pr["if"] == "steps.gate.outputs.decision == 'challenger'" and pr["with"]["add-paths"] == "model", pr
    assert pr["with"]["body-path"].endswith("/report.md")
    kept = next(s for s in steps.values() if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert kept["if"] == "steps.gate.outputs.decision == 'rejected'", kept
    fail = next(s for s in steps.values() if "run" in s and "exit 3" in s["run"])
    assert fail["if"] == "steps.gate.outputs.decision == 'rejected'", fail


def test_gate_step_as_written(runs):
    "The step on this month's data (the champion's own, retrained at another time): a pass, nothing new to register."
    from churn_deploy.registry import read_registry
    r, d, out = runs("workflow")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((d / out["dir"] / "report.json").read_text())
    assert out["decision"] == report["decision"] and out["version"] == report["candidate"]["version"], out
    assert out["decision"] == "challenger" and report["holdout"]["removed_from_new_data"] == 1409, (out, report["checks"])
    reg = read_registry(d / "model")
    assert reg.challenger == out["version"] and (d / "model" / out["version"] / "holdout.json").is_file(), reg


@pytest.mark.parametrize("status,decision", [(3, "rejected"), (0, "challenger"), (1, None)])
def test_gate_step_reads_the_exit_status(tmp_path, status, decision):
    "With a stand-in churn_retrain: a rejection (3) still writes the outputs; an error (1) fails the step."
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "churn_retrain").write_text(
        "#!/bin/sh\nmkdir -p model/0.2.0+abc\n"
        f"echo '{{\"decision\": \"{decision}\"}}' > model/0.2.0+abc/report.json\n"
        "echo 'gate: ...'\necho 'report: model/0.2.0+abc/report.md'\n"
        f"exit {status}\n")
    (fake / "churn_retrain").chmod(0o755)
    (fake / "python").symlink_to(sys.executable)
    proc = gate_step(tmp_path, str(fake))
    _, err = proc.communicate(timeout=60)
    out = outputs(tmp_path)
    if decision is None:
        assert proc.returncode == status and out == {}, (proc.returncode, out)
    else:
        assert proc.returncode == 0, err
        assert out == {"decision": decision, "version": "0.2.0+abc", "dir": "model/0.2.0+abc"}, out


# ---------------------------------------------------------------- monthly exports (issue 16)

def test_month2_passes_whatever_the_row_order(runs):
    "The next month's export (same customers, a month older) passes the gate; sorted or shuffled, the same candidate and verdict."
    (a, da), (b, db) = runs("promote"), runs("month2-sorted")
    assert a.returncode == 0 and b.returncode == 0, a.stdout + a.stderr + b.stdout + b.stderr
    ra, rb = report_of(a.stdout, da), report_of(b.stdout, db)
    assert ra["passed"] and rb["passed"] and rb["decision"] == "challenger", rb["checks"]
    assert ra["candidate"]["version"] == rb["candidate"]["version"], (ra["candidate"], rb["candidate"])
    assert ra["checks"] == rb["checks"] and ra["bootstrap"] == rb["bootstrap"] and ra["metrics"] == rb["metrics"]
    for r in (ra, rb): assert r["holdout"]["removed_from_new_data"] == 1409 and r["holdout"]["overlap"] == 0, r["holdout"]
    kept = json.loads((db / "model" / rb["candidate"]["version"] / "holdout.json").read_text())
    assert kept["rows_sha256"] == rb["holdout"]["rows_sha256"] and len(kept["customer_ids"]) == 1409  # the same frozen holdout


def test_rejected_then_reconsidered_has_one_role_and_both_reports(runs):
    "A rejected candidate run again with a looser gate becomes the challenger only, and its first report is kept."
    from churn_deploy.registry import read_registry
    r, d = runs("reconsidered")
    first, second = r.stdout.split("====\n")
    assert "status 3" in first and "decision: rejected" in first and r.returncode == 0, r.stdout + r.stderr
    (gate,) = [l for l in first.splitlines() if l.startswith("gate: ")]
    assert re.fullmatch(r"gate: FAIL \(failed: AUC difference -0\.\d{4,} >= \+0\.0100\d*\)", gate), gate  # the values compared
    report = report_of(second, d)
    v = report["candidate"]["version"]
    reg = read_registry(d / "model")
    assert reg.challenger == v and v not in reg.rejected, reg
    assert report["earlier_reports"] == ["report-1.md"] and "earlier reports on this version kept: report-1.md" in second
    assert json.loads((d / "model" / v / "report-1.json").read_text())["decision"] == "rejected"
    assert {"report-1.md", "roc-1.png", "calibration-1.png", "report.md"} <= set(os.listdir(d / "model" / v))


def test_missing_holdout_source_names_it(tmp_path, data_csv):
    "Without the champion's CSV, --data month2.csv says which file (and sha256) the holdout needs and where it looked."
    from churn_deploy.data import file_sha256, read_raw
    month2 = tmp_path / "month2.csv"
    month_older(read_raw(data_csv)).to_csv(month2, index=False)
    shutil.copytree(MODELS, tmp_path / "model")
    before = files(tmp_path / "model")
    env = {k: v for k, v in env_for(data_csv).items() if k != "CHURN_DATA"}
    env.update(CHURN_CACHE_DIR=str(tmp_path / "cache"), CHURN_DATA_URL=(tmp_path / "nowhere.csv").as_uri())
    r = subprocess.run([script("churn_retrain"), "--models", str(tmp_path / "model"), "--data", str(month2)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"{ERROR}the champion's holdout comes from {data_csv.name} (sha256 {file_sha256(data_csv)}), "
                           f"which is not here: looked at --data {month2} (sha256 {file_sha256(month2)[:12]}…); "
                           f"the cache {tmp_path / 'cache' / data_csv.name} (no such file); the download from "), line
    assert "pass --data" not in line and files(tmp_path / "model") == before, line


# ---------------------------------------------------------------- quick refusals, and the gate's guards without training

@pytest.mark.parametrize("case", ["no --data", "missing file", "empty file"])
def test_bad_arguments_refused_before_the_training_libraries(case, tmp_path, data_csv):
    "churn_retrain's front door (retrain_cli) refuses these with numpy, pandas, scikit-learn and matplotlib unimportable."
    args, _, expected = _case_files(tmp_path, data_csv)[case]
    entry = tmp_path / "churn_retrain_blocked.py"
    entry.write_text("import sys; sys.modules.update(numpy=None, pandas=None, sklearn=None, matplotlib=None, pyarrow=None, scipy=None)\n"
                     "from churn_deploy.retrain_cli import churn_retrain\nchurn_retrain()\n")
    r = subprocess.run([sys.executable, str(entry), "--models", str(MODELS), *args], capture_output=True, text=True,
                       timeout=120, env=env_for(data_csv))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and expected in lines[0], r.stderr


def test_gate_guards_without_training(data_csv):
    "The gate's guards on the committed model, no training (so no AVX2) needed: the same model is 'unchanged', "
    "holdout customers in training reject it, a failed behaviour test rejects it, a different passing model is the challenger."
    from churn_deploy.data import load_churn_data
    from churn_deploy.predict import ChurnModel, load_model
    from churn_deploy.retrain import champion_holdout, compare, decide, file_holdout, gate_checks
    champion = load_model(champion_dir())
    ho = champion_holdout(champion.meta, data_csv, champion_dir())
    df = load_churn_data(data_csv)
    rest = df[~df.customerid.isin(ho.df.customerid)]
    itself, _ = compare(champion, champion, ho, rest, resamples=50)
    assert (itself["decision"], itself["passed"], itself["candidate"]["identical_to_champion"]) == ("unchanged", True, True)
    assert itself["holdout"]["overlap"] == 0
    # customers the candidate trained on, used as the holdout: the overlap guard alone fails
    seen, _ = compare(champion, champion, file_holdout(data_csv), df, resamples=50)  # the whole file: most of it trains
    assert [c["check"] for c in seen["checks"] if not c["passed"]] == ["holdout customers in training"]
    assert seen["decision"] == "rejected"
    # another model (one weight moved a little): not identical, passes, becomes the challenger; promoted with --promote
    w = champion.meta["weights"]
    nudged = ChurnModel(w["intercept"] + 0.01, w["coef"], {**champion.meta, "weights_sha256": "another", "version": "0.0.1+nudged"})
    nudged.sha256 = "0" * 64  # as load_model sets it: the model.json's digest
    other, _ = compare(champion, nudged, ho, rest, resamples=50)
    assert (other["decision"], other["candidate"]["identical_to_champion"]) == ("challenger", False), other["checks"]
    assert compare(champion, nudged, ho, rest, promote=True, resamples=50)[0]["decision"] == "promoted"
    # a model that scores month-to-month below two-year: the behaviour guard rejects it
    coef = {**w["coef"], "contract=month-to-month": -3.0, "contract=two_year": 3.0}
    broken = ChurnModel(w["intercept"], coef, {**champion.meta, "weights_sha256": "broken", "version": "0.0.1+broken"})
    broken.sha256 = "1" * 64
    bad, _ = compare(champion, broken, ho, rest, resamples=50)
    assert "behaviour tests failed" in [c["check"] for c in bad["checks"] if not c["passed"]] and bad["decision"] == "rejected"
    # the decision is the report's numbers alone: each threshold, edited, flips it
    for key, value in (("min_auc_diff", 0.001), ("max_brier_worse", -0.001), ("min_ci_low", 0.001)):
        strict = {**other, "thresholds": {**other["thresholds"], key: value}}
        assert not all(c["passed"] for c in gate_checks(strict)) and decide(strict) == "rejected", key
