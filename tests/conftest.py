"""Shared fixtures for the tests that need real processes: the CLIs, the HTTP server, the container replay."""
import socket, sys
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


@pytest.fixture(scope="session")
def data_csv() -> Path:
    "The real Telco CSV, through the same search the package uses (CHURN_DATA, cache, download)."
    from churn_deploy.data import find_data
    return find_data()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    "The committed model directory."
    return ROOT / "model"
