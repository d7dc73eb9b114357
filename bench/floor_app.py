"""The cold start's floor: the smallest FastAPI app that answers the workshop's POST /predict (issue 18).

The workshop's pydantic `Customer` in, a constant out, on the same uvicorn as churn_serve (uvloop and
httptools, one process), and nothing else: no model, no project import. Whatever the project's cold
start costs beyond this app's is the project's own; this much is FastAPI's, pydantic's and uvicorn's.

    uvicorn --app-dir bench floor_app:app --host 127.0.0.1 --port 9698 --no-access-log
"""
from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel

YesNo = Literal["yes", "no"]


class Customer(BaseModel):
    gender: Literal["female", "male"]
    seniorcitizen: Literal[0, 1]
    partner: YesNo
    dependents: YesNo
    phoneservice: YesNo
    multiplelines: Literal["yes", "no", "no_phone_service"]
    internetservice: Literal["dsl", "fiber_optic", "no"]
    onlinesecurity: Literal["yes", "no", "no_internet_service"]
    onlinebackup: Literal["yes", "no", "no_internet_service"]
    deviceprotection: Literal["yes", "no", "no_internet_service"]
    techsupport: Literal["yes", "no", "no_internet_service"]
    streamingtv: Literal["yes", "no", "no_internet_service"]
    streamingmovies: Literal["yes", "no", "no_internet_service"]
    contract: Literal["month-to-month", "one_year", "two_year"]
    paperlessbilling: YesNo
    paymentmethod: Literal["electronic_check", "mailed_check", "bank_transfer_(automatic)", "credit_card_(automatic)"]
    tenure: int
    monthlycharges: float
    totalcharges: float


class Prediction(BaseModel):
    churn_probability: float
    churn: bool


app = FastAPI()


@app.post("/predict")
def predict(customer: Customer) -> Prediction:
    return Prediction(churn_probability=0.5, churn=True)
