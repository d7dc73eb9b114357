"""The README and the guides in docs/, tried as a newcomer would: their examples are run and compared with what the
commands really print, their figures are read back from the committed model, the generated configuration reference
agrees with the Settings class, every link between the pages resolves, and the setup they ask for after cloning
leaves the work tree as clean as `.ci/run` requires."""
import json, os, re, shutil, subprocess

import pytest

from conftest import BIN, HEADER, ROOT, ROW, script
from support import blocks, guides, section, subsection  # shared with other test modules

README = (ROOT / "README.md").read_text()
README_MAX_LINES = 300  # issue 17: the README is a front page; the rest lives in the guides it links


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
    attr = git("check-attr", "merge", "--", "nbs/02_data.ipynb", cwd=repo, env=env).stdout.strip()
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
    "The batch-scoring commands, run as written (with CHURN_DATA set), print what the README shows."
    sec = section("Batch scoring")
    (cmds,) = [b for b in blocks(sec, "bash") if "churn_score" in b]
    (shown,) = [b for b in blocks(sec, "") if "churn_probability" in b]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHURN_MODEL_DIR": str(ROOT / "model"),
           "CHURN_DATA": str(data_csv)}
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
    "No data and no network: the run stops before its first test with one line saying why (or passes without the data tests)."
    ids = ["tests/test_readme.py::test_quick_start_says_where_the_server_listens",
           "tests/test_train_cli.py::test_retraining_reproduces_committed_model"]
    env = {**os.environ, "CHURN_DATA": str(tmp_path / "missing.csv"), "HOME": str(tmp_path),
           "CHURN_DATA_URL": "http://127.0.0.1:9/nothing"}
    env.pop("CHURN_CACHE_DIR", None)
    r = subprocess.run([script("pytest"), "-q", "-rs", "-p", "no:cacheprovider", *ids, *(["-m", "not data"] if deselect else [])],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout
    if deselect:
        # without the data tests the run passes (under pytest-xdist the workers deselect, so the summary has no count of them)
        assert r.returncode == 0 and "1 passed" in r.stdout and "need the Telco" not in r.stdout + r.stderr, r.stdout
        return
    assert r.returncode == 4 and "passed" not in r.stdout, r.stdout
    line = next(l for l in (r.stdout + r.stderr).splitlines() if "need the Telco churn CSV" in l)
    assert str(tmp_path / "missing.csv") in line and "-m 'not data'" in line, line
    assert "set CHURN_DATA=" in line and str(tmp_path / ".cache" / "churn-deploy") in line, line


# ---------------------------------------------------------------- following an example leaves the tree clean

MUTATES_MODELS = re.compile(r"\bchurn_retrain\b|\bchurn_models\s+(init|add|challenger|promote|rollback|route|prune)\b")
WRITE_FLAGS = re.compile(r"--(?:out|output|report|prediction_log|prediction-log)\s+(\S+)")


def _written_paths(block: str) -> list[str]:
    "The files and directories a bash block writes: command outputs, redirections and copies."
    out = []
    for line in block.splitlines():
        line = line.split(" #")[0]
        if line.lstrip().startswith("#"): continue
        out += WRITE_FLAGS.findall(line)
        out += re.findall(r"(?:^|(?<=[\s)]))>>?\s*(\S+)", line)
        out += [m.split()[-1] for m in re.findall(r"\bcp\s+(?:-\w+\s+)*([^;&|]+)", line)]
        out += re.findall(r"\bmkdir\s+(?:-p\s+)?(\S+)", line)
    return [p.strip("\"');") for p in out]


def _ignored_or_outside(path: str) -> bool:
    if path in ("/dev/null", "/dev/stderr") or path.startswith(("/tmp/", "$TMPDIR", '"$TMPDIR')): return True
    rel = re.sub(r"^\$PWD/", "", path)
    return rel == "runs" or rel.startswith("runs/")


def test_every_example_writes_only_where_git_ignores():
    "Every bash block of the README and docs/ writes under runs/ (git-ignored) or a temporary place, and changes models only in a copy."
    assert git("check-ignore", "-q", "runs/x.csv", cwd=ROOT).returncode == 0, "runs/ is not git-ignored"
    checked = 0
    for name, text in guides().items():
        on_a_copy = False  # an earlier block of the page pointed CHURN_MODEL_DIR at a copy in runs/
        for block in blocks(text, "bash"):
            for path in _written_paths(block):
                checked += 1
                # the one exception, regenerating model/ byte for byte, is proven by test_retraining_reproduces_committed_model
                if path == "model" and "SOURCE_DATE_EPOCH=" in block: continue
                assert _ignored_or_outside(path), f"{name}: an example writes {path!r}, which git would see:\n{block}"
            on_a_copy = on_a_copy or bool(re.search(r"export CHURN_MODEL_DIR=\$PWD/runs/", block))
            if MUTATES_MODELS.search(block):
                remote = "fly ssh console" in block  # runs on the platform's machines, not in this checkout
                safe = "--models runs/" in block or re.search(r"CHURN_MODEL_DIR=\$PWD/runs/", block) or on_a_copy or remote
                assert safe, f"{name}: an example changes the model directory without working on a copy in runs/:\n{block}"
    assert checked >= 20, checked  # the scan found the examples' outputs, so it can fail


def test_written_paths_finds_what_a_block_writes():
    "The scanner sees flags, redirections, copies and mkdir, and lets 2>&1 and <(...) be."
    block = ("uv run churn_score --input a.csv --output out.csv --prediction_log p.jsonl 2>&1\n"
             "cp -r model models && mkdir -p runs\necho x > note.md; cat a >> runs/b  # > not.this\n"
             "uvx pip-audit -r <(uv export)\n")
    assert _written_paths(block) == ["out.csv", "p.jsonl", "models", "runs", "note.md", "runs/b"]
    assert not _ignored_or_outside("out.csv") and _ignored_or_outside("$PWD/runs/models") and _ignored_or_outside("/tmp/x")


def test_the_monitoring_example_leaves_git_status_clean(data_csv):
    "The README's 'Monitoring offline' commands, run from the repository's root as a reader would, leave the tree as it was."
    sec = subsection("Monitoring offline")
    commands = "\n".join(blocks(sec, "bash")).replace("uv run ", "").replace("$(openssl rand -hex 24)", "0123456789abcdef0123456789abcdef")
    before = git("status", "--porcelain", "--ignored=no", cwd=ROOT).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CHURN_DATA": str(data_csv), "CHURN_MODEL_DIR": str(ROOT / "model")}
    try:
        r = subprocess.run(["bash", "-uo", "pipefail", "-c", commands], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 2), r.stderr  # drift warns: exit 2 is the example's own outcome
        assert (ROOT / "runs" / "drift.md").is_file() and (ROOT / "runs" / "quality.md").is_file()
        assert git("status", "--porcelain", "--ignored=no", cwd=ROOT).stdout == before
    finally:
        for name in ("month.csv", "fiber.csv", "scored.csv", "month.jsonl", "drift.md", "outcomes.csv", "quality.md"):
            (ROOT / "runs" / name).unlink(missing_ok=True)
        for d in ("drift-plots", "quality-plots"): shutil.rmtree(ROOT / "runs" / d, ignore_errors=True)


def test_every_key_the_docs_set_is_one_the_service_accepts():
    "Each CHURN_API_KEY or api-key an example sets (a literal, or `$(openssl rand -hex N)`) passes the service's key check."
    from churn_deploy.config import key_problem
    found = []
    for name, text in guides().items():
        for block in blocks(text, "bash"):
            for value in re.findall(r"(?:CHURN_API_KEY|api-key)=(\"?\$\(openssl rand -hex \d+\)\"?|[^\s\"$]+)", block):
                n = re.search(r"rand -hex (\d+)", value)
                key = "0" * (2 * int(n.group(1))) if n else value
                found.append(value)
                assert key_problem(key) is None, f"{name}: the example key {value!r} would be refused: {key_problem(key)}"
    assert len(found) >= 3, found  # the docker, Fly and Kubernetes examples
    assert key_problem("change-me") is not None  # the check can refuse what the old README showed


# ---------------------------------------------------------------- the front page and its guides

def slug(heading: str) -> str:
    "GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    "The anchors of a page's headings (outside code blocks)."
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def test_slug_and_anchors():
    assert slug("The test suite's time") == "the-test-suites-time" and slug("Fly.io") == "flyio"
    assert anchors("# A\n```bash\n# not a heading\n```\n## Load test before going live\n") == {"a", "load-test-before-going-live"}


def test_readme_is_a_front_page():
    "The README stays short and links every guide in docs/; every guide links back to it."
    n = len(README.splitlines())
    assert n <= README_MAX_LINES, f"the README has {n} lines; move the detail into a guide in docs/"
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 8, pages
    for name in pages:
        assert f"](docs/{name})" in README or f"](docs/{name}#" in README, f"the README does not link docs/{name}"
        assert "](../README.md" in (ROOT / "docs" / name).read_text(), f"docs/{name} does not link back to the README"
    for needed in ("docker build", "nbdev_export", "](docs/desk.png)", "uv run churn_serve", "| notebook | module |"):
        assert needed in README, needed


def test_every_link_between_the_pages_resolves():
    "Each relative link of the README and docs/ names a file that exists, and its #anchor a heading of that page."
    checked = 0
    for name, text in guides().items():
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target): continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            page = (ROOT / name).parent / path if path else ROOT / name
            assert page.resolve().exists(), f"{name}: link to {target!r}, which does not exist"
            if anchor:
                assert anchor in anchors(page.read_text()), f"{name}: link to {target!r}, whose page has no such heading"
            checked += 1
    assert checked >= 30, checked


def test_configuration_page_is_generated_from_the_settings():
    "docs/configuration.md holds exactly what settings_reference renders: a new, renamed or changed setting fails here."
    from churn_deploy.config import Settings, reference_in, settings_reference
    page = (ROOT / "docs" / "configuration.md").read_text()
    regenerate = 'uv run python -c "from churn_deploy.config import write_settings_reference; write_settings_reference()"'
    assert reference_in(page) == settings_reference(), f"docs/configuration.md is out of date: run `{regenerate}`"
    assert regenerate in page and regenerate in (ROOT / "docs" / "development.md").read_text()
    for name in Settings.model_fields: assert f"| `CHURN_{name.upper()}` |" in reference_in(page), name


def test_every_churn_variable_the_docs_name_is_a_setting():
    "A CHURN_* name in the README or docs/ is a setting (or one of the few named on purpose), so a renamed setting fails here."
    from churn_deploy.config import Settings
    known = {f"CHURN_{n.upper()}" for n in Settings.model_fields}
    on_purpose = {"CHURN_WORKRES",  # the typo the docs show being warned about
                  "CHURN_FUZZ_EXAMPLES"}  # read by tests/test_fuzz.py, not by the service
    named = {m for text in guides().values() for m in re.findall(r"\bCHURN_[A-Z0-9_]*[A-Z0-9]\b", text)}
    assert len(named) >= 20, named
    assert named - known - on_purpose == set(), f"the docs name variables that are no setting: {sorted(named - known - on_purpose)}"


FILE_KEYS = ("lib_path", "nbs_path", "doc_path", "readme_nb")  # nbdev settings that name a file or directory


def test_settings_ini_names_only_files_that_exist():
    "Every path settings.ini gives nbdev exists (readme_nb is relative to nbs_path), and the docs say how the site is built."
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    named = {k: d[k] for k in FILE_KEYS if k in d}
    assert {"lib_path", "nbs_path"} <= set(named), named
    for key, value in named.items():
        where = ROOT / d.get("nbs_path", "nbs") / value if key == "readme_nb" else ROOT / value
        assert where.exists(), f"settings.ini: {key} = {value}, which does not exist"
    dev = (ROOT / "docs" / "development.md").read_text()
    assert "nbdev_docs" in dev and "Quarto" in dev
