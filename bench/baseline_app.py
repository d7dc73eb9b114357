"""The workshop-style baseline service the benchmark compares against (issue 5).

The straightforward way to serve the model: the pickled Pipeline loaded at import,
`pipeline.predict_proba(customer_dict)` on every request, a synchronous endpoint with the
project's pydantic schema, plain uvicorn (`--loop asyncio --http h11`), one worker.

    python -m uvicorn baseline_app:app --app-dir bench --loop asyncio --http h11 --port 9697
"""
import os
import pickle
from pathlib import Path

from fastapi import FastAPI

from churn_deploy.serve import Customer  # the project's schema, so both sides validate alike

MODEL_FILE = Path(os.environ.get("BASELINE_MODEL", Path(__file__).resolve().parents[1] / "model" / "model.bin"))

with open(MODEL_FILE, "rb") as f:
    pipeline = pickle.load(f)

app = FastAPI(title="churn baseline")


@app.post("/predict")
def predict(customer: Customer):
    proba = pipeline.predict_proba(customer.model_dump())[0, 1]
    return {"churn_probability": float(proba), "churn": bool(proba >= 0.5)}


@app.get("/health")
def health():
    return {"status": "ok"}
