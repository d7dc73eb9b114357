"""Shared fixtures for the tests that need real processes: the CLIs, the HTTP server, the container replay."""
import json, re, socket, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the console scripts of the environment running pytest


def script(name: str) -> str:
    "Path of one of the project's console scripts in the running environment."
    p = BIN / name
    assert p.exists(), f"{name} is not installed in {BIN}: run `uv sync`"
    return str(p)


# A raw Telco CSV's header and its first row, as written in the file, for making small bad files.
HEADER = ("customerID,gender,SeniorCitizen,Partner,Dependents,tenure,PhoneService,MultipleLines,InternetService,"
          "OnlineSecurity,OnlineBackup,DeviceProtection,TechSupport,StreamingTV,StreamingMovies,Contract,"
          "PaperlessBilling,PaymentMethod,MonthlyCharges,TotalCharges,Churn")
ROW = ("7590-VHVEG,Female,0,Yes,No,1,No,No phone service,DSL,No,Yes,No,No,No,No,Month-to-month,Yes,"
       "Electronic check,29.85,29.85,No")


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- tests that need the real data
# A test needs the Telco CSV if it uses the `data_csv` fixture, or if it runs a notebook whose cells
# search for the data (`find_data()`, `load_churn_data()`). Such tests carry the `data` mark. When
# the data cannot be found and such a test is selected, the run stops before its first test with
# one line: what is missing, how to provide it, how to leave those tests out. Not after 16 minutes
# of failures.

_DEFAULT_SEARCH = re.compile(r"\b(?:find_data|load_churn_data)\(\)")


def _notebook_reads_data(path: Path) -> bool:
    "Whether a notebook calls the default data search in any code cell."
    cells = json.loads(path.read_text())["cells"]
    return any(c["cell_type"] == "code" and _DEFAULT_SEARCH.search("".join(c["source"])) for c in cells)


def _needs_data(item: pytest.Item) -> bool:
    if "data_csv" in getattr(item, "fixturenames", ()): return True
    nb = getattr(getattr(item, "callspec", None), "params", {}).get("nb")  # tests/test_notebooks.py
    return isinstance(nb, str) and (ROOT / "nbs" / nb).is_file() and _notebook_reads_data(ROOT / "nbs" / nb)


def missing_data() -> str | None:
    "None if the data search finds the CSV (it may download it), else one line: what is missing and how to provide it."
    from churn_deploy.config import DATA_FILE, Settings
    from churn_deploy.data import ChurnDataError, find_data
    s = Settings()
    try: find_data(settings=s)
    except ChurnDataError as e:
        problem = " ".join(str(e).split()).split("; pass --data")[0]  # the advice follows, with the cache
        return f"{problem}; set CHURN_DATA=/path/to/{DATA_FILE} or put the file in {s.cache_dir}/"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "data: needs the Telco churn CSV (CHURN_DATA, the cache, or the download)")
    config.addinivalue_line("markers", "long_unit: a test module that takes minutes of a worker: handed out first, so it does not end the run alone")


def unit_of(nodeid: str) -> str:
    "A test's unit of work for pytest-xdist: its notebook (tests/test_notebooks.py), else its test module."
    m = re.fullmatch(r"tests/test_notebooks\.py::test_notebook\[(.+\.ipynb)\]", nodeid)
    return f"nbs/{m[1]}" if m else nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduling, with `unit_of` as the scope: a module's tests share one worker (its module
    fixtures start once); each notebook is a unit of its own. Not `--dist loadgroup`: pytest-xdist 3.8 sets a group by
    renaming `item._nodeid`, which pytest 9 no longer reads, so every test became a unit of its own."""
    from xdist.scheduler import LoadScopeScheduling
    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str: return unit_of(nodeid)
    return UnitScheduling(config, log)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not data"` works
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _needs_data(item): item.add_marker(pytest.mark.data)
    # `--no-loadscope-reorder` hands the units out in this order. The modules marked long_unit go first, then the
    # notebooks, the largest (the slowest to run) first, then the rest: no long unit starts while the other worker
    # has nothing left.
    weight = {u: (ROOT / u).stat().st_size for u in {unit_of(i.nodeid) for i in items} if u.startswith("nbs/")}
    items.sort(key=lambda i: (i.get_closest_marker("long_unit") is None, -weight.get(unit_of(i.nodeid), 0)))  # stable otherwise


def pytest_collection_finish(session):
    bound = [i for i in session.items if i.get_closest_marker("data")]
    if not bound or session.config.option.collectonly: return
    if (reason := missing_data()) is None: return
    raise pytest.UsageError(f"{len(bound)} selected test(s) need the Telco churn CSV: {reason}, "
                            f"or leave them out with -m 'not data'")


def _data_tests_may_run(config) -> bool:
    "Whether the `-m` expression lets a test marked `data` run."
    if not (expr := config.option.markexpr): return True
    from _pytest.mark.expression import Expression
    return Expression.compile(expr).evaluate(lambda name, **kw: name == "data")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers
def pytest_sessionstart(session):
    "Under pytest-xdist the workers collect, not this process: check for the data before starting them."
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None): return
    if config.option.collectonly or not _data_tests_may_run(config): return
    if (reason := missing_data()) is not None:
        raise pytest.UsageError(f"the tests marked data need the Telco churn CSV: {reason}, "
                                f"or leave them out with -m 'not data'")


@pytest.fixture(scope="session")
def data_csv() -> Path:
    "The real Telco CSV, through the same search the package uses (CHURN_DATA, cache, download)."
    from churn_deploy.data import ChurnDataError, find_data
    try: return find_data()
    except ChurnDataError: pytest.skip(f"needs the Telco churn CSV: {missing_data()}")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    "The committed model directory."
    return ROOT / "model"


# No request body and no secret may reach a log. Every server the tests start writes its logs under the session's
# temp dir; when the session ends, they are all searched for the test API keys (they all look like `<name>-key-<hex>`),
# for raw customer ids the tests send (`cust-raw-<hex>`), and for the customer field values the tests send, which
# appear in no log line the service writes on its own. Prediction records (the `churn.predictions` lines and the JSONL
# prediction logs) hold the features by design, so only keys and raw ids are searched for there.
SECRETS = (r"[a-z]+-key-[0-9a-f]{12,}", r"cust-raw-[0-9a-f]+")
CUSTOMER_VALUES = (r"73\.1415", r"9876\.5432", r"electronic_check", r"no_phone_service")


@pytest.fixture(scope="session", autouse=True)
def no_secrets_in_server_logs(tmp_path_factory):
    "After the whole run: no server log holds a key or a raw customer id, and no log line but a prediction record a customer's values."
    import re
    yield
    base = tmp_path_factory.getbasetemp()
    secrets_re, values_re = re.compile("|".join(SECRETS)), re.compile("|".join(CUSTOMER_VALUES))
    leaks, files = [], [p for p in base.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl")]
    for p in files:
        for line in p.read_text(errors="replace").splitlines():
            record = p.suffix == ".jsonl" or '"logger":"churn.predictions"' in line
            for m in (secrets_re.finditer(line) if record else re.finditer(f"{secrets_re.pattern}|{values_re.pattern}", line)):
                leaks.append((str(p.relative_to(base)), m.group(0)))
    assert not leaks, f"secrets or customer values in {len(files)} server logs: {leaks[:10]}"


# ---------------------------------------------------------------- a real server, and what it answers
# Shared by every test that starts `churn_serve`: its environment, start, readiness and stop, the one error shape,
# the metrics, raw bytes on a socket, and a CLI's one-line error.
import os, signal, subprocess, time
from contextlib import contextmanager

import httpx
from prometheus_client.parser import text_string_to_metric_families


def server_env(**overrides: str) -> dict:
    "This environment without any CHURN_* variable, plus `overrides`."
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    return {**env, **overrides}


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0):
    "Poll `url`/health until it answers 200; fail at once if the process dies."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"churn_serve exited with {proc.returncode} before serving:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200: return
        except httpx.TransportError: pass
        time.sleep(0.2)
    pytest.fail(f"churn_serve did not answer /health within {timeout:.0f} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> int:
    "SIGTERM the server's whole process group, as a container runtime does; SIGKILL if it hangs."
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def wait_startups(log: Path, n: int, timeout: float = 60):
    "Wait until `n` worker startups are logged (a supervisor's workers, or a replaced one); fail with the log if not."
    deadline = time.monotonic() + timeout
    while log.read_text().count("Application startup complete") < n and time.monotonic() < deadline: time.sleep(0.1)
    assert log.read_text().count("Application startup complete") >= n, log.read_text()[-3000:]


@contextmanager
def running_server(log_dir: Path, *args: str, model: Path | None = ROOT / "model", startup: float = 30.0, cwd: Path | None = None,
                   **env: str):
    "Start `churn_serve [--model MODEL] --host 127.0.0.1 --port FREE ARGS` in `cwd` with CHURN_* `env`; yield (base URL, process, log)."
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "stderr.log"
    model_args = ["--model", str(model)] if model is not None else []
    with open(log_dir / "stdout.log", "wb") as out, open(log, "wb") as err:
        proc = subprocess.Popen([script("churn_serve"), *model_args, "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=out, stderr=err, env=server_env(**env), start_new_session=True, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, log, startup)
        yield url, proc, log
    finally:
        stop(proc)


def assert_error(r: httpx.Response, status: int, field: str | None = None, *, in_message: str | None = None) -> dict:
    "`r` is the service's one error shape with `status`; its message names `field` and so does its first field error."
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"status", "message", "request_id", "fields", "more_fields"}, err
    assert err["status"] == status and isinstance(err["message"], str) and err["message"], err
    assert err["request_id"] == r.headers["x-request-id"], (err, r.headers)
    assert isinstance(err["more_fields"], int) and len(r.content) <= 64 * 1024, len(r.content)
    assert isinstance(err["fields"], list), err
    for f in err["fields"]:
        assert set(f) == {"field", "message", "type"} and all(isinstance(v, str) and v for v in f.values()), f
    if field is not None:
        assert err["message"].startswith(f"{field}: "), f"message does not name {field!r}: {err['message']!r}"
        assert err["fields"] and err["fields"][0]["field"] == field, err["fields"]
    if in_message is not None: assert in_message in err["message"], err["message"]
    return err


def metric_samples(client: httpx.Client, name: str) -> list:
    "Samples of the metric family `name`, parsed from GET /metrics."
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    return [s for fam in text_string_to_metric_families(r.text) if fam.name == name for s in fam.samples]


def sample_value(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return found[0] if found else 0.0


def raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    "Send raw bytes on a new connection; return what the server sends until it closes or `wait` passes."
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536): out += chunk
        except (socket.timeout, ConnectionResetError): pass
        return out


def run(*cmd: str, timeout: float = 120, cwd=ROOT, **env: str) -> subprocess.CompletedProcess:
    "Run `cmd` to its end with this environment minus CHURN_* variables, plus `env`."
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=server_env(**env), cwd=cwd)


def assert_one_line_error(r: subprocess.CompletedProcess, prefix: str, *needles: str) -> str:
    "Non-zero exit; stderr is exactly one line starting with `prefix` and holding `needles`."
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles: assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def routes() -> dict[str, set[str]]:
    "The app's real routes: path -> methods."
    from churn_deploy.serve import create_app
    def flat(routes):  # FastAPI 0.165 keeps an included router whole, behind one entry
        for r in routes:
            if hasattr(r, "original_router"): yield from flat(r.original_router.routes)
            else: yield r
    out: dict[str, set[str]] = {}
    for r in flat(create_app().routes):
        out.setdefault(r.path, set()).update(getattr(r, "methods", None) or ())
    return out
