"""The writer process `churn_serve` forks beside each worker (16_logs): every access line and prediction record reaches
its sink in order, through a Ctrl-C to the whole process group; the child leaves with its worker; a child that dies is
said and counted, and the worker writes from then on."""
import json, os, signal, time

import httpx

from churn_deploy.data import SAMPLE_CUSTOMER
from conftest import metric_samples, running_server, sample_value

KEY = "writer-test-key-0123456789"


def children(pid: int) -> list[int]:
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def settings(tmp_path) -> dict:
    return dict(CHURN_LOG_FORMAT="json", CHURN_ACCESS_LOG="true", CHURN_PREDICTION_LOG_SAMPLE="1",
                CHURN_PREDICTION_LOG_FILE=str(tmp_path / "predictions.jsonl"), CHURN_PREDICTION_LOG_KEY=KEY)


def test_every_line_in_order_through_a_ctrl_c_and_the_writer_leaves_with_its_worker(tmp_path):
    with running_server(tmp_path, **settings(tmp_path)) as (url, proc, log):
        (writer,) = children(proc.pid)  # one worker, the server process itself: its one child writes
        ids = [f"r-{i:03d}" for i in range(200)]
        with httpx.Client(base_url=url) as c:
            for i, rid in enumerate(ids):
                r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Request-ID": rid, "X-Customer-Id": f"c{i}"})
                assert r.status_code == 200, r.text
            assert c.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 3}, headers={"X-Request-ID": "batch"}).status_code == 200
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the writer too: it goes on until its worker is done
        assert proc.wait(30) in (0, -signal.SIGINT)  # uvicorn ends by raising the signal again, once it has drained
    assert not os.path.exists(f"/proc/{writer}"), "the writer outlived its worker"
    want = ids + ["batch"] * 3
    stdout = [json.loads(l) for l in (tmp_path / "stdout.log").read_text().splitlines()]
    jsonl = [json.loads(l) for l in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in stdout] == want and [r["request_id"] for r in jsonl] == want
    assert all(r["customer"] and len(r["customer"]) == 64 for r in jsonl[:200]), jsonl[0]  # hashed, never the raw id
    assert not any('"c1"' in l for l in (tmp_path / "predictions.jsonl").read_text().splitlines())
    lines = [json.loads(l) for l in log.read_text().splitlines() if l.startswith("{")]
    access = [l["request_id"] for l in lines if l["logger"] == "churn.access" and l["route"].startswith("/predict")]
    assert access == ids + ["batch"], access[-5:]
    last_access = max(i for i, l in enumerate(lines) if l["logger"] == "churn.access")
    drain = next(i for i, l in enumerate(lines) if "draining" in l["message"])
    assert last_access < drain and lines[-1]["message"].startswith("Finished server process"), lines[last_access:]
    assert "log writer" not in log.read_text()


def test_a_writer_that_dies_is_said_once_and_the_worker_writes_from_then_on(tmp_path):
    with running_server(tmp_path, **settings(tmp_path)) as (url, proc, log):
        (writer,) = children(proc.pid)
        with httpx.Client(base_url=url) as c:
            for i in range(20): assert c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Request-ID": f"a-{i}"}).status_code == 200
            time.sleep(0.2)  # written by the child
            os.kill(writer, signal.SIGKILL)
            time.sleep(0.2)
            for i in range(20): assert c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Request-ID": f"b-{i}"}).status_code == 200
            time.sleep(0.2)
            lost = sample_value(metric_samples(c, "churn_prediction_log_lost"), "churn_prediction_log_lost", reason="sink_error")
    ids = [json.loads(l)["request_id"] for l in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert ids == [f"a-{i}" for i in range(20)] + [f"b-{i}" for i in range(20)] and lost == 0, (ids, lost)
    text = log.read_text()
    assert text.count("log writer: process") == 1 and "ended (Broken pipe) with signal 9 and 0 jobs not done" in text, text[-2000:]
    access = [l["request_id"] for l in map(json.loads, text.splitlines()) if l["logger"] == "churn.access" and l["route"] == "/predict"]
    assert access[:20] == [f"a-{i}" for i in range(20)] and access[-20:] == [f"b-{i}" for i in range(20)]
