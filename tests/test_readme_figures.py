"""The figures the README quotes, read back from the committed model: C and its cross-validated AUC,
the test metrics, and the sample customer's answer in the `/predict` example.

Each figure is compared as the README prints it (its own number of decimals), so a retrained model
with different figures fails here until the README is updated.
"""
import json, re

import pytest

from churn_deploy.data import SAMPLE_CUSTOMER
from conftest import ROOT

README = (ROOT / "README.md").read_text()
NUMBER = r"\d+(?:\.\d+)?"


@pytest.fixture(scope="module")
def meta(model_dir) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def table_row(label: str) -> str:
    "The value cell of the README's two-column table row `| label | value |`."
    rows = re.findall(rf"^\| {re.escape(label)} \| (.+) \|$", README, re.M)
    assert len(rows) == 1, f"expected one README table row {label!r}, found {rows}"
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
    m = re.search(r"^curl -s localhost:\d+/predict .*?-d '(\{.*?\})'\n# (\{[^\n]*\})$", README, re.M | re.S)
    assert m, "no `curl .../predict -d '{...}'` example followed by its `# {...}` answer in the README"
    body, answer = json.loads(m[1]), json.loads(m[2])
    assert body == SAMPLE_CUSTOMER, "the example's body is the workshop's customer (churn_deploy.data.SAMPLE_CUSTOMER)"
    from churn_deploy.predict import load_model
    p = load_model(model_dir).predict_proba(SAMPLE_CUSTOMER)
    assert abs(answer["churn_probability"] - p) <= 1e-12, f"README: {answer['churn_probability']}; model: {p}"
    assert answer["churn"] is (p >= 0.5)
    assert answer["model_version"] == meta["version"], f"README: {answer['model_version']}; model.json: {meta['version']}"
