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
# the data cannot be found, they are skipped with one line saying what is missing and how to
# provide it, and the run fails with that line at the end instead of hundreds of traceback lines.

_DEFAULT_SEARCH = re.compile(r"\b(?:find_data|load_churn_data)\(\)")
_NO_DATA = pytest.StashKey[tuple[str, int]]()


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


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not data"` works
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _needs_data(item): item.add_marker(pytest.mark.data)


def pytest_collection_finish(session):
    bound = [i for i in session.items if i.get_closest_marker("data")]
    if not bound or session.config.option.collectonly: return
    if (reason := missing_data()) is None: return
    for item in bound: item.add_marker(pytest.mark.skip(reason=f"needs the Telco churn CSV: {reason}"))
    session.config.stash[_NO_DATA] = (reason, len(bound))


def pytest_sessionfinish(session, exitstatus):
    if _NO_DATA in session.config.stash and exitstatus in (0, 5):  # a skipped data test is not a pass
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, config):
    if _NO_DATA in config.stash:
        reason, n = config.stash[_NO_DATA]
        terminalreporter.write_line(f"FAILED: {n} test(s) skipped for want of the Telco churn CSV: {reason}, "
                                    f"or leave them out with -m 'not data'", red=True, bold=True)


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
