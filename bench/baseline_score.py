"""The benchmark's baseline for batch scoring, the course workshop's way, written without churn_deploy.

pandas reads and cleans the CSV as the workshop's notebook does (lower-case column names, text
values lower-cased with spaces as underscores, a blank `totalcharges` as 0), then `to_dict`,
`predict_proba` and pandas writes the answer. bench.py also takes its reference probabilities from
`read_customers`, so the project's own cleaning is checked against this independent one.

    python bench/baseline_score.py --input in.csv --output out.csv [--model model/model.bin]
"""
import argparse
import pickle
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

# The workshop's feature lists.
CATEGORICAL = ["gender", "seniorcitizen", "partner", "dependents", "phoneservice", "multiplelines",
               "internetservice", "onlinesecurity", "onlinebackup", "deviceprotection", "techsupport",
               "streamingtv", "streamingmovies", "contract", "paperlessbilling", "paymentmethod"]
NUMERICAL = ["tenure", "monthlycharges", "totalcharges"]


def read_customers(path) -> pd.DataFrame:
    "A raw Telco CSV, cleaned as the workshop does; `customerid` keeps its original spelling."
    df = pd.read_csv(path)
    df.columns = df.columns.str.lower().str.replace(" ", "_")
    ids = df["customerid"]
    # Every column read_csv left as text (`dtype == object` in the workshop, which pandas 3 no longer matches).
    for c in [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]:
        df[c] = df[c].str.lower().str.replace(" ", "_")
    df["totalcharges"] = pd.to_numeric(df["totalcharges"], errors="coerce").fillna(0)  # blank: a new customer
    df["customerid"] = ids
    return df


def to_dicts(df: pd.DataFrame) -> list[dict]:
    "One dict of the workshop's features per customer, as `DictVectorizer` takes them."
    return df[CATEGORICAL + NUMERICAL].to_dict(orient="records")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", default=str(ROOT / "model" / "model.bin"))
    a = ap.parse_args()
    with open(a.model, "rb") as f_in:
        pipeline = pickle.load(f_in)
    df = read_customers(a.input)
    proba = pipeline.predict_proba(to_dicts(df))[:, 1]
    pd.DataFrame({"customerID": df["customerid"], "churn_probability": proba, "churn": proba >= 0.5}
                 ).to_csv(a.output, index=False)


if __name__ == "__main__":
    main()
