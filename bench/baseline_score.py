"""The workshop-style baseline for batch scoring: pandas read + clean, `to_dict`, `predict_proba`, pandas write.

    python bench/baseline_score.py --input in.csv --output out.csv [--model model/model.bin]
"""
import argparse
import pickle
from pathlib import Path

import pandas as pd

from churn_deploy.data import load_churn_data
from churn_deploy.train import to_records

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", default=str(ROOT / "model" / "model.bin"))
    a = ap.parse_args()
    with open(a.model, "rb") as f:
        pipeline = pickle.load(f)
    df = load_churn_data(a.input, target=False)  # pandas read_csv + the course's cleaning
    proba = pipeline.predict_proba(to_records(df))[:, 1]  # to_dict(orient="records") + predict_proba
    pd.DataFrame({"customerID": df["customerid"], "churn_probability": proba, "churn": proba >= 0.5}
                 ).to_csv(a.output, index=False)


if __name__ == "__main__":
    main()
