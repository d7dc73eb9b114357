"""The model lifecycle with real processes: a registry served by 2 workers under a steady load; promote, rollback and a
routing change each cause zero failed requests and show on every worker within 10 s; shadow and canary; a broken
registry keeps the old state."""
import json, os, shutil, time
from pathlib import Path

import httpx
import pytest

from churn_deploy.config import META_FILE
from churn_deploy.data import SAMPLE_CUSTOMER
from churn_deploy.registry import (REGISTRY_FILE, add_version, init_registry, promote, read_registry, rollback, route,
                                   set_challenger, version_dir)
from conftest import ROOT, metric_samples, running_server, sample_value, wait_startups
from support import Load, model_variant  # shared with other test modules

POLL = "0.5"  # CHURN_REGISTRY_POLL for these servers


@pytest.fixture
def registry(tmp_path) -> tuple[Path, str, str]:
    "A registry with the committed model as champion and a second version (intercept +1: more churners) registered."
    root = tmp_path / "model"
    shutil.copytree(ROOT / "model", root, ignore=shutil.ignore_patterns(REGISTRY_FILE))
    if not (root / REGISTRY_FILE).exists(): init_registry(root)
    first = read_registry(root).champion
    second = add_version(root, model_variant(version_dir(root, first), tmp_path / "v2", "0.2.0+intercept1", "2030-01-01T00:00:00+00:00", 1.0))
    return root, first, second


def _switch(load: Load, log: Path, change, expect: set, n_workers: int = 2) -> float:
    "Make a registry change under load; return the seconds until every answer shows `expect` (versions); every worker logs it."
    before = log.read_text().count("registry changed")
    t0 = time.monotonic()
    change()
    deadline = t0 + 10
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if log.read_text().count("registry changed") - before >= n_workers: break
    took = time.monotonic() - t0
    assert log.read_text().count("registry changed") - before >= n_workers, f"not every worker followed within 10 s:\n{log.read_text()[-2000:]}"
    time.sleep(0.5)  # answers in flight at the swap have been sent
    t1 = time.monotonic()
    time.sleep(1.5)
    seen = {v for _, status, v, _ in load.since(t1)}
    assert seen == expect, (seen, expect)
    return took


def test_promote_rollback_and_routing_under_load_with_two_workers(tmp_path, registry):
    root, first, second = registry
    with running_server(tmp_path / "logs", "--workers", "2", model=root, startup=60, CHURN_REGISTRY_POLL=POLL) as (url, proc, log):
        wait_startups(log, 2)
        with Load(url) as load:
            time.sleep(1)
            took = [_switch(load, log, lambda: promote(root, second), {second}),
                    _switch(load, log, lambda: rollback(root), {first}),
                    _switch(load, log, lambda: set_challenger(root, second, "canary", 0.5), {first, second}),
                    _switch(load, log, lambda: route(root, "shadow"), {first}),
                    _switch(load, log, lambda: route(root, "off"), {first})]
        statuses = [s for _, s, _, _ in load.log]
        assert len(statuses) > 300 and set(statuses) == {200}, {s for s in statuses if s != 200}
        roles = {(v, r) for _, _, v, r in load.log}
        assert (second, "challenger") in roles and (first, "champion") in roles and (second, "champion") in roles
        with httpx.Client(base_url=url, timeout=30) as c:
            served = c.get("/model").json()["served"]
        assert served["champion"]["version"] == first and served["routing"]["mode"] == "off"
    print(f"{len(statuses)} requests, 0 failed; each change followed by both workers within {max(took):.1f} s")
    assert "Traceback" not in log.read_text()


def test_canary_is_sticky_and_shadow_is_recorded(tmp_path, registry):
    root, first, second = registry
    set_challenger(root, second, "canary", 0.3)
    with running_server(tmp_path / "logs", model=root, CHURN_REGISTRY_POLL=POLL, CHURN_LOG_FORMAT="json",
                        CHURN_ACCESS_LOG="true") as (url, proc, log):
        with httpx.Client(base_url=url, timeout=30) as c:
            first_pick = {i: c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": f"c{i}"}).headers["x-model-role"]
                          for i in range(300)}
            again = {i: c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": f"c{i}"}).headers["x-model-role"]
                     for i in range(300)}
            assert first_pick == again  # the same customer always gets the same model
            share = sum(r == "challenger" for r in first_pick.values()) / len(first_pick)
            assert 0.2 < share < 0.4, share
            batch = c.post("/predict/batch", json={"customers": [SAMPLE_CUSTOMER] * 3}, headers={"X-Customer-Id": "c1"}).json()
            assert {p["role"] for p in batch["predictions"]} == {first_pick[1]}
            # shadow: the champion answers, the challenger is scored and recorded under the same request id
            route(root, "shadow")
            deadline = time.monotonic() + 10
            while c.get("/model").json()["served"]["routing"]["mode"] != "shadow" and time.monotonic() < deadline: time.sleep(0.2)
            r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Request-ID": "shadow-1"})
            assert (r.headers["x-model-version"], r.headers["x-model-role"]) == (first, "champion")
            # the workshop customer is a churner (p = 0.64); +1 on the challenger's intercept keeps it one: no flip.
            # A loyal customer (p near 0.4) flips under the challenger.
            loyal = {**SAMPLE_CUSTOMER, "tenure": 12, "totalcharges": 358.2}
            p = c.post("/predict", json=loyal).json()["churn_probability"]
            samples = metric_samples(c, "churn_shadow_flips")
            flips = sample_value(samples, "churn_shadow_flips_total", version=second, champion_churn="false")
            predictions = metric_samples(c, "churn_predictions")
            assert sample_value(predictions, "churn_predictions_total", version=second, role="challenger") >= 1
            assert sample_value(metric_samples(c, "churn_shadow_predictions"), "churn_shadow_predictions_total", version=second) == 2
        time.sleep(0.3)
        lines = [json.loads(l) for l in log.read_text().splitlines() if '"churn.access"' in l]
        rec = next(l for l in lines if l["request_id"] == "shadow-1")
        assert rec["model_version"] == first and rec["shadow_version"] == second and 0 < rec["shadow_probability"] < 1
    import math
    logit = math.log(p / (1 - p))
    assert flips == (1 if p < 0.5 <= 1 / (1 + math.exp(-(logit + 1.0))) else 0), (p, flips)


def replace_text(path: Path, text: str) -> None:
    "Write a file whole, as churn_models and a ConfigMap update do: a poll never sees it half-written."
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_broken_registry_keeps_the_old_state(tmp_path, registry):
    root, first, second = registry
    with running_server(tmp_path / "logs", model=root, CHURN_REGISTRY_POLL=POLL) as (url, proc, log):
        with Load(url, threads=3) as load:
            time.sleep(0.5)
            good = (root / REGISTRY_FILE).read_text()
            replace_text(root / REGISTRY_FILE, '{"champion": "nope", "versions": {}}')
            time.sleep(2)
            (version_dir(root, second) / META_FILE).write_text("{}")  # a broken version directory
            reg = json.loads(good); reg["champion"], reg["previous"] = second, first
            replace_text(root / REGISTRY_FILE, json.dumps(reg))
            time.sleep(2)
            replace_text(root / REGISTRY_FILE, good)  # put right again: loaded as a change, the same state
            time.sleep(1.5)
        text = log.read_text()
        assert [s for _, s, _, _ in load.log if s != 200] == [] and {v for _, _, v, _ in load.log} == {first}
        assert text.count("registry change refused") == 2, text[-2000:]
        assert "Traceback" not in text
        assert httpx.get(url + "/ready", timeout=10).json()["model_version"] == first


def test_registry_file_elsewhere_as_a_configmap(tmp_path, registry):
    "CHURN_REGISTRY_FILE names a registry outside the model directory (a mounted ConfigMap); replacing it swaps the model."
    import os
    root, first, second = registry
    cm = tmp_path / "configmap"; cm.mkdir()
    reg = read_registry(root)
    (cm / REGISTRY_FILE).write_text(reg.model_dump_json())
    with running_server(tmp_path / "logs", model=root, CHURN_REGISTRY_POLL=POLL,
                        CHURN_REGISTRY_FILE=str(cm / REGISTRY_FILE)) as (url, proc, log):
        post = lambda: httpx.post(url + "/predict", json=SAMPLE_CUSTOMER, timeout=10).headers["x-model-version"]
        assert post() == first
        new = cm / "new.json"
        new.write_text(reg.model_copy(update={"champion": second, "previous": first}).model_dump_json())
        os.replace(new, cm / REGISTRY_FILE)  # what the kubelet does: an atomic swap of the mounted files
        deadline = time.monotonic() + 10
        while post() != second and time.monotonic() < deadline: time.sleep(0.2)
        assert post() == second
        assert json.loads((root / REGISTRY_FILE).read_text())["champion"] == first  # the image's registry is untouched


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_one_version_directory_that_becomes_a_registry_is_followed_under_load(tmp_path, workers):
    """Served from the committed layout (model.json, no registry), converted as churn_retrain does, with a canary challenger:
    every worker follows with one line, and no request fails."""
    root = tmp_path / "model"
    shutil.copytree(ROOT / "model", root, ignore=shutil.ignore_patterns(REGISTRY_FILE))
    first = json.loads((root / META_FILE).read_text())["version"]
    candidate = model_variant(root, tmp_path / "v2", "0.2.0+intercept1", "2030-01-01T00:00:00+00:00", 1.0)
    n = int(workers)
    with running_server(tmp_path / "logs", "--workers", workers, model=root, startup=60, CHURN_REGISTRY_POLL=POLL) as (url, proc, log):
        wait_startups(log, n)
        with Load(url) as load:
            time.sleep(1)
            init_registry(root)  # what churn_retrain and churn_models do to a one-version directory
            second = add_version(root, candidate)
            set_challenger(root, second, "canary", 0.5)
            deadline = time.monotonic() + 10
            while log.read_text().count("became a registry") < n and time.monotonic() < deadline: time.sleep(0.2)
            time.sleep(2 * float(POLL) + 0.5)  # the last registry write, followed too
            t1 = time.monotonic()
            time.sleep(1.5)
        text = log.read_text()
        assert text.count("became a registry, followed from now on") == n, text[-3000:]
        statuses = [s for _, s, _, _ in load.log]
        assert len(statuses) > 200 and set(statuses) == {200}, {s for s in statuses if s != 200}
        assert {(v, r) for _, _, v, r in load.since(t1)} == {(first, "champion"), (second, "challenger")}
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(4):  # each worker, over new connections
                served = c.get("/model", headers={"connection": "close"}).json()["served"]
                assert (served["challenger"]["version"], served["routing"]["mode"]) == (second, "canary"), served
        # and back to one model.json: no crash, the state stays
        (root / REGISTRY_FILE).unlink()
        shutil.copy(version_dir(root, first) / META_FILE, root / META_FILE)
        time.sleep(2 * float(POLL) + 0.5)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/predict", json=SAMPLE_CUSTOMER).status_code == 200
        assert proc.poll() is None
    text = log.read_text()
    assert text.count("is a one-version directory again") == n and "Traceback" not in text, text[-3000:]
