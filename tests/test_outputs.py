"""What the project writes, as real processes: `churn_score` and `churn_campaign` CSVs a spreadsheet opens safely, a
customer listed twice refused, a registry's champion (or `--version`) used and named; the prediction log on a disk
that fills up keeps whole records only."""
import csv, json, re, shutil, subprocess, sys, textwrap
from pathlib import Path

import pytest

from conftest import HEADER, ROOT, ROW, assert_one_line_error, run, script
from support import model_variant
from churn_deploy.config import META_FILE
from churn_deploy.registry import REGISTRY_FILE, add_version, init_registry, is_registry, read_registry, version_dir

# The ids, and the rest of OWASP's list: each would run (or hide a formula) in a spreadsheet.
HOSTILE = ['=HYPERLINK("http://x","y")', "+cmd", "@SUM(1)", "=cmd|' /C calc'!A0", "-2+3", "\tTAB-1", "\rCR-1"]
PLAIN = "7590-VHVEG"


def customers_csv(path: Path, ids: list[str]) -> Path:
    "A raw Telco file of the conftest customer under each id, written as a spreadsheet or pandas would (csv module quoting)."
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER.split(","))
        for i in ids: w.writerow([i, *ROW.split(",")[1:]])
    return path


def read_back(path: Path, quoting=csv.QUOTE_MINIMAL) -> tuple[list, list[list]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f, quoting=quoting))
    return header, rows


# ---------------------------------------------------------------- spreadsheet formulas (issue 20, item 5)

def test_score_neutralises_formula_ids(tmp_path, model_dir):
    inp, out = customers_csv(tmp_path / "in.csv", [*HOSTILE, PLAIN]), tmp_path / "out.csv"
    r = run(script("churn_score"), "--input", str(inp), "--output", str(out), "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    header, rows = read_back(out)
    assert header == ["customerID", "churn_probability", "churn"] and len(rows) == len(HOSTILE) + 1
    assert [row[0] for row in rows] == ["'" + h for h in HOSTILE] + [PLAIN]
    probs = {float(row[1]) for row in rows}
    assert len(probs) == 1 and 0 < probs.pop() < 1  # the same customer: the id changes nothing else
    text = out.read_bytes().decode()
    assert not re.search(r'"-?[0-9][0-9.e+-]*"', text), text  # numbers are written bare, never as quoted text
    assert all(line.startswith('"') for line in text.split("\n") if line)  # every id is quoted text


def test_campaign_neutralises_formula_ids(tmp_path, model_dir):
    "Every text cell quoted, formula-like ids prefixed; numbers, negative ones included, read back as numbers."
    inp, out = customers_csv(tmp_path / "in.csv", [*HOSTILE, PLAIN]), tmp_path / "targets.csv"
    r = run(script("churn_campaign"), "--input", str(inp), "--output", str(out), "--model", str(model_dir), "--budget", "1000000")
    assert r.returncode == 0, r.stderr
    header, rows = read_back(out, csv.QUOTE_NONNUMERIC)  # quoted cells are text, bare cells must parse as numbers
    assert len(rows) == len(HOSTILE) + 1  # the CR of an id stays inside its cell
    col = {name: i for i, name in enumerate(header)}
    assert sorted(row[col["customerID"]] for row in rows) == sorted(["'" + h for h in HOSTILE] + [PLAIN])
    for row in rows:
        assert isinstance(row[col["churn_probability"]], float) and 0 < row[col["churn_probability"]] < 1
        # a customer who stayed: the call's cost and the offer's price for nothing (save rate 0.3), a negative number
        assert row[col["realised_net"]] == pytest.approx(0.3 * -row[col["offer_cost"]] - 5.0) and row[col["realised_net"]] < 0
        assert row[col["rank"]] in range(1, len(rows) + 1)


# ---------------------------------------------------------------- a customer listed twice (issue 20, item 5)

@pytest.mark.parametrize("command", ["churn_score", "churn_campaign"])
def test_duplicate_ids_are_refused(tmp_path, model_dir, command):
    inp, out = customers_csv(tmp_path / "in.csv", ["A-1", "B-2", "C-3", "B-2", "D-4", "B-2"]), tmp_path / "out.csv"
    r = run(script(command), "--input", str(inp), "--output", str(out), "--model", str(model_dir))
    assert_one_line_error(r, f"{command}: error: ", "customerID 'B-2' appears more than once, on lines 3, 5 and 7")
    assert not out.exists()


# ---------------------------------------------------------------- a registry's champion (issue 16, item 3)

@pytest.fixture
def two_versions(tmp_path) -> tuple[Path, str, str]:
    "A registry: the committed model as champion, a second version (intercept +1) registered, and a stray top-level model.json."
    root = tmp_path / "registry"
    shutil.copytree(ROOT / "model", root, ignore=shutil.ignore_patterns(REGISTRY_FILE))
    if not is_registry(root): init_registry(root)
    first = read_registry(root).champion
    second = add_version(root, model_variant(version_dir(root, first), tmp_path / "v2", "0.2.0+intercept1", "2030-01-01T00:00:00+00:00", 1.0))
    shutil.copy(version_dir(root, second) / META_FILE, root / META_FILE)  # what `churn_train --out <registry>` once left
    return root, first, second


def _probabilities(command: str, out: Path) -> dict[str, float]:
    header, rows = read_back(out)
    return {row[header.index("customerID")]: float(row[header.index("churn_probability")]) for row in rows}


@pytest.mark.parametrize("command", ["churn_score", "churn_campaign"])
def test_registry_champion_by_default_and_version_on_request(tmp_path, two_versions, command):
    root, first, second = two_versions
    inp = customers_csv(tmp_path / "in.csv", ["c-1", "c-2"])
    extra = ["--budget", "1000000"] if command == "churn_campaign" else []
    got = {}
    for name, args in {"default": [], "second": ["--version", second], "first dir": [], "second dir": []}.items():
        model = {"first dir": version_dir(root, first), "second dir": version_dir(root, second)}.get(name, root)
        out = tmp_path / f"{name}.csv"
        r = run(script(command), "--input", str(inp), "--output", str(out), "--model", str(model), *args, *extra)
        assert r.returncode == 0, r.stderr
        got[name] = (_probabilities(command, out), r.stderr.strip())
    assert got["default"][0] == got["first dir"][0] != got["second dir"][0]  # the champion, not the stray model.json
    assert got["second"][0] == got["second dir"][0]
    assert got["default"][1] == f"{command}: model {first} (the champion) of {root}"  # one line on stderr
    assert got["second"][1] == f"{command}: model {second} (--version) of {root}"


@pytest.mark.parametrize("command", ["churn_score", "churn_campaign"])
def test_registry_errors_are_one_line_and_never_advise_training_into_it(tmp_path, two_versions, command):
    root, first, _ = two_versions
    inp, out = customers_csv(tmp_path / "in.csv", ["c-1"]), tmp_path / "out.csv"
    r = run(script(command), "--input", str(inp), "--output", str(out), "--model", str(root), "--version", "9.9.9")
    assert_one_line_error(r, f"{command}: error: ", "unknown version '9.9.9'")
    (version_dir(root, first) / META_FILE).unlink()  # the champion's file is gone
    r = run(script(command), "--input", str(inp), "--output", str(out), "--model", str(root))
    line = assert_one_line_error(r, f"{command}: error: ", str(version_dir(root, first)))
    assert "churn_train" not in line, line
    assert not out.exists()


# ---------------------------------------------------------------- the prediction log on a full disk (issue 20, item 6)

FULL_DISK = textwrap.dedent("""
    import io, json, logging, resource, signal, sys
    from churn_deploy.data import SAMPLE_CUSTOMER
    from churn_deploy.observe import PredictionLog
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk fails with ENOSPC
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    plog = PredictionLog(1.0, path, stream=io.StringIO()).start()
    def send(ids):
        for i in ids: plog.record(f"r-{i}", None, "v1", "champion", [SAMPLE_CUSTOMER], [0.25 + i / 1000], 0.5)
        plog.queue.join()  # written (or lost) by the background thread
    send(range(200))
    lost_while_full = plog.sink_errors
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space returns
    send(range(200, 250))
    plog.stop()
    print(json.dumps({"lost_while_full": lost_while_full, "lost": plog.sink_errors}))
""")


def test_prediction_log_on_a_full_disk_keeps_whole_records(tmp_path):
    "RLIMIT_FSIZE gives real short writes and EFBIG: no torn line, the losses counted and logged once, order kept."
    path, limit = tmp_path / "predictions.jsonl", 20_000
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), str(limit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", lines[-1][-80:]  # the file ends with a whole record
    records = [json.loads(line) for line in lines[:-1]]  # every line is a whole record
    ids = [int(rec["request_id"][2:]) for rec in records]
    assert ids == sorted(ids) and ids[-50:] == list(range(200, 250))  # in order; all written again once space returned
    assert 0 < counts["lost_while_full"] == counts["lost"] == 250 - len(records)
    assert sum(len(line) + 1 for line in lines[:-1]) <= limit + 50 * 2000
    lost = [l for l in r.stderr.splitlines() if "being lost" in l]
    assert len(lost) == 1, r.stderr  # one line a minute, not one a record
    assert str(path) in lost[0] and "File too large" in lost[0], lost
    assert sum("again" in l for l in r.stderr.splitlines()) == 1, r.stderr
