"""`churn_serve` as a process: a bad model or bad settings stop it with one line; a fresh clone trains, then serves; workers."""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

import httpx
import pytest

from conftest import script
from churn_deploy.data import SAMPLE_CUSTOMER, canonical_sha256
from conftest import free_port
from conftest import running_server, server_env, stop, wait_startups
from support import SERVE_ERROR, assert_serve_error, serve  # shared with other test modules


@pytest.fixture
def model_copy(tmp_path, model_dir) -> Path:
    "A copy of the committed model directory to break."
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _edit_meta(d: Path, edit, reseal: bool = False):
    meta = json.loads((d / "model.json").read_text())
    edit(meta)
    if reseal:  # consistent digests, so only the content is wrong
        meta["weights_sha256"] = canonical_sha256(meta["weights"])
        meta["meta_sha256"] = canonical_sha256({k: v for k, v in meta.items() if k != "meta_sha256"})
    (d / "model.json").write_text(json.dumps(meta, indent=2))


# ---------------------------------------------------------------- a broken model: one line, no traceback

def test_corrupt_model_json(model_copy):
    (model_copy / "model.json").write_text("garbage{")
    assert_serve_error(serve(model_copy), str(model_copy / "model.json"), "not valid JSON")


def test_binary_model_json(model_copy):
    (model_copy / "model.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    assert_serve_error(serve(model_copy), "model.json", "not valid JSON")


def test_model_json_not_an_object(model_copy):
    (model_copy / "model.json").write_text("[]")
    assert_serve_error(serve(model_copy), "model.json", "is not a JSON object")


def test_tampered_weights(model_copy):
    def edit(meta): meta["weights"]["coef"]["contract=two_year"] += 0.5
    _edit_meta(model_copy, edit)
    assert_serve_error(serve(model_copy), "metadata does not match its recorded sha256")


def test_tampered_weights_with_resealed_metadata(model_copy):
    "Even with meta_sha256 recomputed, the weights must still match the digest training recorded beside them."
    def edit(meta):
        meta["weights"]["coef"]["contract=two_year"] += 0.5
        meta["meta_sha256"] = canonical_sha256({k: v for k, v in meta.items() if k != "meta_sha256"})
    _edit_meta(model_copy, edit)
    assert_serve_error(serve(model_copy), "weights do not match their recorded sha256")


def test_tampered_model_bin(model_copy):
    blob = bytearray((model_copy / "model.bin").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (model_copy / "model.bin").write_bytes(bytes(blob))
    assert_serve_error(serve(model_copy), str(model_copy / "model.bin"), "does not match the sha256")


def test_weights_for_unknown_columns(model_copy):
    def edit(meta): meta["weights"]["coef"]["colour=red"] = 1.0
    _edit_meta(model_copy, edit, reseal=True)
    assert_serve_error(serve(model_copy), "unknown columns", "colour=red")


def test_malformed_weights(model_copy):
    def edit(meta): meta["weights"]["intercept"] = "abc"
    _edit_meta(model_copy, edit, reseal=True)
    assert_serve_error(serve(model_copy), "weight 'intercept' is 'abc', not a finite number")


@pytest.mark.parametrize("how", ["CHURN_DATA missing", "download refused"])
def test_no_model_and_no_data(tmp_path, how):
    "The default ./model of a fresh clone is the one directory trained on first run; without data, one line says why not."
    empty, cache = tmp_path / "model", tmp_path / "cache"
    empty.mkdir(), cache.mkdir()
    env = dict(CHURN_CACHE_DIR=str(cache), CHURN_DATA_URL="http://127.0.0.1:9/x.csv")
    if how == "CHURN_DATA missing": env["CHURN_DATA"] = str(tmp_path / "missing.csv")
    line = assert_serve_error(serve(None, cwd=tmp_path, **env), "no model in model", "training one failed")
    assert (str(tmp_path / "missing.csv") if how == "CHURN_DATA missing" else "http://127.0.0.1:9/x.csv") in line
    assert list(empty.iterdir()) == [] and list(cache.iterdir()) == []  # nothing half-written


def test_explicit_model_dir_is_never_trained(tmp_path):
    "An explicit --model or CHURN_MODEL_DIR must hold a model: a missing or empty one is an error, not a place to train."
    assert_serve_error(serve(tmp_path / "nowhere"), f"model directory {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "empty").mkdir()
    assert_serve_error(serve(tmp_path / "empty"), f"no model in {tmp_path / 'empty'}")
    assert list((tmp_path / "empty").iterdir()) == []
    assert_serve_error(serve(None, CHURN_MODEL_DIR=str(tmp_path / "nowhere")), "does not exist")


@pytest.mark.parametrize("change, needle", [
    (lambda m: m.__setitem__("version", "9.9.9"), "metadata does not match its recorded sha256"),
    (lambda m: m["metrics"]["test"].__setitem__("auc", 0.99), "metadata does not match its recorded sha256"),
    (lambda m: m.pop("meta_sha256"), "has no meta_sha256"),
], ids=["version relabelled", "metrics doctored", "no digest"])
def test_edited_metadata_is_refused(model_copy, change, needle):
    _edit_meta(model_copy, change)
    assert_serve_error(serve(model_copy), str(model_copy / "model.json"), needle)


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "not a number", None], ids=["nan", "inf", "string", "null"])
def test_non_finite_or_non_numeric_weights_are_refused(model_copy, weight):
    value = float(weight) if weight in ("NaN", "Infinity") else weight
    _edit_meta(model_copy, lambda m: m["weights"]["coef"].__setitem__("tenure", value), reseal=True)
    assert_serve_error(serve(model_copy), "'tenure'", "not a finite number")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file: unreadable and read-only cannot be staged")
def test_unreadable_model_and_read_only_training_dir(model_copy, tmp_path):
    (model_copy / "model.json").chmod(0)
    assert_serve_error(serve(model_copy), "cannot read")
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o555)
    assert_serve_error(serve(None, cwd=ro), "read-only")


# ---------------------------------------------------------------- bad settings: the same one line

@pytest.mark.parametrize("args, env, field", [
    (["--port", "0"], {}, "port"),
    ([], {"CHURN_LOG_LEVEL": "loud"}, "log_level"),  # (CHURN_PORT would be overridden by serve()'s --port)
    ([], {"CHURN_WORKERS": "abc"}, "workers"),
    ([], {"CHURN_MAX_BATCH": "0"}, "max_batch"),
], ids=["--port 0", "CHURN_LOG_LEVEL loud", "CHURN_WORKERS abc", "CHURN_MAX_BATCH 0"])
def test_bad_settings(model_dir, args, env, field):
    r = serve(model_dir, *args, **env)
    assert_serve_error(r, f"churn_serve: error: {field}: ")


def test_an_unknown_churn_variable_is_named_at_start_up(model_copy):
    "A typo in a CHURN_* name is warned of, with the setting it likely meant, rather than silently ignored."
    (model_copy / "model.json").write_text("{")  # so the server stops after its start-up checks
    r = serve(model_copy, CHURN_WORKRES="2", CHURN_LOG_FORMAT="json")
    warning = "CHURN_WORKRES is not a setting and is ignored (did you mean CHURN_WORKERS?)"
    (line,) = [json.loads(l) for l in r.stderr.splitlines() if warning in l]
    assert line["level"] == "WARNING" and line["message"] == warning, line
    assert_serve_error(r, "model.json")


def test_port_in_use(model_dir):
    "Another process holds the port: a non-zero exit that says so, no traceback."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([script("churn_serve"), "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "address already in use" in r.stderr.lower(), r.stderr


# ---------------------------------------------------------------- the prediction log cannot be written: the same one line

@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_unwritable_prediction_log_is_one_line(tmp_path, model_dir, workers, where):
    "Tests run as root, which writes anywhere a directory can be: the log's parent is a regular file, or /proc."
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "predictions.jsonl" if where == "under a file" else Path("/proc/churn-predictions.jsonl")
    r = serve(model_dir, "--workers", workers, CHURN_PREDICTION_LOG_SAMPLE="1", CHURN_PREDICTION_LOG_FILE=str(path))
    assert_serve_error(r, f"CHURN_PREDICTION_LOG_FILE={path}: cannot write the prediction log")
    assert "Child process" not in r.stderr and "Started parent process" not in r.stderr, r.stderr


def test_one_worker_serves_the_verified_model_after_an_edit(tmp_path, model_copy):
    "With one worker as with several, a valid model.json written over the served one after start changes no answer."
    with running_server(tmp_path / "logs", model=model_copy, CHURN_REGISTRY_POLL="0.2") as (url, proc, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            before = c.post("/predict", json=SAMPLE_CUSTOMER).json()
            def edit(m):
                m["version"] = "edited-on-disk"
                m["weights"]["intercept"] += 1.0
            _edit_meta(model_copy, edit, reseal=True)
            time.sleep(1.5)  # several registry polls
            after = [c.post("/predict", json=SAMPLE_CUSTOMER).json() for _ in range(5)]
            meta = c.get("/model").json()
    assert after == [before] * 5, (before, after)
    assert meta["version"] == before["model_version"] != "edited-on-disk"
    assert "registry changed" not in log.read_text() and "Traceback" not in log.read_text()


# ---------------------------------------------------------------- workers

def _processes(field: int, value: int) -> list[int]:
    "Live processes whose /proc stat `field` (1: parent pid, 2: process group) equals `value`."
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try: fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError: continue
        if int(fields[field]) == value and fields[0] != "Z": out.append(int(stat.parent.name))
    return out


def _children(pid: int) -> list[int]: return _processes(1, pid)
def _group_alive(pgid: int) -> list[int]: return _processes(2, pgid)


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_two_workers(tmp_path, model_dir, form):
    "Two workers, started from another directory than the repository, with an absolute or a relative --model."
    from churn_deploy.predict import load_pipeline
    p = float(load_pipeline(model_dir).predict_proba([SAMPLE_CUSTOMER])[0, 1])
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    model = model_dir if form == "absolute" else Path(os.path.relpath(model_dir, elsewhere))
    with running_server(tmp_path, "--workers", "2", model=model, cwd=elsewhere, startup=60) as (url, proc, log):
        deadline = time.monotonic() + 30  # /health answers once the first worker is up; wait for the second
        while log.read_text().count("Application startup complete") < 2 and time.monotonic() < deadline: time.sleep(0.2)
        assert len(_children(proc.pid)) >= 2, "fewer than two worker processes"
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(20):
                r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"connection": "close"})  # new connections spread over workers
                assert r.status_code == 200 and abs(r.json()["churn_probability"] - p) <= 1e-9, r.text
        assert log.read_text().count("Application startup complete") == 2, log.read_text()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    deadline = time.monotonic() + 10  # helpers (multiprocessing's resource tracker) exit a moment after the supervisor
    while (left := _group_alive(proc.pid)) and time.monotonic() < deadline: time.sleep(0.1)
    assert left == [], "worker processes outlived the server"
    assert "Traceback" not in log.read_text()


def test_workers_serve_the_verified_model_after_a_restart(tmp_path, model_copy):
    "The model changes on disk after start and a worker dies: its replacement serves the verified model, and nobody goes down."
    with running_server(tmp_path / "logs", "--workers", "2", model=model_copy, startup=60) as (url, proc, log):
        wait_startups(log, 2)
        with httpx.Client(base_url=url, timeout=30) as c: before = c.get("/model").json()
        # A valid, re-signed model with another version replaces the verified one on disk.
        _edit_meta(model_copy, lambda m: m.__setitem__("version", "swapped-on-disk"), reseal=True)
        victim = _children(proc.pid)[-1]
        os.kill(victim, signal.SIGKILL)
        wait_startups(log, 3, timeout=60)  # the supervisor replaced the dead worker
        assert proc.poll() is None, "the supervisor went down with the worker"
        assert victim not in _children(proc.pid)
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(30):
                r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"connection": "close"})
                assert r.status_code == 200 and r.json()["model_version"] == before["version"], r.text
                meta = c.get("/model", headers={"connection": "close"}).json()
                assert (meta["version"], meta["file_sha256"]) == (before["version"], before["file_sha256"])
    assert "Traceback" not in log.read_text()


# ---------------------------------------------------------------- the fresh clone: slow (~40 s), trains first

def test_fresh_clone_trains_then_serves_SLOW(tmp_path, data_csv, model_dir):
    "No ./model in a fresh clone but data at hand: `churn_serve` trains one there, then serves correct predictions."
    clone = tmp_path / "clone"; clone.mkdir()
    fresh = clone / "model"
    from churn_deploy.predict import load_pipeline
    with running_server(tmp_path / "logs", model=None, cwd=clone, startup=240, CHURN_DATA=str(data_csv),
                        CHURN_CACHE_DIR=str(tmp_path / "cache")) as (url, proc, log):
        assert {"model.bin", "model.json"} <= {f.name for f in fresh.iterdir()}
        p = float(load_pipeline(fresh).predict_proba([SAMPLE_CUSTOMER])[0, 1])
        r = httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, timeout=30)
        assert r.status_code == 200, r.text
        assert abs(r.json()["churn_probability"] - p) <= 1e-9 and r.json()["churn"] is True
        assert httpx.get(url + "/model", timeout=30).json()["metrics"]["test"]["auc"] >= 0.857
        trained, committed = (json.loads((d / "model.json").read_text()) for d in (fresh, model_dir))
        assert trained["weights"] == committed["weights"]  # training is deterministic
    assert "training one first" in log.read_text() and "Traceback" not in log.read_text()


@pytest.mark.parametrize("key", [" " * 16, "\t" * 20, "short-key"], ids=["16 spaces", "tabs", "9 characters"])
def test_churn_hash_key_refuses_a_key_a_service_would_refuse(key):
    "churn_hash_key hashes no key that churn_serve would refuse as CHURN_API_KEY: one line, a non-zero exit."
    r = subprocess.run([script("churn_hash_key"), "--name", "crm"], input=key + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stdout == "", r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("churn_hash_key: error: the key "), line


def test_churn_hash_key_hashes_a_good_key():
    r = subprocess.run([script("churn_hash_key"), "--name", "crm"], input="abcdefghijklmnopqrstu\n", capture_output=True, text=True, timeout=60)
    from churn_deploy.config import key_hash
    assert r.returncode == 0 and r.stdout.strip() == f"crm:{key_hash('abcdefghijklmnopqrstu')}", r.stdout + r.stderr


LEAN_PROBE = """
import sys, churn_deploy.run, churn_deploy.serve
heavy = ("numpy", "pandas", "sklearn", "scipy", "pyarrow", "matplotlib", "churn_deploy.train", "churn_deploy.monitor",
         "churn_deploy.outcomes", "churn_deploy.evaluate", "churn_deploy.campaign", "churn_deploy.retrain", "churn_deploy.score",
         "fastcore.script")  # the whole command-line parser: a plain command line is read without it (01_cli)
print(" ".join(m for m in heavy if m in sys.modules))
"""


def test_serving_path_imports_nothing_the_first_prediction_does_not_need():
    "churn_serve's modules load no training, reporting or data-frame code, nor fastcore's parser, before the first request (issue 18: a lean cold start; uvicorn's own click is the floor's too)."
    r = subprocess.run([sys.executable, "-c", LEAN_PROBE], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [], f"imported on the serving path: {r.stdout.strip()}"


def test_a_bad_offer_catalogue_stops_the_start_in_one_line(tmp_path, model_dir):
    "The desk's catalogue is checked before any worker starts, from the flag or the environment."
    (tmp_path / "offers.toml").write_text('[[offer]]\nid = "x"\n')
    assert_serve_error(serve(model_dir, "--offers", str(tmp_path / "offers.toml")), "offers.toml: offer 1 ('x'): label")
    assert_serve_error(serve(model_dir, "--workers", "2", CHURN_OFFERS=str(tmp_path / "offers.toml")), "offers.toml: offer 1")
