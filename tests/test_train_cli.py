"""churn_train as a real process: bad files give one line and a non-zero exit; retraining reproduces the committed model."""
import json, os, subprocess
from datetime import datetime

import pytest

from conftest import HEADER, ROW, script


CASES = {
    "empty file": ("", "the file is empty"),
    "header only": (HEADER + "\n", "no data rows"),
    "missing column": (HEADER.replace(",tenure", "") + "\n" + ROW.replace(",No,1,No,", ",No,No,", 1) + "\n",
                       "missing column(s): tenure"),
    "unknown category": (HEADER + "\n" + ROW + "\n" + ROW.replace("Month-to-month", "Weekly") + "\n",
                         "column 'Contract', line 3: 'Weekly' is not one of"),
    "non-numeric tenure": (HEADER + "\n" + ROW.replace(",No,1,No,", ",No,one,No,", 1) + "\n",
                           "column 'tenure', line 2: 'one' is not a number"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_csv_one_line_error(case, tmp_path):
    text, expected = CASES[case]
    (tmp_path / "bad.csv").write_text(text)
    r = subprocess.run([script("churn_train"), "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("churn_train: error: "), r.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


def test_retraining_reproduces_committed_model(model_dir, data_csv, tmp_path):
    "The model in the image is the one the code makes: retrain with the same clock, compare bytes."
    meta = json.loads((model_dir / "model.json").read_text())
    epoch = int(datetime.fromisoformat(meta["created_at"]).timestamp())
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    r = subprocess.run([script("churn_train"), "--data", str(data_csv), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "test AUC 0.8" in r.stdout
    auc = float(r.stdout.split("test AUC ")[1].split()[0])
    assert auc >= 0.857, r.stdout
    for f in ("model.bin", "model.json"):
        assert (tmp_path / f).read_bytes() == (model_dir / f).read_bytes(), f"{f} differs from the committed one"
