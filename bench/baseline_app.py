"""The benchmark's baseline service: the course workshop's `predict.py`, written without churn_deploy.

The workshop's way: the pickled Pipeline loaded at import, a Flask route that passes the request's
JSON as it is to `predict_proba`, no validation, served by gunicorn with its default single sync
worker. Nothing here imports the project, so the benchmark's comparison of the two sides'
probabilities cannot hide a bug the two share.

    gunicorn --bind 127.0.0.1:9697 --pythonpath bench baseline_app:app
"""
import pickle
from pathlib import Path

from flask import Flask, jsonify, request

MODEL_FILE = Path(__file__).resolve().parents[1] / "model" / "model.bin"

with open(MODEL_FILE, "rb") as f_in:
    pipeline = pickle.load(f_in)  # DictVectorizer + LogisticRegression

app = Flask("churn")


@app.route("/predict", methods=["POST"])
def predict():
    customer = request.get_json()
    y_pred = pipeline.predict_proba([customer])[0, 1]
    return jsonify({"churn_probability": float(y_pred), "churn": bool(y_pred >= 0.5)})
