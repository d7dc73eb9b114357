"""`churn_score`'s fast read (issue 18) keeps the answers: the same frame, bytes and errors as reading every cell as text.

Nothing here times anything. The checks are on the shape of the fast path: a plain export never goes through
`read_raw`, a file of many of pyarrow's blocks gives the frame `check_raw(read_raw(...))` gives, and a file the
checks refuse still gets the text path's message, word for word.
"""
import numpy as np
import pandas as pd
import pytest

from churn_deploy import score
from churn_deploy.data import ChurnDataError, check_raw, read_raw
from churn_deploy.predict import load_model

from conftest import assert_one_line_error, run, script


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory, data_csv):
    "80,000 customers resampled from the real file (about 11 MB: many 1 MB blocks), with the awkward cells a real export holds."
    raw = read_raw(data_csv).drop(columns="Churn")
    df = raw.iloc[np.random.default_rng(5).integers(0, len(raw), 80_000)].reset_index(drop=True)
    df["customerID"] = [f"{i:07d}-{c}" for i, c in enumerate(df.customerID)]
    df.loc[[5, 50_000, 79_999], "customerID"] = ["=1+1", "@SUM(1)", "-2+3"]  # a spreadsheet would run these
    df.loc[[7, 40_000], "TotalCharges"] = [" ", ""]  # blank totals: new customers, 0
    df.loc[9, "MonthlyCharges"], df.loc[60_000, "tenure"] = " 29.85 ", "1.0"  # numbers as Python's float reads them
    df.loc[70_000, "Contract"] = "One Year"  # the course's cleaning lower-cases it
    path = tmp_path_factory.mktemp("big") / "big.csv"
    df.to_csv(path, index=False)
    return path


def test_fast_read_gives_the_text_paths_frame(big_csv):
    fast, slow = score.read_checked(big_csv), check_raw(read_raw(big_csv), target=False)
    assert list(fast.columns) == list(slow.columns)
    for c in slow.columns:
        assert fast[c].astype(slow[c].dtype).equals(slow[c]), c
    assert isinstance(fast["Contract"].dtype, pd.CategoricalDtype)  # the fast path was taken: one check per distinct value


def test_a_plain_export_is_never_read_as_text(big_csv, tmp_path, model_dir, monkeypatch):
    "The old path parsed a million cells per number column; the fast one does not call `read_raw` at all."
    model, out = load_model(model_dir), tmp_path / "out.csv"
    expected = score.score_raw(check_raw(read_raw(big_csv), target=False), model)
    def refuse(path): raise AssertionError(f"read_raw({path}) on a plain export")
    monkeypatch.setattr(score, "read_raw", refuse)
    assert score.score_file(big_csv, out, model) == 80_000
    back = pd.read_csv(out, dtype={"customerID": str}, keep_default_na=False)
    assert np.array_equal(back.churn_probability.to_numpy(), expected)  # every bit: the CSV holds round-trip floats
    assert back.customerID[[5, 50_000, 79_999]].tolist() == ["'=1+1", "'@SUM(1)", "'-2+3"]


@pytest.mark.parametrize("col, line, value, message", [
    ("MonthlyCharges", 11, "abc", "column 'MonthlyCharges', line 11: 'abc' is not a number"),
    ("tenure", 5, "1.5", "column 'tenure', line 5: '1.5' is not a whole number of months"),  # not np.float64(1.5)
    ("TotalCharges", 70_001, "inf", "column 'TotalCharges', line 70001: 'inf' is outside 0..12000000"),
    ("gender", 79_000, "robot", "column 'gender', line 79000: 'robot' is not one of female, male"),
])
def test_a_refused_file_keeps_the_text_paths_message(big_csv, tmp_path, model_dir, col, line, value, message):
    lines = big_csv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[header.index(col)] = value
    lines[line - 1] = ",".join(cells) + "\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    with pytest.raises(ChurnDataError, match="^" + message.replace(".", r"\.") + "$"):
        score.read_checked(bad)
    r = run(script("churn_score"), "--input", str(bad), "--output", str(tmp_path / "out.csv"), "--model", str(model_dir))
    assert_one_line_error(r, "churn_score: error: ", message)
    assert not (tmp_path / "out.csv").exists()
