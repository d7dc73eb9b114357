"""SIGTERM with several workers under a keep-alive load drains like one worker: every request written on a connection
that was open before the signal is answered (with `Connection: close` at the end), none is reset; a connection opened
after it is refused, or answered, never reset."""
import http.client, json, os, signal, socket, threading, time
from pathlib import Path

import pytest

from churn_deploy.data import SAMPLE_CUSTOMER
from conftest import running_server, wait_startups

BODY = json.dumps(SAMPLE_CUSTOMER).encode()
HEADERS = {"Content-Type": "application/json"}
LOST = (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine, http.client.IncompleteRead, socket.timeout)


class KeepAliveLoad:
    "`n` clients, each sending /predict on one keep-alive connection after another; every request's fate is recorded."
    def __init__(self, port: int, n: int = 16):
        self.port, self.stop, self.signal_at = port, threading.Event(), None
        self.records = []  # (connection opened before the signal, outcome); outcome: 200, "reset", "refused"
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client) for _ in range(n)]

    def note(self, opened: float, outcome):
        with self.lock: self.records.append((self.signal_at is None or opened < self.signal_at, outcome))

    def client(self):
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn, opened = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30), time.monotonic()
                try: conn.connect()
                except ConnectionRefusedError:  # the listening socket is closed: the drain refuses, it does not reset
                    self.note(opened, "refused"); conn = None
                    if self.signal_at is not None: return
                    time.sleep(0.01); continue
            try:
                conn.request("POST", "/predict", BODY, HEADERS)
                r = conn.getresponse()
                r.read()
                self.note(opened, r.status)
                if (r.getheader("connection") or "").lower() == "close": conn.close(); conn = None
            except LOST:
                self.note(opened, "reset"); conn.close(); conn = None

    def __enter__(self):
        for t in self.threads: t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads: t.join(60)


def test_sigterm_with_two_workers_under_keep_alive_load_resets_nothing(tmp_path):
    "5 runs of 2 workers under 16 keep-alive clients, SIGTERM to the process group (a runtime) or to the supervisor alone (docker stop)."
    summary = []
    for run in range(5):
        with running_server(tmp_path / f"run{run}", "--workers", "2", startup=60, CHURN_GRACE_PERIOD="10") as (url, proc, log):
            wait_startups(log, 2)
            with KeepAliveLoad(int(url.rsplit(":", 1)[1])) as load:
                time.sleep(1.0)
                load.signal_at = time.monotonic()
                if run % 2: os.kill(proc.pid, signal.SIGTERM)  # the supervisor alone, as `docker stop` signals PID 1
                else: os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as a terminal or a process manager does
                code = proc.wait(timeout=30)
            text = log.read_text()
        before = [o for early, o in load.records if early]
        after = [o for early, o in load.records if not early]
        summary.append((run, len(before), before.count("reset"), len(after), after.count("reset"), after.count("refused")))
        assert before.count(200) > 100, (run, before[:20], text[-2000:])
        assert set(before) == {200}, f"run {run}: requests on connections open before SIGTERM were not answered: " \
                                     f"{[o for o in before if o != 200][:5]} ({before.count('reset')} resets)\n{text[-2000:]}"
        assert "reset" not in after, f"run {run}: new connections after SIGTERM must be refused or answered, not reset: " \
                                     f"{after.count('reset')} resets"
        assert code == 0 and "Traceback" not in text, (code, text[-3000:])
    print("run, requests on earlier connections, their resets, on later connections, their resets, refused:", summary)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_writes_every_prediction_record(tmp_path, workers):
    "The prediction log at sample 1.0 is written in batches by a thread; a SIGTERM under load still writes one record per answer, to each sink."
    logfile = tmp_path / "predictions.jsonl"
    with running_server(tmp_path / "s", "--workers", str(workers), startup=60, CHURN_GRACE_PERIOD="10", CHURN_LOG_FORMAT="json",
                        CHURN_PREDICTION_LOG_SAMPLE="1", CHURN_PREDICTION_LOG_FILE=str(logfile),
                        CHURN_PREDICTION_LOG_KEY="shutdown-test-key-0123456789") as (url, proc, log):
        wait_startups(log, workers)
        with KeepAliveLoad(int(url.rsplit(":", 1)[1]), n=8) as load:
            time.sleep(1.0)
            load.signal_at = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=30)
    answered = [o for _, o in load.records].count(200)
    records = [json.loads(l) for l in logfile.read_text().splitlines()]
    stdout = [json.loads(l) for l in (tmp_path / "s" / "stdout.log").read_text().splitlines() if '"churn.predictions"' in l]
    assert code == 0 and answered > 100, (code, answered)
    assert len(records) == len(stdout) == answered, (len(records), len(stdout), answered)  # none lost in the buffer at exit
    assert len({r["request_id"] for r in records}) == answered  # each answer once
    assert {r["request_id"] for r in stdout} == {r["request_id"] for r in records}


def test_workers_signalled_before_their_stalled_supervisor_reset_nothing(tmp_path):
    "The group's SIGTERM reaches the workers while the supervisor is not yet scheduled (a busy machine): they wait for it, then drain."
    with running_server(tmp_path / "s", "--workers", "2", startup=60, CHURN_GRACE_PERIOD="10") as (url, proc, log):
        wait_startups(log, 2)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        with KeepAliveLoad(int(url.rsplit(":", 1)[1])) as load:
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGSTOP)  # the supervisor runs its handler a second late
            load.signal_at = time.monotonic()
            for pid in workers: os.kill(pid, signal.SIGTERM)
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)
            code = proc.wait(timeout=30)
        text = log.read_text()
    before = [o for early, o in load.records if early]
    after = [o for early, o in load.records if not early]
    assert before.count(200) > 100 and set(before) == {200}, (before.count(200), set(before), text[-2000:])
    assert "reset" not in after, f"{after.count('reset')} of {len(after)} requests on connections opened after the signal were reset"
    assert code == 0 and "Traceback" not in text, (code, text[-3000:])
