"""The figures the README and the guides in docs/ quote, read back from where they come from: C and its
cross-validated AUC, the test metrics and the sample customer's answer in the `/predict` example from the committed
model; every price and cost from `deploy/cost.py`.

Each model figure is compared as the page prints it (its own number of decimals), so a retrained model with
different figures fails here until the page is updated.
"""
import ast, json, re, sys

import pytest

from churn_deploy.data import SAMPLE_CUSTOMER
from conftest import ROOT

PAGES = {"README.md": (ROOT / "README.md").read_text(),
         **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}
COST_PY = ROOT / "deploy" / "cost.py"
NUMBER = r"\d+(?:\.\d+)?"


@pytest.fixture(scope="module")
def meta(model_dir) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def table_row(label: str) -> str:
    "The value cell of the two-column table row `| label | value |`, which the README and docs/ hold once."
    rows = [r for text in PAGES.values() for r in re.findall(rf"^\| {re.escape(label)} \| (.+) \|$", text, re.M)]
    assert len(rows) == 1, f"expected one table row {label!r} in the README and docs/, found {rows}"
    return rows[0]


def as_printed(quoted: str, value: float) -> str:
    "`value` rounded to the decimals of `quoted`, the README's figure for it."
    decimals = len(quoted.partition(".")[2])
    return f"{value:.{decimals}f}"


def cv_auc(meta: dict) -> dict[float, float]:
    "C → mean cross-validated AUC, as training recorded it."
    return {float(c): v["mean"] for c, v in meta["params"]["cv_auc"].items()}


def test_as_printed_rounds_like_the_readme():
    assert as_printed("0.8581", 0.8581188) == "0.8581" and as_printed("0.8581", 0.85816) != "0.8581"
    assert as_printed("0.5", 0.5) == "0.5" and as_printed("10", 10.0) == "10"


def test_chosen_C_and_its_cross_validated_auc(meta):
    m = re.fullmatch(rf"({NUMBER}) \({meta['params']['cv_folds']}-fold AUC ({NUMBER}); every C from ({NUMBER}) to "
                     rf"({NUMBER}) is within ({NUMBER})\)", table_row("chosen C"))
    assert m, f"the README's 'chosen C' row does not read as expected: {table_row('chosen C')!r}"
    c, auc, lo, hi, spread = m.groups()
    C = meta["params"]["C"]
    assert float(c) == C, f"README says C = {c}, model.json has {C}"
    aucs = cv_auc(meta)
    assert as_printed(auc, aucs[C]) == auc, f"README: CV AUC {auc}; model.json: {aucs[C]}"
    near = [v for k, v in aucs.items() if float(lo) <= k <= float(hi)]
    assert len(near) >= 2, f"no C between {lo} and {hi} in {sorted(aucs)}"
    assert float(as_printed(spread, max(near) - min(near))) <= float(spread), \
        f"README: every C from {lo} to {hi} within {spread}; model.json: {max(near) - min(near):.6f}"


@pytest.mark.parametrize("label, metric", [("test AUC", "auc"), ("test accuracy at 0.5", "accuracy"),
                                           ("test Brier score", "brier")])
def test_test_metrics(meta, label, metric):
    quoted = re.match(rf"\**({NUMBER})\**", table_row(label))[1]
    assert len(quoted.partition(".")[2]) >= 4, f"{label}: quote 4 decimals or more, not {quoted}"
    value = meta["metrics"]["test"][metric]
    assert as_printed(quoted, value) == quoted, f"README: {label} {quoted}; model.json: {value}"


def test_sample_prediction(model_dir, meta):
    "The `/predict` example sends the workshop's customer and shows the committed model's answer for it."
    found = [m for text in PAGES.values()
             for m in re.finditer(r"^curl -s localhost:\d+/predict .*?-d '(\{.*?\})'\n# (\{[^\n]*\})$", text, re.M | re.S)]
    assert len(found) == 1, "expected one `curl .../predict -d '{...}'` example followed by its `# {...}` answer"
    m = found[0]
    body, answer = json.loads(m[1]), json.loads(m[2])
    assert body == SAMPLE_CUSTOMER, "the example's body is the workshop's customer (churn_deploy.data.SAMPLE_CUSTOMER)"
    from churn_deploy.predict import load_model
    p = load_model(model_dir).predict_proba(SAMPLE_CUSTOMER)
    assert abs(answer["churn_probability"] - p) <= 1e-12, f"README: {answer['churn_probability']}; model: {p}"
    assert answer["churn"] is (p >= 0.5)
    assert answer["model_version"] == meta["version"], f"README: {answer['model_version']}; model.json: {meta['version']}"


# ---------------------------------------------------------------- prices: deploy/cost.py, once

def cost_module():
    sys.path.insert(0, str(COST_PY.parent))
    try:
        import cost
        return cost
    finally: sys.path.remove(str(COST_PY.parent))


def unused_constants(source: str) -> list[str]:
    "Module-level UPPER_CASE names assigned in `source` and never read anywhere in it."
    tree = ast.parse(source)
    assigned = [t.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name) and t.id.isupper()]
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return [name for name in assigned if name not in read]


def test_unused_constants_finds_a_price_nothing_reads():
    assert unused_constants("A = 1\nB, C = 2, 3\ndef f(): return A + C\n") == ["B"]
    assert unused_constants("FLY_ROOTFS = 0.15  # $ per GB\nROWS = [('stop', '$0.15/GB')]\nprint(ROWS)\n") == ["FLY_ROOTFS"]


def test_every_constant_in_cost_py_is_used():
    "A price or measurement that nothing reads is a figure the docs may cite by hand: each one feeds the page."
    assert unused_constants(COST_PY.read_text()) == []


def test_cost_block_is_what_cost_py_prints():
    "docs/deploy.md's Cost block is exactly `deploy/cost.py`'s output (regenerate: `uv run python deploy/cost.py --write`)."
    text = PAGES["docs/deploy.md"]
    assert text.count("<!-- cost:start -->\n") == 1 and text.count("<!-- cost:end -->") == 1
    block = text.split("<!-- cost:start -->\n")[1].split("<!-- cost:end -->")[0]
    assert block.strip() == cost_module().table().strip(), "run `uv run python deploy/cost.py --write`"


def _prose(text: str) -> str:
    "A page without its code blocks and without the generated cost block."
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"<!-- cost:start -->.*?<!-- cost:end -->", "", text, flags=re.S)


def test_no_price_is_written_by_hand():
    "Outside the generated block, the pages cite no dollar figure but the desk's campaign money, and no price of cost.py."
    cost = cost_module()
    prices = {f"${v:g}" for k, v in vars(cost).items() if k.isupper() and isinstance(v, float) and v < 10}
    assert "$0.15" in prices and "$2.19" in prices
    for name, text in PAGES.items():
        prose = _prose(text)
        dollars = re.findall(r"\$\d[\d,.]*", prose)
        if name == "docs/desk.md": assert not prices & {d.rstrip(".,") for d in dollars}, dollars
        else: assert dollars == [], f"{name} cites {dollars} by hand: build the figure in deploy/cost.py"
    assert _prose("a $2.19 b\n<!-- cost:start -->\n$1\n<!-- cost:end -->\n```bash\nawk '{print $1}'\n```\n") == "a $2.19 b\n\n\n"
