"""The retention desk as real processes: `churn_campaign` on real files and bad ones, and the page in a real
headless browser (Playwright driving Debian's chromium) against a live server, with and without an API key.

The server is a real `churn_serve`: `create_app` adds the desk's routes and opens the page's exact paths without a key.
Before them, fast checks without a server: the page's files and the offer catalogue (`churn_deploy/assets/`) parse and
ship in the wheel, the desk imports no later module, and second, independent checks of two properties the notebooks
also check: the catalogue's rules (`13_offers`) and the plan's optimality (`27_campaign`). The browser tests share one
server and one browser; they load customer files made from the real export (2,000 and 10,000 rows) as a person would.
"""
import csv, io, json, os, shutil, subprocess, sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import HEADER, ROOT, ROW, assert_one_line_error, run, running_server, script
from churn_deploy.data import DOMAINS, FEATURES, SAMPLE_CUSTOMER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "desk-key-5f0c2a9e81b4d7c3"  # matches conftest's SECRETS pattern: the log scan proves no server logs it


# ---------------------------------------------------------------- the serving side imports no training library

def test_desk_imports_with_the_serve_set_only():
    "serve imports desk and offers: with numpy, pandas and scikit-learn unimportable, they and the what-if engine work."
    code = ("import sys; sys.modules.update(numpy=None, pandas=None, sklearn=None, pyarrow=None)\n"
            "import churn_deploy.offers as o, churn_deploy.desk, churn_deploy.serve\n"
            "from churn_deploy.predict import load_model\n"
            "from churn_deploy.data import SAMPLE_CUSTOMER\n"
            "print(len(o.whatif(load_model('model'), SAMPLE_CUSTOMER)['offers']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and int(r.stdout) > 5, r.stderr[-2000:]


def test_desk_imports_no_later_module():
    "The desk's router comes before the app: importing it loads neither serve nor the campaign planner (nor anything they pull in)."
    code = ("import sys, churn_deploy.desk\n"
            "print(sorted(m for m in sys.modules if m in ('churn_deploy.serve', 'churn_deploy.run', 'churn_deploy.campaign', "
            "'churn_deploy.score', 'churn_deploy.monitor', 'numpy', 'pandas')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


# ---------------------------------------------------------------- the page's files, checked without a server

ASSETS = ROOT / "churn_deploy" / "assets"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def js_syntax_error(source: str) -> str | None:
    "esprima's message for the first syntax error in a script, or None when it parses."
    import esprima
    try: esprima.parseScript(source)
    except esprima.Error as e: return str(e)
    return None


def html_problems(text: str) -> list[str]:
    "Why `text` is not well-formed HTML: an end tag that closes another element, an element never closed, an id used twice, a label for no field."
    from html.parser import HTMLParser
    problems, stack, ids, fors = [], [], [], []
    class Checker(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if len(a) != len(attrs): problems.append(f"line {self.getpos()[0]}: <{tag}> repeats an attribute")
            if "id" in a: ids.append(a["id"])
            if tag == "label" and "for" in a: fors.append(a["for"])
            if tag not in VOID: stack.append((tag, self.getpos()[0]))
        def handle_startendtag(self, tag, attrs):
            if tag not in VOID: problems.append(f"line {self.getpos()[0]}: <{tag}/> is not a void element")
        def handle_endtag(self, tag):
            line = self.getpos()[0]
            if tag in VOID: problems.append(f"line {line}: </{tag}> ends a void element")
            elif not stack or stack[-1][0] != tag: problems.append(f"line {line}: </{tag}> closes <{stack[-1][0] if stack else 'nothing'}>")
            else: stack.pop()
    checker = Checker(convert_charrefs=True)
    checker.feed(text)
    checker.close()
    problems += [f"line {line}: <{tag}> is never closed" for tag, line in stack if tag not in ("html", "head", "body")]
    problems += [f"id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    problems += [f"<label for={f!r}> names no element" for f in fors if f not in ids]
    return problems


def test_desk_script_parses():
    "The page's script is a file of the package that a JavaScript parser accepts, and it is what the app serves."
    from churn_deploy.desk import DESK_JS
    source = (ASSETS / "desk.js").read_text()
    assert source == DESK_JS and "innerHTML" not in source and "eval(" not in source
    assert js_syntax_error(source) is None, js_syntax_error(source)
    # the check can fail: one bracket fewer, or one word wrong, is a syntax error
    assert js_syntax_error(source.replace("});", "}", 1)) is not None
    assert js_syntax_error(source.replace("const pct =", "const pct pct =", 1)).startswith("Line ")


def test_desk_page_is_well_formed():
    "The page as served (the template with the form filled in) and the template itself are well-formed HTML."
    from churn_deploy.desk import render_page
    page, template = render_page(), (ASSETS / "desk.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<select") == len(DOMAINS) and page.count("<form") == 1
    assert html_problems(page) == [] and html_problems(template) == []
    # the check can fail: a lost end tag, a stray one, a repeated id
    assert any("closes" in p or "never closed" in p for p in html_problems(page.replace("</fieldset>", "", 1)))
    assert any("closes <" in p for p in html_problems(page.replace("</main>", "</div></main>", 1)))
    assert html_problems(page.replace('id="e-offers"', 'id="e-tenure"')) == ["id 'e-tenure' is used twice"]


def test_desk_router_serves_the_files():
    "The router alone serves the files' own bytes at PAGE_PATHS, the page with its Content-Security-Policy, and /whatif."
    import warnings
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from churn_deploy.desk import PAGE_PATHS, render_page, router
    from churn_deploy.registry import load_served
    app = FastAPI()
    app.include_router(router)
    app.state.served = load_served(ROOT / "model")
    app.state.model = app.state.served.champion
    with TestClient(app) as client:
        page = client.get("/")
        assert page.content == render_page().encode()
        assert "script-src 'self'" in page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"
        for name in ("desk.js", "desk.css"):
            r = client.get(f"/desk/{name}")
            assert f"/desk/{name}" in PAGE_PATHS and r.content == (ASSETS / name).read_bytes(), name
        r = client.post("/whatif", json={"customer": SAMPLE_CUSTOMER})
        assert r.status_code == 200 and r.headers["x-model-role"] == "champion" and r.json()["offers"]


def test_desk_files_are_in_the_wheel(tmp_path):
    "The built wheel carries the page's files beside the code (uv_build ships the package directory whole)."
    import zipfile
    uv = shutil.which("uv")
    if uv is None: pytest.skip("needs uv to build the wheel")
    r = subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("desk.html", "desk.js", "desk.css", "offers.toml"):
        assert f"churn_deploy/assets/{name}" in names, name
        assert zipfile.ZipFile(wheel).read(f"churn_deploy/assets/{name}") == (ASSETS / name).read_bytes(), name


# ---------------------------------------------------------------- second checks of the notebooks' properties

def test_addons_only_with_internet(model_dir):
    """The catalogue's rules, checked apart from 13_offers: on random customers over every value domain, consistent
    or not, and random subsets of the default catalogue, an offer is made exactly when its conditions hold and it
    changes something, an internet add-on never without internet, and each probability is the changed customer's."""
    import random
    from churn_deploy.offers import choose_offers, load_catalogue, whatif
    from churn_deploy.predict import load_model
    model, rng, catalogue = load_model(model_dir), random.Random(17), load_catalogue()
    addons = {"onlinesecurity", "onlinebackup", "deviceprotection", "techsupport"}
    offline_lacking = offered_addon = 0
    for _ in range(3000):
        c = {f: rng.choice(DOMAINS[f]) for f in DOMAINS}
        c.update(tenure=rng.randint(0, 72), monthlycharges=round(rng.uniform(18, 120), 2), totalcharges=round(rng.uniform(0, 8000), 2))
        allowed = choose_offers(catalogue, rng.sample([o.id for o in catalogue], rng.randint(1, len(catalogue))))
        answer = whatif(model, c, allowed)
        made = {o["id"] for o in answer["offers"]}
        expected = {o.id for o in allowed if all(c[f] in vs for f, vs in o.when)
                    and (any(c[f] != v for f, v in o.set) or o.discount > 0)}
        assert made == expected, (c, made, expected)
        for o in answer["offers"]:
            if addons & set(o["set"]): assert c["internetservice"] != "no", (c, o)
            assert abs(o["churn_probability"] - model.predict_proba({**c, **o["set"]})) <= 1e-15
        lacking = c["internetservice"] == "no" and any(c[f] == "no" for f in addons)
        offline_lacking += lacking
        offered_addon += any(addons & set(o["set"]) for o in answer["offers"])
    assert offline_lacking > 300 and offered_addon > 300, (offline_lacking, offered_addon)  # both sides of the rule were tried


def test_plan_is_the_best_subset_by_brute_force():
    """The plan's optimality, checked apart from 27_campaign (its own problems, its own brute force): on small random
    problems, the planner's set fits the budget, is listed best first, and no subset that fits gains more."""
    import math, random
    from itertools import combinations
    from churn_deploy.campaign import best_targets
    rng = random.Random(2024)
    for trial in range(800):
        n = rng.randint(0, 10)
        scale = rng.choice([1, 10, 100])  # gains of a few cents make near-ties, which a sloppy comparison gets wrong
        gains = [rng.randint(-20 * scale, 50 * scale) / 100 for _ in range(n)]
        if trial % 3 == 0: costs = [3.0] * n  # one contact cost
        elif trial % 3 == 1: costs = [rng.randint(0, 900) / 100 for _ in range(n)]  # any cents, zero among them
        else: costs = [rng.choice([1.25, 2.5, 10.0, 12.75]) for _ in range(n)]
        budget = rng.randint(0, round(sum(costs) * 100) + 100) / 100
        cents, cap = [round(c * 100) for c in costs], math.floor(budget * 100 + 1e-6)
        got = best_targets(gains, costs, budget)
        assert len(set(got)) == len(got) and sum(cents[i] for i in got) <= cap, (gains, costs, budget, got)
        assert got == sorted(got, key=lambda i: (-gains[i], i)), got
        best = max(sum(gains[i] for i in s) for k in range(n + 1) for s in combinations(range(n), k)
                   if sum(cents[i] for i in s) <= cap)
        assert sum(gains[i] for i in got) == pytest.approx(best, abs=1e-9), (gains, costs, budget, got)


# ---------------------------------------------------------------- churn_campaign

TARGET_COLUMNS = ["rank", "customerID", "churn_probability", "offer", "offer_label", "offer_probability", "offer_cost", "value",
                  "cost", "expected_saved", "expected_net"]
NET = "net = save rate × ((p − p′) × value − offer cost) − call cost"


def read_targets(path: Path) -> list[dict]:
    with open(path, newline="") as f: return list(csv.DictReader(f))


def report_rows(stdout: str) -> dict[str, list[str]]:
    "The strategy rows of the printed totals: name → its numbers as printed."
    rows = {}
    for line in stdout.splitlines():
        for name in ("plan", "by probability", "at random"):
            if line.startswith(name + " "): rows[name] = line[len(name):].split()
    return rows


def money(s: str) -> float: return float(s.replace(",", ""))


def test_campaign_on_the_real_file(tmp_path, data_csv, model_dir):
    out = tmp_path / "targets.csv"
    r = run(script("churn_campaign"), "--input", str(data_csv), "--budget", "750", "--contact_cost", "2.5",
            "--output", str(out), "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    from churn_deploy.offers import CAVEAT, load_catalogue
    from churn_deploy.predict import read_metadata
    assert r.stderr.strip() == f"churn_campaign: model {read_metadata(model_dir)['version']} (the champion) of {model_dir}", r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("7,043 customers in ") and "budget 750.00, 2.50 a call, save rate 0.3" in lines[0], lines[0]
    assert f"{len(load_catalogue())} offers from the package's catalogue" in lines[0] and lines[1] == NET, lines[:2]
    assert "realised net" in lines[2] and lines[-2] == f"wrote 300 targets to {out}" and lines[-1] == CAVEAT
    rows = report_rows(r.stdout)
    assert set(rows) == {"plan", "by probability", "at random"}
    for name, nums in rows.items():  # customers, spend, churners saved, value saved, net value, realised net
        assert len(nums) == 6 and nums[0] == "300" and money(nums[1]) == 750.0, (name, nums)
    plan, by_p, rand = (money(rows[s][4]) for s in ("plan", "by probability", "at random"))
    assert plan > by_p > rand, rows

    targets = read_targets(out)
    assert len(targets) == 300 and [int(t["rank"]) for t in targets] == list(range(1, 301))
    assert list(targets[0]) == TARGET_COLUMNS + ["churned", "realised_net"]
    nets = [float(t["expected_net"]) for t in targets]
    assert nets == sorted(nets, reverse=True) and nets[-1] > 0
    assert abs(sum(nets) - plan) <= 0.5 + 1e-9 * plan  # the printed total is the list's, rounded to dollars
    assert abs(sum(float(t["realised_net"]) for t in targets) - money(rows["plan"][5])) <= 0.5

    # each target's figures, recomputed with scikit-learn's Pipeline on the customer and on the changed customer:
    # the offer is the desk's first (the largest net value), the value the one formula
    from churn_deploy.data import load_churn_data
    from churn_deploy.offers import whatif
    from churn_deploy.predict import load_model, load_pipeline
    pipeline, model = load_pipeline(model_dir), load_model(model_dir)
    df = load_churn_data(data_csv).set_index("customerid")
    for t in targets[::37]:
        c = df.loc[t["customerID"], FEATURES].to_dict()
        first = whatif(model, c, contact_cost=2.5)["offers"][0]
        assert first["id"] == t["offer"] and first["label"] == t["offer_label"], (t, first)
        p, q = pipeline.predict_proba([c, {**c, **first["set"]}])[:, 1]
        assert abs(float(t["churn_probability"]) - p) <= 1e-12 and abs(float(t["offer_probability"]) - q) <= 1e-12, t
        value, cost = 12 * c["monthlycharges"], float(t["offer_cost"])
        assert float(t["value"]) == pytest.approx(value) and float(t["cost"]) == 2.5 and cost == pytest.approx(first["cost"])
        assert float(t["expected_net"]) == pytest.approx(0.3 * ((p - q) * value - cost) - 2.5, abs=1e-9)
        assert float(t["expected_net"]) == pytest.approx(first["net_value"], abs=1e-9)  # the page's number
        y = df.loc[t["customerID"], "churn"]
        assert int(float(t["churned"])) == y
        assert float(t["realised_net"]) == pytest.approx(0.3 * (y * (p - q) / p * value - cost) - 2.5, abs=1e-9)


def small_file(tmp_path: Path, data_csv: Path, n: int, extra: dict[str, list[str]] | None = None) -> Path:
    "The first `n` customers of the real file without the Churn column, plus `extra` columns."
    with open(data_csv, newline="") as f:
        rows = list(csv.reader(f))[:n + 1]
    header = rows[0][:-1] + list(extra or {})
    body = [r[:-1] + [col[i] for col in (extra or {}).values()] for i, r in enumerate(rows[1:])]
    path = tmp_path / f"customers{n}.csv"
    with open(path, "w", newline="") as f: csv.writer(f).writerows([header, *body])
    return path


def test_campaign_value_and_cost_columns_and_offers(tmp_path, data_csv, model_dir):
    "A column of values, a column of costs (the exact knapsack), some of the offers; no Churn column, no realised values."
    n = 24
    costs = ["4" if i % 3 else "7.5" for i in range(n)]
    path = small_file(tmp_path, data_csv, n, {"LTV": [str(1500 + 50 * i) for i in range(n)], "CallCost": costs})
    out = tmp_path / "t.csv"
    only = "two_year_contract,free_tech_support"
    r = run(script("churn_campaign"), "--input", str(path), "--value_column", "LTV", "--cost_column", "CallCost",
            "--budget", "31", "--only", only, "--output", str(out), "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    assert "realised" not in r.stdout and "value = LTV column" in r.stdout and "per-customer costs" in r.stdout
    assert "2 offers from the package's catalogue" in r.stdout
    targets = read_targets(out)
    assert targets and sum(float(t["cost"]) for t in targets) <= 31
    assert {t["offer"] for t in targets} <= set(only.split(","))
    by_id = {row[0]: i for i, row in enumerate(list(csv.reader(open(path)))[1:])}
    for t in targets:
        i = by_id[t["customerID"]]
        assert float(t["value"]) == 1500 + 50 * i and float(t["cost"]) == float(costs[i])
    # no better set within the budget: brute force over the customers worth calling, from the plan's own values
    everyone = tmp_path / "all.csv"
    r = run(script("churn_campaign"), "--input", str(path), "--value_column", "LTV", "--cost_column", "CallCost",
            "--budget", "1000000", "--only", only, "--output", str(everyone), "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    worth = [(float(t["expected_net"]), float(t["cost"])) for t in read_targets(everyone)]
    assert 8 <= len(worth) <= 18, len(worth)  # enough to choose from, few enough for brute force
    from itertools import combinations
    best = max(sum(v for v, _ in s) for k in range(len(worth) + 1) for s in combinations(worth, k) if sum(c for _, c in s) <= 31)
    assert sum(float(t["expected_net"]) for t in targets) == pytest.approx(best, abs=1e-9)


def test_campaign_with_another_catalogue(tmp_path, data_csv, model_dir):
    "CHURN_OFFERS and --offers point at another catalogue (the flag wins); its offers and costs are the ones planned with."
    path, out = small_file(tmp_path, data_csv, 40), tmp_path / "t.csv"
    (tmp_path / "env.toml").write_text('[[offer]]\nid = "env_offer"\nlabel = "From the environment"\ndiscount = 0.05\n')
    (tmp_path / "flag.toml").write_text('[[offer]]\nid = "annual_plan"\nlabel = "A one-year contract, $15 credit"\n'
                                        'set = { contract = "one_year" }\nwhen = { contract = ["month-to-month"] }\ncost_once = 15\n')
    r = run(script("churn_campaign"), "--input", str(path), "--budget", "50", "--output", str(out), "--model", str(model_dir),
            CHURN_OFFERS=str(tmp_path / "env.toml"))
    assert r.returncode == 0 and f"1 offers from {tmp_path / 'env.toml'}" in r.stdout, (r.stdout, r.stderr)
    assert {t["offer"] for t in read_targets(out)} <= {"env_offer"}
    r = run(script("churn_campaign"), "--input", str(path), "--budget", "50", "--output", str(out), "--model", str(model_dir),
            "--offers", str(tmp_path / "flag.toml"), CHURN_OFFERS=str(tmp_path / "env.toml"))
    assert r.returncode == 0, r.stderr
    targets = read_targets(out)
    assert targets and {(t["offer"], t["offer_cost"]) for t in targets} == {("annual_plan", "15.0")}, targets[:2]
    r = run(script("churn_campaign"), "--input", str(path), "--output", str(out), "--model", str(model_dir),
            CHURN_OFFERS=str(tmp_path / "none.toml"), timeout=60)
    assert_one_line_error(r, "churn_campaign: error: ", "CHURN_OFFERS: Path does not point to a file")


BAD_CAMPAIGNS = [
    (["--budget", "lots"], "--budget: 'lots' is not a number"),
    (["--budget", "-5"], "--budget: -5 is outside [0, inf]"),
    (["--contact_cost", "nan"], "--contact_cost: nan is outside"),
    (["--save_rate", "1.2"], "--save_rate: 1.2 is outside (0, 1]"),
    (["--horizon_months", "0"], "--horizon_months: 0 is outside"),
    (["--horizon_months", "6", "--value_column", "LTV"], "give --horizon_months or --value_column, not both"),
    (["--contact_cost", "3", "--cost_column", "C"], "give --contact_cost or --cost_column, not both"),
    (["--only", "discount_10,paper_bills"], "--only[1]: unknown offer 'paper_bills'; choose from one_year_contract"),
    (["--offers", "/nonexistent/offers.toml"], "cannot read the offer catalogue"),
    (["--value_column", "LTV"], "--value_column: no column 'LTV'"),
    (["--value_column", "Tenure"], "--value_column: 'Tenure' is a column of the Telco data"),
    (["--colour", "red"], "unrecognized arguments: --colour red"),
]


@pytest.mark.parametrize("args,needle", BAD_CAMPAIGNS, ids=[a[0] for a, _ in BAD_CAMPAIGNS])
def test_campaign_bad_arguments(tmp_path, model_dir, args, needle):
    (tmp_path / "one.csv").write_text(HEADER + "\n" + ROW + "\n")
    r = run(script("churn_campaign"), "--input", str(tmp_path / "one.csv"), "--output", str(tmp_path / "t.csv"),
            "--model", str(model_dir), *args, timeout=60)
    assert_one_line_error(r, "churn_campaign: error: ", needle)
    assert not (tmp_path / "t.csv").exists()


def test_campaign_bad_files(tmp_path, model_dir):
    bad_row = ROW.replace("Month-to-month", "Forever")
    cases = [
        ([], "--input is required"),
        (["--input", str(tmp_path / "nope.csv")], "is not a file"),
        (["--input", str(tmp_path / "bad.csv")], "column 'Contract', line 3: 'Forever' is not one of month-to-month"),
        (["--input", str(tmp_path / "empty.csv")], "the file is empty"),
        (["--input", str(tmp_path / "value.csv"), "--value_column", "LTV"], "column 'LTV', line 2: '-3' is not an amount of 0 or more"),
        (["--input", str(tmp_path / "ok.csv"), "--output", str(tmp_path / "no" / "dir" / "t.csv")], "cannot write"),
        (["--input", str(tmp_path / "ok.csv"), "--model", str(tmp_path)], "is neither a model directory"),
    ]
    (tmp_path / "bad.csv").write_text(f"{HEADER}\n{ROW}\n{bad_row}\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "value.csv").write_text(f"{HEADER},LTV\n{ROW},-3\n")
    (tmp_path / "ok.csv").write_text(f"{HEADER}\n{ROW}\n")
    for args, needle in cases:
        full = [*args] + ([] if "--model" in args else ["--model", str(model_dir)])
        if "--output" not in args: full += ["--output", str(tmp_path / "t.csv")]
        assert_one_line_error(run(script("churn_campaign"), *full, timeout=60), "churn_campaign: error: ", needle)


# ---------------------------------------------------------------- the page, in a real browser

@contextmanager
def desk_server(log_dir: Path, **env: str):
    "A live `churn_serve`, which serves the desk's page and /whatif."
    with running_server(log_dir, **env) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"the page tests need Debian's chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def desk_url(tmp_path_factory):
    "One server for the page's tests without a key."
    with desk_server(tmp_path_factory.mktemp("desk-server")) as url:
        yield url


def submit(page, runs: int):
    "Press the button and wait until the page has handled its `runs`-th submission."
    page.click("#submit")
    wait_runs(page, runs)


def wait_runs(page, runs: int):
    page.wait_for_selector(f"body[data-runs='{runs}']", state="attached", timeout=15_000)  # no eval: the page's CSP forbids it


def check_screenshot(png: bytes):
    "Not blank: many colours (text, antialiasing), and a good share of pixels unlike the most common one."
    from PIL import Image
    im = Image.open(io.BytesIO(png)).convert("RGB")
    counts = im.getcolors(maxcolors=1 << 24)
    commonest = max(n for n, _ in counts)
    total = im.width * im.height
    assert len(counts) >= 200, f"only {len(counts)} colours"
    assert (total - commonest) / total >= 0.2, f"{(total - commonest) / total:.1%} of pixels differ from the background"


CUSTOMER = {**SAMPLE_CUSTOMER, "tenure": 5, "internetservice": "fiber_optic", "onlinebackup": "no", "streamingtv": "yes",
            "paymentmethod": "mailed_check", "monthlycharges": 85.5, "totalcharges": 427.5}


def fill(page, customer: dict):
    for f, v in customer.items():
        if f in DOMAINS: page.select_option(f"#f-{f}", str(v))
        else: page.fill(f"#f-{f}", str(v))


def customer_file(tmp_path: Path, data_csv: Path, n: int, name: str | None = None) -> Path:
    "The real export's first `n` customers (Churn dropped), repeated with new ids past the file's 7,043: a raw export of `n` rows."
    with open(data_csv, newline="") as f: header, *rows = list(csv.reader(f))
    out = [r[:-1] if i < len(rows) else [f"{r[0]}-{i // len(rows)}", *r[1:-1]] for i, r in ((i, rows[i % len(rows)]) for i in range(n))]
    path = tmp_path / (name or f"customers{n}.csv")
    with open(path, "w", newline="") as f: csv.writer(f).writerows([header[:-1], *out])
    return path


def clean_customer(raw: dict) -> dict:
    from churn_deploy.data import clean_row
    return clean_row({k.lower(): v for k, v in raw.items()})


# Runs in the page (Playwright's evaluate is not bound by the page's CSP): what a browser test can check of the layout.
OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth, out = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (!r.width || getComputedStyle(el).visibility === "hidden" || el.closest(".sr-only")) continue;
    if (r.right > vw + 0.5 || r.left < -0.5) out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className}: ${Math.round(r.left)}..${Math.round(r.right)} of ${vw}`);
  }
  if (document.documentElement.scrollWidth > vw) out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  const ctx = document.createElement("canvas").getContext("2d");
  for (const el of document.querySelectorAll("input[placeholder]")) {
    const s = getComputedStyle(el);
    ctx.font = s.font;
    const room = el.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    if (el.offsetParent && ctx.measureText(el.placeholder).width > room) out.push(`placeholder of #${el.id} cut: ${Math.round(ctx.measureText(el.placeholder).width)} > ${Math.round(room)}`);
  }
  return out;
}"""

# WCAG 2.x contrast of each visible element's own text (and each button) against the background it is drawn on.
CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
      if (c.length === 4 && c[3] > 0) return null;  // translucent: not computable here
    }
    return [255, 255, 255];
  }
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!(own || el.tagName === "BUTTON") || !el.getClientRects().length || el.closest("[hidden], .sr-only")) continue;
    const s = getComputedStyle(el), bg = background(el);
    if (!bg || s.visibility === "hidden" || parseFloat(s.opacity) < 1) { out.push({el: el.tagName, text: el.textContent.slice(0, 30), ratio: null}); continue; }
    const [a, b] = [lum(rgb(s.color).slice(0, 3)), lum(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(s.fontSize), large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
    out.push({el: `${el.tagName.toLowerCase()}#${el.id}`, text: el.textContent.trim().slice(0, 30), ratio, need: large ? 3 : 4.5});
  }
  return out;
}"""

# Every control of the page's forms has a label that names it (a <label for>, a wrapping <label>, or aria-label).
LABELS_JS = """() => [...document.querySelectorAll("input, select, textarea, button")].filter((el) => {
  const label = (el.labels && [...el.labels].map((l) => l.textContent).join(" ")) || el.getAttribute("aria-label") || (el.tagName === "BUTTON" && el.textContent);
  return !(label && label.trim());
}).map((el) => el.id || el.name || el.tagName)"""

FOCUSABLE_JS = """() => [...document.querySelectorAll("input, select, button, a[href]")]
  .filter((el) => !el.disabled && el.getClientRects().length && !el.closest("[hidden]"))
  .filter((el) => !(el.type === "radio" && !el.checked))
  .map((el) => el.id || `${el.name}=${el.value}`)"""

LONG_TASKS_JS = """window.__longTasks = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); }).observe({type: "longtask", buffered: true});"""


def check_layout(page, width: int, height: int) -> bytes:
    "At `width` × `height`: nothing wider than the viewport, no placeholder cut; the screenshot, checked not blank."
    page.set_viewport_size({"width": width, "height": height})
    assert page.evaluate(OVERFLOW_JS) == [], width
    png = page.screenshot(full_page=True)
    check_screenshot(png)
    return png


def test_page_in_the_browser(browser, desk_url, tmp_path, data_csv, model_dir):
    """As a retention manager uses it: the page, a 2,000-customer file scored in batches, one customer opened from it,
    the reasons in words, the catalogue's offers with their net values, the caveat; at desktop and phone widths."""
    from churn_deploy.offers import CAVEAT, load_catalogue
    url = desk_url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sent, problems = [], []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    assert page.goto(url + "/").status == 200
    assert page.title().startswith("Retention desk")
    # the choices are the data's value domains, the defaults the sample customer; the offers are the catalogue's
    for f, dom in DOMAINS.items():
        assert page.eval_on_selector_all(f"#f-{f} option", "os => os.map(o => o.value)") == [str(v) for v in dom], f
    assert {f: page.input_value(f"#f-{f}") for f in FEATURES} == {f: str(v) for f, v in SAMPLE_CUSTOMER.items()}
    assert page.eval_on_selector_all("input[name=offer]", "bs => bs.map(b => b.value)") == [o.id for o in load_catalogue()]
    assert page.locator("#result").is_hidden() and page.inner_text("#caveat") == CAVEAT and page.locator("#caveat").is_visible()

    # a 2,000-row export, read in the page, scored through /predict/batch in batches, with the ids
    path = customer_file(tmp_path, data_csv, 2000)
    page.set_input_files("#csv-file", str(path))
    page.wait_for_selector("body[data-list='ready']", state="attached", timeout=60_000)
    batches = [json.loads(r.post_data) for r in sent if r.url == url + "/predict/batch"]
    assert [len(b["customers"]) for b in batches] == [500] * 4 and all(len(b["customer_ids"]) == 500 for b in batches)
    assert [r.url for r in sent if r.url != url + "/predict/batch"] == []  # the file itself goes nowhere
    with open(path, newline="") as f: raw = list(csv.DictReader(f))
    assert batches[0]["customers"][0] == clean_customer(raw[0]) and batches[0]["customer_ids"][0] == raw[0]["customerID"]
    listed = page.eval_on_selector_all("#customers tbody tr", "rs => rs.map(r => [r.dataset.id, Number(r.dataset.p)])")
    assert len(listed) == 100 and page.inner_text("#list-caption") == "Showing 100 of 2,000: type an id to find another."
    scored = httpx.post(url + "/predict/batch", json={"customers": [clean_customer(r) for r in raw[:100]]}).json()["predictions"]
    assert [tuple(x) for x in listed] == [(r["customerID"], s["churn_probability"]) for r, s in zip(raw, scored)]

    # find one by id, open it: the form is filled, scored, and the id goes with the calls
    chosen = next(r for r in raw[1200:] if r["Contract"] == "Month-to-month" and r["InternetService"] == "Fiber optic"
                  and int(r["tenure"]) < 12)  # a customer the desk would call
    page.fill("#list-filter", chosen["customerID"])
    assert page.eval_on_selector_all("#customers tbody tr", "rs => rs.map(r => r.dataset.id)") == [chosen["customerID"]]
    sent.clear()
    page.click(f"button[aria-label='Open customer {chosen['customerID']}']")
    wait_runs(page, 1)
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#banner")
    c = clean_customer(chosen)
    assert {f: page.input_value(f"#f-{f}") for f in FEATURES} == {f: str(v) for f, v in c.items()}
    assert page.input_value("#customer-id") == chosen["customerID"]
    assert sorted(r.url for r in sent) == [url + "/predict", url + "/whatif"]
    assert {r.headers.get("x-customer-id") for r in sent} == {chosen["customerID"]}
    whatif = httpx.post(url + "/whatif", json={"customer": c}).json()
    predict = httpx.post(url + "/predict", json=c).json()
    assert float(page.get_attribute("#probability", "data-p")) == predict["churn_probability"]
    # the reasons in words, the offers with their net values, best first; the caveat
    reasons = page.eval_on_selector_all("#reasons li", "ls => ls.map(l => l.textContent)")
    assert reasons == [r["text"] for r in whatif["reasons"]] and len(reasons) == 3
    assert not any("_" in r or "=" in r for r in reasons), reasons
    rows = page.eval_on_selector_all("#offers tbody tr", "rs => rs.map(r => [r.dataset.id, Number(r.dataset.net), r.cells[0].textContent, r.cells[3].textContent])")
    assert [(i, n, label) for i, n, label, _ in rows] == [(o["id"], o["net_value"], o["label"]) for o in whatif["offers"]]
    sign = lambda x: ("+" if x >= 0 else "−") + f"${abs(x):,.2f}"
    assert [shown for *_, shown in rows] == [sign(o["net_value"]) for o in whatif["offers"]]
    page.check("input[name=rank][value=p]")  # the second view: by probability
    by_p = page.eval_on_selector_all("#offers tbody tr", "rs => rs.map(r => Number(r.dataset.p))")
    assert by_p == sorted(o["churn_probability"] for o in whatif["offers"])
    page.check("input[name=rank][value=net]")
    assert page.locator("#caveat").is_visible() and page.inner_text("#caveat") == CAVEAT

    # the layout: nothing wider than the viewport, the placeholders whole, at desktop and phone widths
    png = check_layout(page, 1280, 900)
    page.set_viewport_size({"width": 1280, "height": 1180})
    page.evaluate("() => window.scrollTo(0, 0)")
    if dest := os.environ.get("DESK_SCREENSHOT"): Path(dest).write_bytes(page.screenshot(full_page=False))  # the README's picture
    phone = check_layout(page, 390, 844)
    if dest := os.environ.get("DESK_SCREENSHOT_PHONE"): Path(dest).write_bytes(phone)
    # the check can fail: a wide table, a cut placeholder
    page.evaluate("() => { document.getElementById('offers').style.minWidth = '600px'; document.getElementById('api-key').style.width = '90px'; }")
    found = page.evaluate(OVERFLOW_JS)
    assert any(f.startswith("table#offers") for f in found) and any(f.startswith("placeholder of #api-key cut") for f in found), found
    page.evaluate("() => { document.getElementById('offers').style.minWidth = ''; document.getElementById('api-key').style.width = ''; }")
    page.set_viewport_size({"width": 1280, "height": 900})
    assert len(png) > 10_000
    assert problems == [], problems
    page.close()


def test_page_accessibility(browser, desk_url):
    "Every control labelled, Tab follows the page's order, text and buttons at WCAG AA contrast (from the computed styles)."
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(desk_url + "/")
    assert page.evaluate(LABELS_JS) == []
    order = page.evaluate(FOCUSABLE_JS)
    assert order[:3] == ["api-key", "csv-file", "customer-id"] and order[-1] == "submit", order
    tabbed = []
    for _ in range(len(order)):
        page.keyboard.press("Tab")
        tabbed.append(page.evaluate("() => { const e = document.activeElement; return e.id || `${e.name}=${e.value}`; }"))
    assert tabbed == order, (tabbed, order)
    assert page.evaluate("() => document.querySelectorAll('[tabindex]').length") == 0  # the document's order is the focus order
    submit(page, 1)  # the answers drawn too, so their text and controls are checked
    assert page.get_attribute("body", "data-state") == "done"
    assert page.evaluate(LABELS_JS) == []
    checks = page.evaluate(CONTRAST_JS)
    assert len(checks) > 50, len(checks)
    low = [c for c in checks if c["ratio"] is None or c["ratio"] < c["need"]]
    assert low == [], low
    assert any(c["el"].startswith("button#submit") for c in checks)
    page.evaluate("() => { document.getElementById('submit').style.background = '#6b9cf0'; }")  # the check can fail
    assert [c["el"] for c in page.evaluate(CONTRAST_JS) if c["ratio"] is not None and c["ratio"] < c["need"]] == ["button#submit"]
    page.close()


def test_page_customer_files(browser, desk_url, tmp_path, data_csv, model_dir):
    """churn_campaign's targets.csv chosen with the export: the targets in rank order with their planned offer. A file
    the page cannot use: one message, nothing listed. 10,000 rows: the time and the longest task are printed."""
    from churn_deploy.campaign import churn_campaign
    export = customer_file(tmp_path, data_csv, 2000, "export.csv")
    targets = tmp_path / "targets.csv"
    import contextlib
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        churn_campaign(["--input", str(export), "--budget", "250", "--output", str(targets), "--model", str(model_dir)])
    plan = read_targets(targets)
    assert len(plan) == 50
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(LONG_TASKS_JS)
    page.goto(desk_url + "/")
    page.set_input_files("#csv-file", [str(export), str(targets)])
    page.wait_for_selector("body[data-list='ready']", state="attached", timeout=60_000)
    rows = page.eval_on_selector_all("#customers tbody tr", "rs => rs.map(r => [r.dataset.id, Number(r.dataset.p), r.cells[2].textContent])")
    assert [(i, label) for i, _, label in rows] == [(t["customerID"], t["offer_label"]) for t in plan]
    assert all(abs(p - float(t["churn_probability"])) <= 1e-12 for (_, p, _), t in zip(rows, plan))

    # files the page cannot use: one message each, in the page, naming the file and what is wrong
    with open(export, newline="") as f: header, *body = list(csv.reader(f))
    (tmp_path / "nocontract.csv").write_text("\n".join(",".join(r[:15] + r[16:]) for r in [header, *body[:5]]) + "\n")
    bad = [r[:] for r in body[:5]]
    bad[3][header.index("Contract")] = "Forever"
    with open(tmp_path / "forever.csv", "w", newline="") as f: csv.writer(f).writerows([header, *bad])
    (tmp_path / "short.csv").write_text(",".join(header) + "\n" + ",".join(body[0][:5]) + "\n")
    (tmp_path / "empty.csv").write_text("")
    for name, message in [("nocontract.csv", "nocontract.csv: no column contract: choose the customer export (its 21 columns, "
                                             "Churn optional) or churn_campaign's targets.csv with it"),
                          ("forever.csv", "forever.csv, line 5: contract: Input should be 'month-to-month', 'one_year' or 'two_year'"),
                          ("short.csv", "short.csv, line 2: 5 cells where the header has 20"),
                          ("empty.csv", "empty.csv: the file is empty")]:
        page.set_input_files("#csv-file", str(tmp_path / name))
        page.wait_for_selector("body[data-list='error']", state="attached", timeout=30_000)
        assert page.inner_text("#csv-error") == message, (name, page.inner_text("#csv-error"))
        assert page.locator("#list-box").is_hidden() and page.locator("#banner").is_hidden()
        page.evaluate("() => { document.body.dataset.list = 'none'; }")
    page.set_input_files("#csv-file", str(targets))
    page.wait_for_selector("body[data-list='error']", state="attached", timeout=30_000)
    assert page.inner_text("#csv-error") == "choose the customer export too: a target list holds no customer's fields"

    # 10,000 rows: read, listed and scored without freezing the page (the figures are printed, not asserted)
    big = customer_file(tmp_path, data_csv, 10_000)
    page.evaluate("() => { window.__longTasks = []; }")
    page.set_input_files("#csv-file", str(big))
    page.wait_for_selector("body[data-list='ready']", state="attached", timeout=120_000)
    assert page.inner_text("#list-caption") == "Showing 100 of 10,000: type an id to find another."
    ms, tasks = int(page.get_attribute("body", "data-list-ms")), page.evaluate("() => window.__longTasks")
    print(f"\n10,000-row file: read, listed and scored in {ms:,} ms; longest main-thread task {max(tasks, default=0):.0f} ms "
          f"({len(tasks)} tasks over 50 ms)")
    page.close()


def test_page_errors_next_to_their_fields(browser, desk_url):
    "A refused value shows the API's own message next to its field; no offer allowed, a bad assumption, a bad id likewise."
    url, page = desk_url, browser.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    fill(page, CUSTOMER)
    page.fill("#f-tenure", "12.5")
    submit(page, 1)
    expected = httpx.post(url + "/predict", json={**CUSTOMER, "tenure": 12.5}).json()["error"]
    assert page.inner_text("#e-tenure") == expected["fields"][0]["message"]
    assert page.get_attribute("#f-tenure", "aria-invalid") == "true"
    assert expected["message"] in page.inner_text("#banner") and page.locator("#result").is_hidden()
    page.fill("#f-tenure", "5")
    page.fill("#p-save_rate", "1.5")
    submit(page, 2)
    assert page.inner_text("#e-tenure") == "" and page.get_attribute("#f-tenure", "aria-invalid") is None
    assert page.inner_text("#e-save_rate") == "Input should be less than or equal to 1"
    page.fill("#p-save_rate", "0.3")
    for box in page.query_selector_all("input[name=offer]"): box.uncheck()
    submit(page, 3)
    assert page.inner_text("#e-offers").startswith("List should have at least 1 item")
    page.check("input[value=free_tech_support]")
    page.fill("#customer-id", "café")
    submit(page, 4)
    assert page.inner_text("#e-customer-id") == "a customer id is 1 to 128 visible ASCII characters"
    page.fill("#customer-id", "")
    submit(page, 5)
    assert page.get_attribute("body", "data-state") == "done"
    assert page.eval_on_selector_all("#offers tbody tr", "rs => rs.map(r => r.dataset.id)") == ["free_tech_support"]
    assert problems == [], problems
    page.close()


def test_page_with_an_api_key_and_another_catalogue(browser, tmp_path):
    "A key typed into the page; and CHURN_OFFERS: the page and /whatif offer that catalogue's offers, with its costs."
    (tmp_path / "offers.toml").write_text('[[offer]]\nid = "annual_plan"\nlabel = "A one-year contract, $15 credit"\n'
                                          'set = { contract = "one_year" }\nwhen = { contract = ["month-to-month"] }\ncost_once = 15\n')
    with desk_server(tmp_path / "server", CHURN_API_KEY=KEY, CHURN_OFFERS=str(tmp_path / "offers.toml")) as url:
        # the page and its assets need no key; the service's routes do
        for path in ("/", "/desk/desk.js", "/desk/desk.css"): assert httpx.get(url + path).status_code == 200, path
        answer = httpx.post(url + "/whatif", json={"customer": SAMPLE_CUSTOMER}, headers={"X-API-Key": KEY}).json()
        assert [(o["id"], o["cost"]) for o in answer["offers"]] == [("annual_plan", 15.0)], answer
        for path in ("/predict", "/explain"): assert httpx.post(url + path, json=SAMPLE_CUSTOMER).status_code == 401
        assert httpx.post(url + "/whatif", json={"customer": SAMPLE_CUSTOMER}).status_code == 401

        context = browser.new_context()
        page = context.new_page()
        headers = []
        page.on("request", lambda r: headers.append(r.headers.get("x-api-key")) if r.method == "POST" else None)
        page.goto(url + "/")
        submit(page, 1)  # no key typed
        assert page.get_attribute("body", "data-state") == "error"
        assert page.inner_text("#e-api-key") == "x-api-key: missing or unknown API key"
        assert page.get_attribute("#api-key", "aria-invalid") == "true"

        page.fill("#api-key", KEY)
        submit(page, 2)
        assert page.get_attribute("body", "data-state") == "done", page.inner_text("#banner")
        p = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, headers={"X-API-Key": KEY}).json()["churn_probability"]
        assert float(page.get_attribute("#probability", "data-p")) == p
        assert page.inner_text("#e-api-key") == ""
        assert headers == [None, None, KEY, KEY]
        assert page.eval_on_selector_all("input[name=offer]", "bs => bs.map(b => b.value)") == ["annual_plan"]
        assert page.eval_on_selector_all("#offers tbody tr", "rs => rs.map(r => r.dataset.id)") == ["annual_plan"]
        # the key stays in the page: not in the URL, not in a cookie; sessionStorage keeps it across a reload
        assert KEY not in page.url and context.cookies() == []
        page.reload()
        assert page.input_value("#api-key") == KEY
        submit(page, 1)
        assert page.get_attribute("body", "data-state") == "done"
        context.close()
        # a new tab of a new session starts without it
        fresh = browser.new_page()
        fresh.goto(url + "/")
        assert fresh.input_value("#api-key") == ""
        fresh.close()


# ---------------------------------------------------------------- the guide's section, run as written

def test_readme_whatif_example(model_dir):
    "The /whatif answer the guide shows is the engine's answer to the request it shows (numbers to 1e-12)."
    import re, shlex
    from churn_deploy.offers import choose_offers, load_catalogue, whatif
    from churn_deploy.predict import load_model
    from support import blocks, section
    text = section("The retention desk")
    (curl,) = [b for b in blocks(text, "bash") if "/whatif" in b]
    body = json.loads(shlex.split(curl.replace("\\\n", " "))[-1])
    (shown,) = blocks(text, "json")
    shown = json.loads(shown)
    got = whatif(load_model(model_dir), body["customer"], choose_offers(load_catalogue(), body["offers"]))

    def same(a, b, where="answer"):
        if isinstance(b, float): assert isinstance(a, float) and abs(a - b) <= 1e-12, (where, a, b)
        elif isinstance(b, dict):
            assert list(a) == list(b), (where, list(a), list(b))
            for k in b: same(a[k], b[k], f"{where}.{k}")
        elif isinstance(b, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)): same(x, y, f"{where}[{i}]")
        else: assert a == b, (where, a, b)
    same(got, shown)
    assert re.search(r"offers\[1\]: unknown offer 'paper_bills'; choose from one_year_contract, two_year_contract", text)
    # the catalogue the guide shows is the package's, as shipped
    (toml,) = [b for b in blocks(text, "toml")]
    shipped = (ROOT / "churn_deploy" / "assets" / "offers.toml").read_text()
    tables = ["[[offer]]" + t for t in toml.split("[[offer]]")[1:]]
    assert len(tables) == 2 and all(t.strip() + "\n" in shipped for t in tables), tables


def test_readme_campaign_example(tmp_path, data_csv, model_dir):
    "The guide's churn_campaign commands, run as written in a directory holding the data, print what it shows."
    import shlex
    from support import blocks, section
    text = section("The retention desk")
    (commands,) = [b for b in blocks(text, "bash") if "churn_campaign" in b]
    cut, run_line = [l.split("#")[0].strip() for l in commands.strip().splitlines()]
    assert cut == 'mkdir -p runs && cut -d, -f1-20 "$CHURN_DATA" > runs/customers.csv', cut
    (tmp_path / "runs").mkdir()
    with open(data_csv) as f, open(tmp_path / "runs" / "customers.csv", "w") as out:
        for line in f: out.write(",".join(line.rstrip("\n").split(",")[:20]) + "\n")
    args = shlex.split(run_line)
    assert args[:3] == ["uv", "run", "churn_campaign"], args
    r = run(script("churn_campaign"), *args[3:], cwd=tmp_path, CHURN_MODEL_DIR=str(model_dir))
    assert r.returncode == 0, r.stderr
    (printed,) = [b for b in blocks(text, "") if "wrote " in b and " targets to " in b]
    assert r.stdout == printed, r.stdout
    with open(tmp_path / "runs" / "targets.csv", newline="") as f: header = next(csv.reader(f))
    assert header == TARGET_COLUMNS
    assert all(f"`{c}`" in text for c in header)
    # the customer the guide follows: the same offer and numbers in targets.csv and in /whatif (the page's source)
    import re
    from churn_deploy.data import load_churn_data
    from churn_deploy.offers import whatif
    from churn_deploy.predict import load_model
    m = re.search(r"first target, `([^`]+)`, is planned with \*([^*]+)\*: churn probability ([\d.]+) % → ([\d.]+) %, "
                  r"offer cost \$([\d.,]+), net value \+\$([\d.,]+); .* at the same \+\$([\d.,]+)\.", text)
    assert m, "the guide's worked customer"
    first = read_targets(tmp_path / "runs" / "targets.csv")[0]
    assert (first["customerID"], first["offer_label"]) == m.group(1, 2)
    assert [f"{100 * float(first[k]):.1f}" for k in ("churn_probability", "offer_probability")] == [m.group(3), m.group(4)]
    assert f"{float(first['offer_cost']):,.2f}" == m.group(5) and f"{float(first['expected_net']):,.2f}" == m.group(6) == m.group(7)
    c = load_churn_data(data_csv).set_index("customerid").loc[m.group(1), FEATURES].to_dict()
    shown = whatif(load_model(model_dir), c)["offers"][0]
    assert shown["label"] == m.group(2) and f"{shown['net_value']:,.2f}" == m.group(6)


def test_readme_profit_figures(data_csv, model_dir):
    "The held-out figures in the guide's table, recomputed."
    import re
    from churn_deploy.data import load_churn_data
    from churn_deploy.campaign import CONTACT_COST, HORIZON_MONTHS, campaign_table, strategy_totals, strategy_weights
    from churn_deploy.predict import load_model
    from churn_deploy.train import split_data, to_records
    from support import section
    test = split_data(load_churn_data(data_csv)).test
    table = campaign_table(load_model(model_dir), to_records(test), test.monthlycharges * HORIZON_MONTHS, CONTACT_COST,
                           outcomes=test.churn)
    rows = re.findall(r"^\| ([\d,]+) \| (.+) \|$", section("The retention desk"), re.M)
    assert [b for b, _ in rows] == ["500", "1,500", "3,000"], rows
    for budget, cells in rows:
        t = strategy_totals(table, strategy_weights(table, money(budget)))
        expected = [f"{t[s][k]:,.0f}" for s in ("plan", "by probability", "at random") for k in ("net_value", "realised_net_value")]
        assert cells.split(" | ") == expected, (budget, cells, expected)


def test_readme_screenshot():
    "The README shows the page: a committed PNG, small, and not blank."
    from support import section
    assert "](docs/desk.png)" in section("The retention desk")
    png = (ROOT / "docs" / "desk.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 300_000, len(png)
    check_screenshot(png)


def test_create_app_serves_the_catalogue_its_settings_name(tmp_path, model_dir):
    "create_app(settings) follows its settings' catalogue, not the environment's: one offer in the file, one on the page and /whatif."
    from fastapi.testclient import TestClient
    from churn_deploy.config import Settings
    from churn_deploy.data import SAMPLE_CUSTOMER
    from churn_deploy.offers import DEFAULT_CATALOGUE, load_catalogue
    from churn_deploy.serve import create_app
    text = DEFAULT_CATALOGUE.read_text()
    second = text.index("\n[[offer]]", text.index("\n[[offer]]") + 1)
    (tmp_path / "one.toml").write_text(text[:second])
    (only,) = load_catalogue(tmp_path / "one.toml")
    with TestClient(create_app(Settings(model_dir=model_dir, offers=tmp_path / "one.toml"))) as c:
        ids = [o["id"] for o in c.post("/whatif", json={"customer": SAMPLE_CUSTOMER}).json()["offers"]]
        page = c.get("/").text
    assert ids == [only.id], ids
    assert page.count('name="offer"') == 1 and f'value="{only.id}"' in page
