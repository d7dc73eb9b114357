"""The runbook drill: docs/operations.md, run as written, block by block, against a real `churn_serve` with two workers
under a steady load. Three months made from the course's data: month 1 is the file itself, month 2 the same customers a
month older (tenure + 1, total charges grown by a month's charge, rows in another order), month 3 two months older.
Serve with the prediction log on, score month 1 through the service, check drift, retrain on month 2 (it passes the
gate), shadow month 3, read the live A/B on month 3's outcomes, canary, promote and roll back: 0 failed requests."""
import os, re, shutil, subprocess, time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import BIN, ROOT, free_port
from conftest import server_env, stop, wait_until_up
from support import Load, month_older

RUNBOOK = ROOT / "docs" / "operations.md"
KEY = "drill-secret-0123456789abcdef"


def runbook_blocks() -> list[str]:
    "The runbook's bash blocks, in order."
    return re.findall(r"^```bash\n(.*?)^```", RUNBOOK.read_text(), re.M | re.S)


class Shell:
    "Runs blocks one after another like one terminal: each block sees the variables the ones before it exported."
    def __init__(self, cwd: Path, env: dict):
        self.cwd, self.env = cwd, env

    def run(self, block: str, timeout: float = 600) -> subprocess.CompletedProcess:
        envfile = self.cwd / ".drill-env"
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{block}\nenv -0 > {envfile}"], cwd=self.cwd, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode == 0:
            self.env = dict(kv.split("=", 1) for kv in envfile.read_text().split("\0") if "=" in kv)
        return r

    def start(self, block: str, log_dir: Path) -> subprocess.Popen:
        "A long-running block (the service), in its own process group."
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "stdout.log", "wb") as out, open(log_dir / "stderr.log", "wb") as err:
            return subprocess.Popen(["bash", "-euo", "pipefail", "-c", block], cwd=self.cwd, env=self.env,
                                    stdout=out, stderr=err, start_new_session=True)


def _served(url: str) -> dict:
    return httpx.get(url + "/model", timeout=10).json()


def _wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(): return
        time.sleep(0.25)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def test_the_runbook_end_to_end(tmp_path, data_csv):
    blocks = runbook_blocks()
    setup, serve, client1, drift, retrain, client3, performance, canary, promote, rollback = blocks  # the page's steps
    assert "churn_serve" in serve and "--workers 2" in serve, serve

    work = tmp_path / "drill"
    work.mkdir()
    shutil.copytree(ROOT / "model", work / "model")  # the checkout's model/, which the first block copies to runs/
    raw = pd.read_csv(data_csv, dtype=str, keep_default_na=False)
    months = {1: raw, 2: month_older(raw, 1, seed=2), 3: month_older(raw, 2, seed=3)}
    for m, df in months.items(): df.to_csv(work / f"month{m}.csv", index=False)
    assert set(months[2]["customerID"]) == set(raw["customerID"]) and not months[2]["customerID"].equals(raw["customerID"])
    outcomes = work / "outcomes.csv"
    seen = date.today() + timedelta(days=20)
    pd.DataFrame({"customer_id": months[3]["customerID"], "churned": months[3]["Churn"], "date": seen.isoformat()}).to_csv(outcomes, index=False)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PORT=str(port), URL=url, CHURN_REGISTRY_POLL="0.5",
                     CHURN_PREDICTION_LOG_KEY=KEY, CHURN_DATA=str(data_csv), MONTH1=str(work / "month1.csv"), MONTH2=str(work / "month2.csv"),
                     MONTH3=str(work / "month3.csv"), OUTCOMES=str(outcomes))
    sh = Shell(work, env)

    r = sh.run(setup)
    assert r.returncode == 0, r.stderr
    models = Path(sh.env["CHURN_MODEL_DIR"])
    assert models == work / "runs" / "models" and (models / "model.json").is_file()

    proc = sh.start(serve.replace("churn_serve", "churn_serve --host 127.0.0.1", 1), tmp_path / "logs")
    try:
        wait_until_up(url, proc, tmp_path / "logs" / "stderr.log", 60)
        champion = _served(url)["served"]["champion"]["version"]
        with Load(url, threads=4, every=0.05) as load:
            # 1. month 1 through the service, with its ids
            r = sh.run(client1)
            assert r.returncode == 0, r.stderr
            scored = pd.read_csv(work / "runs" / "month1-scores.csv", dtype=str)
            assert len(scored) == len(raw) and set(scored["customerID"]) == set(raw["customerID"])

            # 2. drift on what the service logged: month 1 is the training data again
            r = sh.run(drift)
            assert r.returncode == 0 and (work / "runs" / "drift.md").is_file(), r.stdout + r.stderr

            # 3. retrain on month 2: the holdout's customers are taken out, the gate passes, a shadow challenger
            r = sh.run(retrain)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "gate: PASS" in r.stdout and "1,409 of them removed from the new data before training" in r.stdout, r.stdout
            candidate = re.search(r"^candidate (\S+)", r.stdout, re.M).group(1)
            _wait_for("the service follows the new registry", lambda: (_served(url)["served"]["challenger"] or {}).get("version") == candidate)
            sh.env["CANDIDATE"] = candidate

            # 4. month 3 in shadow
            r = sh.run(client3)
            assert r.returncode == 0, r.stderr

            # 5. the live A/B on month 3's outcomes: both models, their difference, an interval and a recommendation
            r = sh.run(performance)
            assert r.returncode == 0, r.stdout + r.stderr
            out = r.stdout
            assert candidate in out and re.search(r"\b(promote|keep watching|reject)\b", out), out

            # 6. canary, then promote; 7. roll back
            r = sh.run(canary)
            assert r.returncode == 0, r.stderr
            _wait_for("canary answers", lambda: any(role == "challenger" for *_, role in load.log[-200:]))
            r = sh.run(promote)
            assert r.returncode == 0, r.stderr
            _wait_for("the candidate answers as champion",
                      lambda: [v for _, s, v, role in load.log[-20:]] and all(v == candidate for _, s, v, role in load.log[-20:]))
            r = sh.run(rollback)
            assert r.returncode == 0, r.stderr
            _wait_for("the old champion is back", lambda: all(v == champion for _, s, v, role in load.log[-20:]))
        failed = [x for x in load.log if x[1] != 200]
        assert load.log and not failed, f"{len(failed)} of {len(load.log)} requests failed: {failed[:5]}"
    finally:
        assert stop(proc) == 0
