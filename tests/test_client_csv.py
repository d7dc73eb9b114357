"""`churn_client --input/--output` against a real `churn_serve`: a CSV of customers sent in batches with their ids,
retried through a rate limit, resumed from its output, joinable to outcomes; and its bad inputs, one line each."""
import csv, json, os, subprocess

import pytest

from conftest import ROOT, free_port, running_server, script

KEY = "client-key-0123456789abcdef"
SECRET = "client-csv-log-secret-0123456789"
N, BATCH, LIMIT = 600, 50, 120  # 12 batches; at most 2 of them a second get through the rate limit


def client(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    return subprocess.run([script("churn_client"), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def read_output(path) -> list[list[str]]:
    with open(path, newline="") as f: return list(csv.reader(f))


@pytest.fixture(scope="module")
def customers(tmp_path_factory, data_csv):
    "N customers of the real data as a raw CSV (one id made formula-like), and their expected probabilities from the model."
    from churn_deploy.data import FEATURES, check_raw, clean, read_raw
    from churn_deploy.predict import load_model
    d = tmp_path_factory.mktemp("client_csv")
    raw = read_raw(data_csv).head(N).copy()
    raw.loc[0, "customerID"] = "+cmd-0001"
    raw.to_csv(d / "customers.csv", index=False)
    rows = clean(check_raw(raw, target=False))
    probs = load_model(ROOT / "model").predict_many(rows[FEATURES].to_dict(orient="records"))
    return d, list(raw.customerID), probs


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    "The service with an API key, a rate limit of LIMIT customers a second, and every prediction logged with the secret."
    d = tmp_path_factory.mktemp("client_server")
    with running_server(d, CHURN_API_KEY=KEY, CHURN_RATE_LIMIT=f"{LIMIT}/second", CHURN_PREDICTION_LOG_SAMPLE="1",
                        CHURN_PREDICTION_LOG_FILE=str(d / "predictions.jsonl"), CHURN_PREDICTION_LOG_KEY=SECRET) as (url, _, log):
        yield url, d / "predictions.jsonl"


def test_csv_in_batches_through_a_rate_limit(customers, limited_server, tmp_path):
    "Every customer answered once, in order, with the model's probability; 429s retried after Retry-After; ids safe for"
    " a spreadsheet; the prediction log holds each id's HMAC, so the batch joins to outcomes."
    from churn_deploy.drift import customer_hash
    from churn_deploy.outcomes import read_prediction_log
    d, ids, probs = customers
    url, plog = limited_server
    r = client("--url", url, "--api_key", KEY, "--input", d / "customers.csv", "--output", tmp_path / "answers.csv", "--batch_size", BATCH)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith(f"{N} customers scored in {N // BATCH} batches (") and ", 0 already in " in r.stdout, r.stdout
    retries = int(r.stdout.split("batches (")[1].split(" retries")[0])
    assert retries >= 1 and r.stderr.count("HTTP 429: rate limit") == retries, (r.stdout, r.stderr)  # one line per retry
    assert "\r" not in r.stderr  # no progress bar off a terminal
    out = read_output(tmp_path / "answers.csv")
    assert out[0] == ["customerID", "churn_probability", "churn", "model_version"]
    assert [row[0] for row in out[1:]] == ["'+cmd-0001", *ids[1:]]  # in order, the formula-like id neutralised
    assert all(abs(float(row[1]) - p) < 1e-12 and row[2] == str(p >= 0.5) for row, p in zip(out[1:], probs))
    assert {row[3] for row in out[1:]} == {json.loads((ROOT / "model" / "model.json").read_text())["version"]}
    logged = [rec["customer"] for rec in read_prediction_log(plog)]
    assert sorted(logged) == sorted(customer_hash(c, SECRET) for c in ids)


def test_resume_sends_only_what_is_missing(customers, limited_server, tmp_path):
    "A run cut short (the output holds 230 answers and a torn row): the rerun sends the other 370 and the file is whole."
    d, ids, _ = customers
    url, _ = limited_server
    full = tmp_path / "full.csv"
    assert client("--url", url, "--api_key", KEY, "--input", d / "customers.csv", "--output", full, "--batch_size", 100).returncode == 0
    text = full.read_text()
    lines = text.splitlines(keepends=True)
    part = tmp_path / "part.csv"
    part.write_text("".join(lines[:231]) + lines[231][:15])  # header, 230 rows, a row torn by a kill
    r = client("--url", url, "--api_key", KEY, "--input", d / "customers.csv", "--output", part, "--batch_size", 100)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith(f"{N - 230} customers scored in 4 batches") and "230 already in" in r.stdout, r.stdout
    assert part.read_text() == text
    again = client("--url", url, "--api_key", KEY, "--input", d / "customers.csv", "--output", part, "--batch_size", 100)
    assert again.returncode == 0 and again.stdout.startswith(f"0 customers scored in 0 batches (0 retries), {N} already in"), again.stdout


def test_bad_inputs_are_one_line(customers, limited_server, tmp_path):
    d, ids, _ = customers
    url, _ = limited_server
    text = (d / "customers.csv").read_text().splitlines()
    i = text[0].split(",").index("TotalCharges")
    (tmp_path / "nocol.csv").write_text("".join(",".join(c for j, c in enumerate(line.split(",")) if j != i) + "\n" for line in text[:5]))
    (tmp_path / "dup.csv").write_text("\n".join([*text[:4], text[2]]) + "\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    cases = [
        (("--input", tmp_path / "none.csv", "--output", tmp_path / "o.csv"), "none.csv' is not a file"),
        (("--input", tmp_path / "nocol.csv", "--output", tmp_path / "o.csv"), "missing column(s): totalcharges"),
        (("--input", tmp_path / "dup.csv", "--output", tmp_path / "o.csv"), f"customerID {ids[1]!r} appears more than once, on lines 3 and 5"),
        (("--input", d / "customers.csv", "--output", tmp_path / "other.csv"), "is not churn_client's output"),
        (("--input", d / "customers.csv"), "--input and --output go together"),
        (("--input", d / "customers.csv", "--output", tmp_path / "o.csv", "--batch_size", 0), "--batch_size must be at least 1"),
    ]
    for args, needle in cases:
        r = client("--url", url, "--api_key", KEY, *args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("churn_client: error: "), (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
    down = f"http://127.0.0.1:{free_port()}"
    r = client("--url", down, "--input", d / "customers.csv", "--output", tmp_path / "o.csv")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [r.stderr.strip()] and f"cannot reach {down}" in r.stderr, r.stderr
    r = client("--url", url, "--input", d / "customers.csv", "--output", tmp_path / "o.csv")  # no key: 401, not retried
    assert r.returncode == 1 and "HTTP 401: x-api-key" in r.stderr and "retrying" not in r.stderr, r.stderr
    assert not (tmp_path / "o.csv").exists() or len(read_output(tmp_path / "o.csv")) == 1
