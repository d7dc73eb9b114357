"""churn_train as a real process: bad files give one line and a non-zero exit; retraining reproduces the committed model."""
import json, os, platform, subprocess
from datetime import datetime
from pathlib import Path

import pytest

from conftest import HEADER, ROW, script
from support import telco_csv  # shared with other test modules

pytestmark = pytest.mark.long_unit  # minutes of a worker: handed out first (conftest.py)


NEED = "need at least 100 rows and 25 of each class"  # the minimum the README states

CASES = {
    "empty file": ("", "the file is empty"),
    "header only": (HEADER + "\n", "no data rows"),
    "missing column": (HEADER.replace(",tenure", "") + "\n" + ROW.replace(",No,1,No,", ",No,No,", 1) + "\n",
                       "missing column(s): tenure"),
    "unknown category": (HEADER + "\n" + ROW + "\n" + ROW.replace("Month-to-month", "Weekly") + "\n",
                         "column 'Contract', line 3: 'Weekly' is not one of"),
    "non-numeric tenure": (HEADER + "\n" + ROW.replace(",No,1,No,", ",No,one,No,", 1) + "\n",
                           "column 'tenure', line 2: 'one' is not a number"),
    "one row": (telco_csv(0, 1), f"too little data to train: 1 rows (0 churned, 1 stayed); {NEED}"),
    "too small to split": (telco_csv(1, 1), f"too little data to train: 2 rows (1 churned, 1 stayed); {NEED}"),
    "11 rows": (telco_csv(4, 7), f"too little data to train: 11 rows (4 churned, 7 stayed); {NEED}"),
    "99 rows": (telco_csv(40, 59), f"too little data to train: 99 rows (40 churned, 59 stayed); {NEED}"),
    "too few churned": (telco_csv(24, 476), f"too little data to train: 500 rows (24 churned, 476 stayed); {NEED}"),
    "too few stayed": (telco_csv(476, 24), f"too little data to train: 500 rows (476 churned, 24 stayed); {NEED}"),
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


def test_the_minimum_trains(tmp_path):
    "Exactly 100 rows with 25 of one class is enough."
    (tmp_path / "min.csv").write_text(telco_csv(25, 75))
    r = subprocess.run([script("churn_train"), "--data", str(tmp_path / "min.csv"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["data"]["rows"] == {"total": 100, "full_train": 80, "test": 20}


def _has_avx2() -> bool:
    try: return platform.machine().lower() in ("x86_64", "amd64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError: return False


@pytest.mark.skipif(not _has_avx2(), reason="the committed model was fitted with OpenBLAS's AVX2 kernels, which this CPU lacks")
def test_retraining_reproduces_committed_model(model_dir, data_csv, tmp_path):
    "The model in the image is the one the code makes: retrain with the same clock, compare bytes."
    from churn_deploy.data import canonical_sha256
    meta = json.loads((model_dir / "model.json").read_text())
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    assert meta["meta_sha256"] == canonical_sha256(rest), "model.json's metadata was edited after training"
    epoch = int(datetime.fromisoformat(meta["created_at"]).timestamp())
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    env.pop("OPENBLAS_CORETYPE", None)  # churn_train picks the kernels itself (06_train, "The model directory")
    r = subprocess.run([script("churn_train"), "--data", str(data_csv), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "test AUC 0.8" in r.stdout
    auc = float(r.stdout.split("test AUC ")[1].split()[0])
    assert auc >= 0.857, r.stdout
    assert "the test split's 1,409 customers are the frozen holdout" in r.stdout, r.stdout
    for f in ("model.bin", "model.json", "holdout.json"):
        assert (tmp_path / f).read_bytes() == (model_dir / f).read_bytes(), f"{f} differs from the committed one"


def test_committed_model_keeps_its_frozen_holdout(model_dir, data_csv):
    "model/holdout.json: the course test split's customer ids, its source file, the sha256 model.json records."
    import hashlib
    from churn_deploy.data import load_churn_data
    from churn_deploy.train import rows_sha256, split_data
    meta = json.loads((model_dir / "model.json").read_text())
    raw = (model_dir / "holdout.json").read_bytes()
    assert meta["artifacts"]["holdout.json"]["sha256"] == hashlib.sha256(raw).hexdigest()
    ho, test = json.loads(raw), split_data(load_churn_data(data_csv)).test
    assert ho["customer_ids"] == test.customerid.tolist() and len(set(ho["customer_ids"])) == 1409
    assert ho["source"] == {"file": data_csv.name, "sha256": meta["data"]["sha256"]}
    assert ho["rows_sha256"] == rows_sha256(test) == meta["artifacts"]["holdout.json"]["rows_sha256"]
    assert meta["split"]["method"] == "course"


@pytest.mark.parametrize("inside", [False, True])
def test_out_refuses_a_registry(tmp_path, inside):
    "--out naming a registry (or a version in one) is one line, before any data is read; nothing is written."
    reg = tmp_path / "models"
    (reg / "0.1.0+abc").mkdir(parents=True)
    (reg / "registry.json").write_text('{"champion": "0.1.0+abc"}')
    before = sorted(p.relative_to(reg) for p in reg.rglob("*"))
    out = reg / "0.1.0+abc" if inside else reg
    r = subprocess.run([script("churn_train"), "--data", str(tmp_path / "absent.csv"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    where = f"is inside the model registry {reg}" if inside else "is a model registry"
    assert line.startswith(f"churn_train: error: {out} {where} ") and f"churn_models add DIR --models {reg}" in line, line
    assert "churn_train --out" not in line and "absent.csv" not in line, line  # refused before the data is looked for
    assert sorted(p.relative_to(reg) for p in reg.rglob("*")) == before


def test_one_huge_line_is_named(tmp_path):
    "A 1 GB file of one line (sparse: cheap to make) is not 'the file is empty' nor 'straddling object'."
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f: f.truncate(1 << 30)
    r = subprocess.run([script("churn_train"), "--data", str(huge), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and not (tmp_path / "m").exists()
    assert r.stderr.strip().splitlines() == [
        f"churn_train: error: {huge}: cannot read CSV: line 1 is longer than 1 MB: not a Telco CSV export"], r.stderr


def test_sha256_pins_refuse_tampering(model_dir, tmp_path):
    "A second check of the model's sha256 pins, apart from 07_predict: each edit of model.json or model.bin is refused."
    import hashlib, shutil
    from churn_deploy.predict import ModelError, load_model, load_pipeline, read_metadata
    from churn_deploy.registry import is_legacy, read_registry, version_dir
    src = model_dir if is_legacy(model_dir) else version_dir(model_dir, read_registry(model_dir).champion)
    d = tmp_path / "m"; shutil.copytree(src, d)
    raw = (d / "model.json").read_bytes()
    pin = hashlib.sha256(raw).hexdigest()  # computed here, independently of the package
    assert load_model(d, pin).sha256 == pin
    meta = json.loads(raw)
    # the same content, other bytes: the pin the server took no longer holds
    (d / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    with pytest.raises(ModelError, match="changed since the server verified it"): load_model(d, pin)
    load_model(d)  # without a pin it is still a valid model
    # a weight edited, and one edited with its own digest recomputed: the metadata's sha256 catches both
    first = next(iter(meta["weights"]["coef"]))
    edited = json.loads(raw); edited["weights"]["coef"][first] += 0.5
    (d / "model.json").write_text(json.dumps(edited, indent=2) + "\n")
    with pytest.raises(ModelError, match="weights do not match|does not match its recorded sha256"): load_model(d)
    from churn_deploy.data import canonical_sha256
    edited["weights_sha256"] = canonical_sha256(edited["weights"])
    (d / "model.json").write_text(json.dumps(edited, indent=2) + "\n")
    with pytest.raises(ModelError, match="the metadata does not match its recorded sha256"): load_model(d)
    # model.bin changed by one byte: refused before anything is unpickled
    (d / "model.json").write_bytes(raw)
    blob = bytearray((d / "model.bin").read_bytes()); blob[len(blob) // 2] ^= 1
    (d / "model.bin").write_bytes(bytes(blob))
    with pytest.raises(ModelError): read_metadata(d)
    with pytest.raises(ModelError): load_pipeline(d)


@pytest.mark.parametrize("first", ["churn_deploy.evaluate", "churn_deploy.train", "churn_deploy.retrain"])
def test_blas_kernels_pinned_whichever_module_loads_first(first):
    "Each module that loads numpy pins OpenBLAS's kernels itself, on its first line: no import order is needed."
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = (f"import os, sys, {first}; from threadpoolctl import threadpool_info; "
            "print(os.environ.get('OPENBLAS_CORETYPE'), ','.join(sorted({str(i.get('architecture')) for i in threadpool_info() "
            "if i['internal_api'] == 'openblas'})))")
    r = subprocess.run([script("python"), "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    if _has_avx2(): assert r.stdout.split() == ["Haswell", "Haswell"], r.stdout
    else: assert r.stdout.split()[0] == "None", r.stdout
    source = (Path(__file__).resolve().parents[1] / "churn_deploy" / (first.split(".")[1] + ".py")).read_text()
    assert source.index("pin_blas_kernels()") < source.index("import numpy"), "the pin must come before numpy loads"
