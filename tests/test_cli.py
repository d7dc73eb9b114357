"""`churn_score` and `churn_client` as real processes: the full CSV, a live server, and one-line errors."""
import csv, json, subprocess, sys

import pytest

from conftest import HEADER, ROOT, ROW, assert_one_line_error, free_port, run, running_server, script, server_env
from churn_deploy.data import SAMPLE_CUSTOMER


def read_rows(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


@pytest.fixture(scope="module")
def pipeline(model_dir):
    from churn_deploy.predict import load_pipeline
    return load_pipeline(model_dir)


@pytest.fixture(scope="module")
def reference(data_csv, pipeline):
    "customerID and the Pipeline's probability of every row of the real CSV, in file order."
    from churn_deploy.data import load_churn_data
    from churn_deploy.train import to_records
    df = load_churn_data(data_csv)
    return list(df["customerid"]), [float(p) for p in pipeline.predict_proba(to_records(df))[:, 1]]


# ---------------------------------------------------------------- churn_score

def test_score_full_csv(tmp_path, data_csv, model_dir, reference):
    out = tmp_path / "out.csv"
    r = run(script("churn_score"), "--input", str(data_csv), "--output", str(out), "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    assert "7,043" in r.stdout
    header, rows = read_rows(out)
    assert header == ["customerID", "churn_probability", "churn"]
    ids, probs = reference
    assert len(rows) == 7043 == len(ids)
    assert [row[0] for row in rows] == ids  # input order
    with open(data_csv, newline="") as f:
        assert ids == [row["customerID"] for row in csv.DictReader(f)]
    worst = max(abs(float(row[1]) - p) for row, p in zip(rows, probs))
    assert worst <= 1e-12, worst
    assert [row[2] for row in rows] == ["true" if p >= 0.5 else "false" for p in probs]


def test_score_without_churn_column_and_default_model(tmp_path, data_csv, reference):
    "A file to score has no answer yet; with no --model, CHURN_MODEL_DIR names the model."
    with open(data_csv, newline="") as f:
        rows = list(csv.reader(f))[:201]
    assert rows[0][-1] == "Churn"
    (tmp_path / "in.csv").write_text("\n".join(",".join(r[:-1]) for r in rows) + "\n")
    out = tmp_path / "out.csv"
    r = run(script("churn_score"), "--input", str(tmp_path / "in.csv"), "--output", str(out),
            cwd=tmp_path, CHURN_MODEL_DIR=str(ROOT / "model"))  # no ./model here: only the variable can find it
    assert r.returncode == 0, r.stderr
    header, got = read_rows(out)
    ids, probs = reference
    assert header == ["customerID", "churn_probability", "churn"] and len(got) == 200
    assert [g[0] for g in got] == ids[:200]
    assert max(abs(float(g[1]) - p) for g, p in zip(got, probs)) <= 1e-12


BAD_CSV = {  # name: (file text, what the one line must say)
    "unknown category": (f"{HEADER}\n{ROW}\n{ROW.replace('Month-to-month', 'Weekly')}\n",
                         "column 'Contract', line 3: 'Weekly' is not one of"),
    "not a number": (f"{HEADER}\n{ROW.replace(',29.85,29.85,', ',abc,29.85,')}\n", "column 'MonthlyCharges', line 2: 'abc' is not a number"),
    "missing column": (HEADER.replace(",tenure", "") + "\n" + ROW.replace(",No,1,No,", ",No,No,", 1) + "\n", "missing column(s): tenure"),
    "empty file": ("", "the file is empty"),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_score_bad_csv(tmp_path, model_dir, case):
    text, expected = BAD_CSV[case]
    (tmp_path / "in.csv").write_text(text)
    r = run(script("churn_score"), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--model", str(model_dir))
    assert_one_line_error(r, "churn_score: error: ", expected)
    assert not (tmp_path / "out.csv").exists()


def test_score_missing_input_file(tmp_path, model_dir):
    r = run(script("churn_score"), "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "out.csv"), "--model", str(model_dir))
    assert_one_line_error(r, "churn_score: error: ", str(tmp_path / "nope.csv"), "not a file")


@pytest.mark.parametrize("args", [["--input", "x.csv"], ["--output", "out.csv"], []], ids=["no --output", "no --input", "neither"])
def test_score_missing_arguments(tmp_path, args):
    assert_one_line_error(run(script("churn_score"), *args), "churn_score: error: ", "--input and --output")


@pytest.fixture
def one_customer_csv(tmp_path):
    "A valid file to score that needs no real data."
    (tmp_path / "one.csv").write_text(f"{HEADER}\n{ROW}\n")
    return tmp_path / "one.csv"


def test_score_unwritable_output(tmp_path, one_customer_csv, model_dir):
    out = tmp_path / "no-such-dir" / "out.csv"
    r = run(script("churn_score"), "--input", str(one_customer_csv), "--output", str(out), "--model", str(model_dir))
    assert_one_line_error(r, "churn_score: error: ", "cannot write", str(out))


def test_score_missing_model(tmp_path, one_customer_csv):
    r = run(script("churn_score"), "--input", str(one_customer_csv), "--output", str(tmp_path / "out.csv"), "--model", str(tmp_path / "none"))
    assert_one_line_error(r, "churn_score: error: ", str(tmp_path / "none"), "model.json")


# ---------------------------------------------------------------- churn_client against the real server

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server")) as (url, _, _log): yield url


KEY = "cli-test-key-0123456789"  # keys have at least 16 characters


@pytest.fixture(scope="module")
def key_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("key_server"), CHURN_API_KEY=KEY) as (url, _, _log): yield url


def _answer(stdout: str) -> tuple[dict, str]:
    "The JSON answer and the verdict line the client prints."
    *body, verdict = stdout.strip().splitlines()
    return json.loads("\n".join(body)), verdict


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_client_sends_the_workshop_customer(server, pipeline, how):
    cmd = [script("churn_client")] if how == "console script" else [sys.executable, "-m", "churn_deploy.client"]
    r = run(*cmd, "--url", server)
    assert r.returncode == 0, r.stderr
    answer, verdict = _answer(r.stdout)
    p = float(pipeline.predict_proba([SAMPLE_CUSTOMER])[0, 1])
    assert abs(answer["churn_probability"] - p) <= 1e-9 and answer["churn"] is True
    assert verdict == "-> send the retention offer"


def test_client_with_a_customer_file(server, pipeline, tmp_path):
    loyal = {**SAMPLE_CUSTOMER, "contract": "two_year", "tenure": 60, "totalcharges": 1791.0, "onlinesecurity": "yes"}
    p = float(pipeline.predict_proba([loyal])[0, 1])
    assert p < 0.5
    (tmp_path / "c.json").write_text(json.dumps(loyal))
    r = run(script("churn_client"), "--url", server + "/", "--customer", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr
    answer, verdict = _answer(r.stdout)
    assert abs(answer["churn_probability"] - p) <= 1e-9 and verdict == "-> no offer needed"


def test_client_relays_the_service_error(server, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({**SAMPLE_CUSTOMER, "streamingtv": "maybe"}))
    r = run(script("churn_client"), "--url", server, "--customer", str(tmp_path / "c.json"))
    assert_one_line_error(r, "churn_client: error: ", "HTTP 422", "streamingtv")


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_client_unreachable(how):
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [script("churn_client")] if how == "console script" else [sys.executable, "-m", "churn_deploy.client"]
    r = run(*cmd, "--url", url, timeout=60)
    assert_one_line_error(r, f"churn_client: error: cannot reach {url}")


def test_client_api_key_flag(key_server):
    r = run(script("churn_client"), "--url", key_server, "--api_key", KEY)  # fastcore spells flags as the parameters
    assert r.returncode == 0, r.stderr
    assert _answer(r.stdout)[1] == "-> send the retention offer"


def test_client_api_key_from_environment(key_server):
    r = run(script("churn_client"), "--url", key_server, CHURN_API_KEY=KEY)
    assert r.returncode == 0, r.stderr
    assert _answer(r.stdout)[0]["churn"] is True


def test_client_without_api_key(key_server):
    assert_one_line_error(run(script("churn_client"), "--url", key_server), "churn_client: error: ", "401")


def test_client_wrong_api_key(key_server):
    assert_one_line_error(run(script("churn_client"), "--url", key_server, CHURN_API_KEY="wrong-key-0123456789"), "churn_client: error: ", "401")
