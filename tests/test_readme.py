"""The README, tried as a newcomer would: its examples are run and compared with what the commands
really print, its figures are read back from the committed model, and the setup it asks for after
cloning leaves the work tree as clean as `.ci/run` requires."""
import json, os, re, shutil, subprocess

import pytest

from conftest import BIN, HEADER, ROOT, ROW, script

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    "The text of the README's section `## title` (up to the next heading of level 1 or 2)."
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#{{1,2}} |\Z)", README, re.M | re.S)
    assert m, f"no section '## {title}' in the README"
    return m.group(1)


def blocks(text: str, lang: str | None = None) -> list[str]:
    "Fenced code blocks of `text` (only those tagged `lang`, when given)."
    return [b for tag, b in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if lang is None or tag == lang]


def git(*args, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, **kw)


# ---------------------------------------------------------------- after cloning

def test_install_hooks_leaves_the_tree_clean(tmp_path):
    "`uv run nbdev_install_hooks` (README, dev container) writes .gitattributes and .gitconfig: they are committed as written."
    assert "nbdev_install_hooks" in README
    tracked = git("ls-files", ".gitattributes", ".gitconfig", cwd=ROOT).stdout.split()
    assert sorted(tracked) == [".gitattributes", ".gitconfig"], f"not committed: {tracked}"
    repo, home = tmp_path / "clone", tmp_path / "home"
    repo.mkdir(); home.mkdir()
    for name in (".gitattributes", ".gitconfig", ".gitignore"): shutil.copy(ROOT / name, repo / name)
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "."], [*ident, "commit", "-q", "-m", "clone"]):
        r = git(*cmd, cwd=repo, env=env)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([script("nbdev_install_hooks")], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git("status", "--porcelain", cwd=repo, env=env).stdout == "", "nbdev_install_hooks changed the tree"
    assert git("config", "--local", "include.path", cwd=repo, env=env).stdout.strip() == "../.gitconfig"
    attr = git("check-attr", "merge", "--", "nbs/00_data.ipynb", cwd=repo, env=env).stdout.strip()
    assert attr.endswith("merge: nbdev-merge"), attr
    merge = git("config", "merge.nbdev-merge.driver", cwd=repo, env=env).stdout
    assert merge.startswith("nbdev_merge "), merge


# ---------------------------------------------------------------- what the examples print

def test_quick_start_says_where_the_server_listens():
    "The server binds all interfaces; the README says so, and where to point a browser."
    from churn_deploy.config import PORT, Settings
    host = Settings.model_fields["host"].default
    (quick,) = [b for b in blocks(section("Quick start"), "bash") if "churn_serve" in b]
    line = next(l for l in quick.splitlines() if "churn_serve" in l)
    assert f"{host}:{PORT}" in line and f"http://127.0.0.1:{PORT}" in line, line
    service = next(l for b in blocks(section("The service"), "bash") for l in b.splitlines() if l.strip().endswith("one worker"))
    assert f"{host}:{PORT}" in service, service


def _same_output(got: str, expected: str):
    "Line by line and field by field; numbers equal to 1e-12, the rest exactly."
    got_lines, exp_lines = got.strip().splitlines(), expected.strip().splitlines()
    assert len(got_lines) == len(exp_lines), (got, expected)
    for g, e in zip(got_lines, exp_lines):
        gf, ef = g.split(","), e.split(",")
        assert len(gf) == len(ef), (g, e)
        for a, b in zip(gf, ef):
            if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", b): assert abs(float(a) - float(b)) <= 1e-12, (g, e)
            else: assert a == b, (g, e)


def test_churn_score_example(tmp_path, data_csv):
    "The batch-scoring commands, run as written (from a copy of the data), print what the README shows."
    from churn_deploy.config import DATA_FILE
    sec = section("Batch scoring")
    (cmds,) = [b for b in blocks(sec, "bash") if "churn_score" in b]
    (shown,) = [b for b in blocks(sec, "") if "churn_probability" in b]
    (tmp_path / DATA_FILE).symlink_to(data_csv)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHURN_MODEL_DIR": str(ROOT / "model")}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", cmds.replace("uv run ", "")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _same_output(r.stdout, shown)


def _train_error(tmp_path, text: str) -> str:
    (tmp_path / "in.csv").write_text(text)
    r = subprocess.run([script("churn_train"), "--data", str(tmp_path / "in.csv"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and not (tmp_path / "m").exists(), r.stdout
    return r.stderr.strip()


def test_churn_train_error_examples(tmp_path):
    "Each `churn_train: error:` line in the README is exactly what churn_train prints for the file it describes."
    shown = [b.strip() for b in blocks(section("Training"), "") if b.startswith("churn_train: error:")]
    assert len(shown) == 2, shown
    for line in shown:
        if m := re.search(r"too little data to train: (\d+) rows \((\d+) churned, (\d+) stayed\)", line):
            n, churned, stayed = map(int, m.groups())
            assert n == churned + stayed
            rows = [ROW.replace("7590-VHVEG", f"{i:04d}-TEST", 1).removesuffix(",No") + (",Yes" if i < churned else ",No")
                    for i in range(n)]
            text = "\n".join([HEADER, *rows]) + "\n"
        else:
            assert "column 'Contract', line 3: 'Weekly'" in line, line
            text = f"{HEADER}\n{ROW}\n{ROW.replace('Month-to-month', 'Weekly')}\n"
        assert _train_error(tmp_path, text) == line


def test_training_facts_match_the_code_and_model():
    "The minimum training size and the command that regenerates model/ agree with the code and the committed model."
    from datetime import datetime
    sec = section("Training")
    code = (ROOT / "churn_deploy" / "train.py").read_text()
    min_rows, min_class = map(int, re.search(r"^MIN_ROWS, MIN_PER_CLASS = (\d+), (\d+)", code, re.M).groups())
    assert f"at least {min_rows} rows, and at least {min_class} customers who churned and {min_class} who stayed" in sec
    meta = json.loads((ROOT / "model" / "model.json").read_text())
    (cmd,) = [l for b in blocks(sec, "bash") for l in b.splitlines() if "SOURCE_DATE_EPOCH=" in l]
    epoch = int(re.search(r"SOURCE_DATE_EPOCH=(\d+)", cmd).group(1))
    assert epoch == int(datetime.fromisoformat(meta["created_at"]).timestamp()), (cmd, meta["created_at"])
    assert meta["created_at"][:19] in cmd and cmd.split("#")[0].split()[-2:] == ["--out", "model"], cmd


# ---------------------------------------------------------------- without the data

@pytest.mark.parametrize("deselect", [False, True], ids=["all", "-m not data"])
def test_without_the_data_the_run_fails_in_one_line(tmp_path, deselect):
    "No data and no network: data-bound tests skip with one line each, and the run fails saying why (or passes without them)."
    ids = ["tests/test_readme.py::test_quick_start_says_where_the_server_listens",
           "tests/test_train_cli.py::test_retraining_reproduces_committed_model"]
    env = {**os.environ, "CHURN_DATA": str(tmp_path / "missing.csv"), "HOME": str(tmp_path),
           "CHURN_DATA_URL": "http://127.0.0.1:9/nothing"}
    env.pop("CHURN_CACHE_DIR", None)
    r = subprocess.run([script("pytest"), "-q", "-rs", "-p", "no:cacheprovider", *ids, *(["-m", "not data"] if deselect else [])],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout
    if deselect:
        assert r.returncode == 0 and "1 passed, 1 deselected" in r.stdout, r.stdout
        return
    assert r.returncode == 1 and "1 passed, 1 skipped" in r.stdout, r.stdout
    (line,) = [l for l in r.stdout.splitlines() if l.startswith("FAILED: ")]
    assert "1 test(s) skipped for want of the Telco churn CSV" in line and str(tmp_path / "missing.csv") in line, line
    assert "set CHURN_DATA=" in line and str(tmp_path / ".cache" / "churn-deploy") in line, line
