"""Where a production request's time goes: CPU µs per POST /predict for each feature, in-process (issue 18).

    uv run python bench/profile_edge.py               # one row per feature, then every feature on
    uv run python bench/profile_edge.py --profile all # and cProfile's top functions for one configuration

The app is driven straight through ASGI on one event loop (no sockets, no HTTP parsing): the figure is the
service's own cost per request, which is what the features add to. The figure is CPU time of the whole process
(the prediction log's writer thread included, and waited for), so other processes on a busy machine disturb it less
than they would a wall-clock figure. Log lines go to /dev/null and the prediction
log's file to a temp dir, so the cost of formatting and writing is counted without a terminal's.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"crm": "bench-crm-key-0123456789", "web": "bench-web-key-0123456789", "desk": "bench-desk-key-012345678"}
ORIGIN = "https://desk.example.com"
FEATURES = {  # each adds one production feature to the bare service
    "bare": {},
    "json access log": {"CHURN_LOG_FORMAT": "json", "CHURN_ACCESS_LOG": "true"},
    "3 keys": {"CHURN_API_KEYS": ",".join(f"{n}:{hashlib.sha256(k.encode()).hexdigest()}" for n, k in KEYS.items())},
    "rate limit": {"CHURN_RATE_LIMIT": "1000000/second"},
    "cors": {"CHURN_CORS_ORIGINS": ORIGIN},
    "drift off": {"CHURN_DRIFT_METRICS": "false"},
    "prediction log 1.0": {"CHURN_PREDICTION_LOG_SAMPLE": "1", "CHURN_PREDICTION_LOG_FILE": "{tmp}/predictions.jsonl",
                           "CHURN_PREDICTION_LOG_KEY": "bench-prediction-log-key"},
}
ALL = {k: v for name, env in FEATURES.items() if name != "drift off" for k, v in env.items()}


def headers_for(env: dict) -> list[tuple[bytes, bytes]]:
    hs = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]
    if "CHURN_API_KEYS" in env: hs.append((b"x-api-key", KEYS["crm"].encode()))
    if "CHURN_CORS_ORIGINS" in env: hs.append((b"origin", ORIGIN.encode()))
    return hs


GC_TIME = [0.0, 0]


def _gc_timer(phase, info, _t=[0.0]):
    if phase == "start": _t[0] = time.perf_counter()
    else: GC_TIME[0] += time.perf_counter() - _t[0]; GC_TIME[1] += 1


async def run(env: dict, bodies: list[bytes], n: int, profile: cProfile.Profile | None = None) -> float:
    "µs per request over `n` requests, after a warm-up."
    from churn_deploy.config import Settings
    from churn_deploy.logs import configure_logging
    from churn_deploy.serve import create_app
    s = Settings(model_dir=ROOT / "model")
    configure_logging(s.log_format, s.log_level)
    app = create_app(s)
    hs = headers_for(env)
    sent = []

    async def send(msg): sent.append(msg)

    async def one(body: bytes):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]
        async def receive(): return msgs.pop() if msgs else {"type": "http.disconnect"}
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 9696), "headers": [*hs, (b"content-length", str(len(body)).encode())],
                 "state": state}
        await app(scope, receive, send)
        if sent[0]["status"] != 200: raise RuntimeError(f"{sent[0]['status']}: {sent[1:]}")
        sent.clear()

    async with app.router.lifespan_context(app) as st:
        state = dict(st or {})
        for b in bodies[:200]: await one(b)
        GC_TIME[:] = [0.0, 0]
        if profile: profile.enable()
        t0 = time.process_time()  # CPU of every thread of the process, the writer's too; not time spent descheduled
        for i in range(n): await one(bodies[i % len(bodies)])
        if (plog := app.state.prediction_log) is not None: plog.queue.join()  # written, not only queued
        took = time.process_time() - t0
        if profile: profile.disable()
    return took / n * 1e6


def measure(env: dict, bodies, n: int, repeats: int, profile=None) -> float:
    "Best of `repeats` runs, each in a fresh app with `env` applied (and removed after)."
    best = float("inf")
    for _ in range(repeats):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import uvloop
            best = min(best, uvloop.run(run(env, bodies, n, profile)))
        finally:
            for k, v in old.items():
                if v is None: os.environ.pop(k, None)
                else: os.environ[k] = v
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="requests per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", help="cProfile this configuration: a feature name or 'all'")
    a = ap.parse_args(argv)
    import gc
    gc.callbacks.append(_gc_timer)
    sys.path.insert(0, str(ROOT / "bench"))
    from baseline_score import read_customers, to_dicts
    from churn_deploy.data import find_data
    rows = to_dicts(read_customers(find_data(None)))
    bodies = [json.dumps(r).encode() for r in rows[:512]]
    tmp = tempfile.mkdtemp(prefix="churn-prof-")
    # every log line to /dev/null: the cost of formatting and writing is counted, not a terminal's
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(devnull, 1); os.dup2(devnull, 2)
    out = os.fdopen(saved[0], "w", buffering=1)
    fill = lambda env: {k: v.format(tmp=tmp) for k, v in env.items()}
    try:
        if a.profile:
            env = fill(ALL if a.profile == "all" else FEATURES[a.profile])
            p = cProfile.Profile()
            us = measure(env, bodies, a.n, 1, p)
            print(f"{a.profile}: {us:.1f} µs/request (under cProfile)", file=out)
            st = pstats.Stats(p, stream=out)
            st.sort_stats("tottime").print_stats(35)
            return
        bare = measure({}, bodies, a.n, a.repeats)
        print(f"{'bare':22} {bare:7.1f} µs/request", file=out)
        for name, env in FEATURES.items():
            if name == "bare": continue
            us = measure(fill(env), bodies, a.n, a.repeats)
            print(f"{name:22} {us:7.1f} µs/request ({us - bare:+.1f})", file=out)
        us = measure(fill(ALL), bodies, a.n, a.repeats)
        print(f"{'all (production)':22} {us:7.1f} µs/request ({us - bare:+.1f}; {bare / us:.2f}× the bare rate); "
              f"garbage collection in the last run: {GC_TIME[0] / a.n * 1e6:.1f} µs/request ({GC_TIME[1]} collections)", file=out)
    finally:
        os.dup2(saved[1], 2)


if __name__ == "__main__":
    main()
