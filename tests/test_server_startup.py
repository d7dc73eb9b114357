"""`churn_serve` as a process: a bad model or bad settings stop it with one line; a fresh clone trains, then serves; workers."""
import json, os, shutil, signal, socket, subprocess, tempfile, time
from pathlib import Path

import httpx
import pytest

from conftest import script
from churn_deploy.data import SAMPLE_CUSTOMER, canonical_sha256
from conftest import free_port
from test_server import running_server, server_env, stop

PREFIX = "churn_serve: error: "


def serve(model: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    "Run churn_serve until it exits; fail at once if it serves /health instead, or is still running after `timeout`."
    port = free_port()
    cmd = [script("churn_serve"), "--model", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=server_env(**env), start_new_session=True)
        deadline, served = time.monotonic() + timeout, False
        while proc.poll() is None and time.monotonic() < deadline and not served:
            time.sleep(0.2)
            try: served = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError: pass
        stop(proc)
        err.seek(0), out.seek(0)
        stderr = err.read().decode(errors="replace")
        if served: pytest.fail(f"churn_serve started serving instead of exiting:\n{stderr}")
        if time.monotonic() >= deadline: pytest.fail(f"churn_serve was still running after {timeout} s:\n{stderr}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"), stderr)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    "Non-zero exit; stderr ends with one `churn_serve: error:` line holding `needles`; no traceback anywhere."
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith(PREFIX), r.stderr
    assert sum(l.startswith(PREFIX) for l in lines) == 1, r.stderr
    for n in needles: assert n in lines[-1], (n, lines[-1])
    return lines[-1]


@pytest.fixture
def model_copy(tmp_path, model_dir) -> Path:
    "A copy of the committed model directory to break."
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _edit_meta(d: Path, edit, reseal: bool = False):
    meta = json.loads((d / "model.json").read_text())
    edit(meta)
    if reseal: meta["weights_sha256"] = canonical_sha256(meta["weights"])  # consistent, so only the content is wrong
    (d / "model.json").write_text(json.dumps(meta, indent=2))


# ---------------------------------------------------------------- a broken model: one line, no traceback

def test_corrupt_model_json(model_copy):
    (model_copy / "model.json").write_text("garbage{")
    assert_one_line_error(serve(model_copy), str(model_copy / "model.json"), "not valid JSON")


def test_binary_model_json(model_copy):
    (model_copy / "model.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    assert_one_line_error(serve(model_copy), "model.json", "not valid JSON")


def test_model_json_not_an_object(model_copy):
    (model_copy / "model.json").write_text("[]")
    assert_one_line_error(serve(model_copy), "model.json", "no weights")


def test_tampered_weights(model_copy):
    def edit(meta): meta["weights"]["coef"]["contract=two_year"] += 0.5
    _edit_meta(model_copy, edit)
    assert_one_line_error(serve(model_copy), "weights do not match their recorded sha256")


def test_tampered_model_bin(model_copy):
    blob = bytearray((model_copy / "model.bin").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (model_copy / "model.bin").write_bytes(bytes(blob))
    assert_one_line_error(serve(model_copy), str(model_copy / "model.bin"), "does not match the sha256")


def test_weights_for_unknown_columns(model_copy):
    def edit(meta): meta["weights"]["coef"]["colour=red"] = 1.0
    _edit_meta(model_copy, edit, reseal=True)
    assert_one_line_error(serve(model_copy), "unknown columns", "colour=red")


def test_malformed_weights(model_copy):
    def edit(meta): meta["weights"]["intercept"] = "abc"
    _edit_meta(model_copy, edit, reseal=True)
    assert_one_line_error(serve(model_copy), "malformed weights")


@pytest.mark.parametrize("how", ["CHURN_DATA missing", "download refused"])
def test_no_model_and_no_data(tmp_path, how):
    empty, cache = tmp_path / "model", tmp_path / "cache"
    empty.mkdir(), cache.mkdir()
    env = dict(CHURN_CACHE_DIR=str(cache), CHURN_DATA_URL="http://127.0.0.1:9/x.csv")
    if how == "CHURN_DATA missing": env["CHURN_DATA"] = str(tmp_path / "missing.csv")
    line = assert_one_line_error(serve(empty, **env), f"no model in {empty}", "training one failed")
    assert (str(tmp_path / "missing.csv") if how == "CHURN_DATA missing" else "http://127.0.0.1:9/x.csv") in line
    assert list(empty.iterdir()) == [] and list(cache.iterdir()) == []  # nothing half-written


# ---------------------------------------------------------------- bad settings: the same one line

@pytest.mark.parametrize("args, env, field", [
    (["--port", "0"], {}, "port"),
    ([], {"CHURN_LOG_LEVEL": "loud"}, "log_level"),  # (CHURN_PORT would be overridden by serve()'s --port)
    ([], {"CHURN_WORKERS": "abc"}, "workers"),
    ([], {"CHURN_MAX_BATCH": "0"}, "max_batch"),
], ids=["--port 0", "CHURN_LOG_LEVEL loud", "CHURN_WORKERS abc", "CHURN_MAX_BATCH 0"])
def test_bad_settings(model_dir, args, env, field):
    r = serve(model_dir, *args, **env)
    assert_one_line_error(r, f"churn_serve: error: {field}: ")


def test_port_in_use(model_dir):
    "Another process holds the port: a non-zero exit that says so, no traceback."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([script("churn_serve"), "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "address already in use" in r.stderr.lower(), r.stderr


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


def test_two_workers(tmp_path, model_dir):
    from churn_deploy.predict import load_pipeline
    p = float(load_pipeline(model_dir).predict_proba([SAMPLE_CUSTOMER])[0, 1])
    with running_server(tmp_path, "--workers", "2", startup=60) as (url, proc, log):
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


# ---------------------------------------------------------------- the fresh clone: slow (~40 s), trains first

def test_fresh_clone_trains_then_serves_SLOW(tmp_path, data_csv, model_dir):
    "No model in the directory but data at hand: `churn_serve` trains one, then serves correct predictions."
    fresh = tmp_path / "fresh-model"
    from churn_deploy.predict import load_pipeline
    with running_server(tmp_path / "logs", model=fresh, startup=240, CHURN_DATA=str(data_csv),
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
