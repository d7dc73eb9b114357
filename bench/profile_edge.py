"""Where a production request's time goes: CPU µs per POST /predict for each feature, in-process (issue 18).

    uv run python bench/profile_edge.py               # one row per feature, then every feature on
    uv run python bench/profile_edge.py --only cors   # the bare service and one feature
    uv run python bench/profile_edge.py --profile all # and cProfile's top functions for one configuration

Instructions per request, which a busy machine does not change (valgrind's callgrind counts the instructions of one
batch of requests, between two marker calls; the figure is the count divided by -n):

    valgrind --tool=callgrind --zero-before='os_getppid*' --dump-before='os_getpgrp*' --callgrind-out-file=/tmp/cg.out \
        .venv/bin/python bench/profile_edge.py --marked cors -n 400    # then: grep ^summary /tmp/cg.out.1

Every configuration is built once, in one process, and they take turns: a batch of requests to each, round after
round, and the best batch of each counts. On a machine other work keeps busy, a busy spell then slows every
configuration's batches alike instead of one configuration's whole run. The app is driven straight through ASGI on one event loop (no sockets, no HTTP parsing): the figure is the
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


class Driver:
    "One app built with `env` applied, driven through ASGI: `await driver.batch(bodies, n)` is the CPU µs per request."
    def __init__(self, env: dict):
        from churn_deploy.config import Settings
        from churn_deploy.serve import create_app
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try: self.app = create_app(Settings(model_dir=ROOT / "model"))  # the settings are read here, once
        finally:
            for k, v in old.items():
                if v is None: os.environ.pop(k, None)
                else: os.environ[k] = v
        self.headers, self.sent, self.state = headers_for(env), [], {}

    async def send(self, msg): self.sent.append(msg)

    async def one(self, body: bytes):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]
        async def receive(): return msgs.pop() if msgs else {"type": "http.disconnect"}
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 9696), "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
                 "state": self.state}
        await self.app(scope, receive, self.send)
        if self.sent[0]["status"] != 200: raise RuntimeError(f"{self.sent[0]['status']}: {self.sent[1:]}")
        self.sent.clear()

    async def batch(self, bodies: list[bytes], n: int, start: int = 0) -> float:
        t0 = time.process_time()  # CPU of every thread of the process, the writer's too; not time spent descheduled
        for i in range(start, start + n): await self.one(bodies[i % len(bodies)])
        if (plog := self.app.state.prediction_log) is not None: plog.queue.join()  # written, not only queued
        return (time.process_time() - t0) / n * 1e6


async def run(envs: dict[str, dict], bodies: list[bytes], n: int, rounds: int, profile: cProfile.Profile | None = None) -> dict[str, float]:
    """µs per request for each configuration: the best of `rounds` batches of `n` requests, the configurations taking turns
    batch by batch, so that a busy spell on the machine falls on all of them alike rather than on one."""
    from contextlib import AsyncExitStack
    async with AsyncExitStack() as stack:
        drivers = {name: Driver(env) for name, env in envs.items()}
        for d in drivers.values():
            d.state.update(await stack.enter_async_context(d.app.router.lifespan_context(d.app)) or {})
            for b in bodies[:200]: await d.one(b)  # warm-up
        GC_TIME[:] = [0.0, 0]
        best = dict.fromkeys(drivers, float("inf"))
        if profile: profile.enable()
        for r in range(rounds):
            names = list(drivers)
            for name in names[r % len(names):] + names[:r % len(names)]:  # each goes first in turn
                best[name] = min(best[name], await drivers[name].batch(bodies, n, r * n))
        if profile: profile.disable()
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="requests per batch")
    ap.add_argument("--rounds", type=int, default=20, help="batches per configuration, taking turns; the best counts")
    ap.add_argument("--profile", help="cProfile this configuration: a feature name or 'all'")
    ap.add_argument("--marked", help="one configuration (a feature name or 'all'), one batch of -n requests between the "
                    "calls os.getppid() and os.getpgrp(), for callgrind to count (see above)")
    ap.add_argument("--only", help="comma-separated feature names to measure (default: every one, then all); bare is always measured")
    a = ap.parse_args(argv)
    import gc
    gc.callbacks.append(_gc_timer)
    sys.path.insert(0, str(ROOT / "bench"))
    from baseline_score import read_customers, to_dicts
    from churn_deploy.data import find_data
    from churn_deploy.logs import configure_logging
    import uvloop
    rows = to_dicts(read_customers(find_data(None)))
    bodies = [json.dumps(r).encode() for r in rows[:512]]
    tmp = tempfile.mkdtemp(prefix="churn-prof-")
    # every log line to /dev/null: the cost of formatting and writing is counted, not a terminal's
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(devnull, 1); os.dup2(devnull, 2)
    out = os.fdopen(saved[0], "w", buffering=1)
    configure_logging("json", "info")  # as the image; only the configurations with the access log write a line per request
    configs = {name: {k: v.format(tmp=f"{tmp}/{i}") for k, v in env.items()}
               for i, (name, env) in enumerate([*FEATURES.items(), ("all (production)", ALL)])}
    for i in range(len(configs)): os.makedirs(f"{tmp}/{i}")
    try:
        if a.marked:
            async def marked(env):
                d = Driver(env)
                async with d.app.router.lifespan_context(d.app) as st:
                    d.state.update(st or {})
                    for b in bodies[:50]: await d.one(b)  # warm-up
                    os.getppid()  # callgrind zeroes its counts here,
                    await d.batch(bodies, a.n)
                    os.getpgrp()  # and dumps them here
            uvloop.run(marked(configs["all (production)" if a.marked == "all" else a.marked]))
            return
        if a.profile:
            env = configs["all (production)" if a.profile == "all" else a.profile]
            p = cProfile.Profile()
            us = uvloop.run(run({a.profile: env}, bodies, a.n, a.rounds, p))[a.profile]
            print(f"{a.profile}: {us:.1f} µs/request (under cProfile)", file=out)
            pstats.Stats(p, stream=out).sort_stats("tottime").print_stats(35)
            return
        only = a.only.split(",") if a.only else [*FEATURES, "all"]
        if unknown := set(only) - {*FEATURES, "all"}: ap.error(f"--only: unknown feature(s) {', '.join(sorted(unknown))}")
        chosen = {name: env for name, env in configs.items() if name == "bare" or name in only or (name.startswith("all") and "all" in only)}
        res = uvloop.run(run(chosen, bodies, a.n, a.rounds))
        bare = res.pop("bare")
        print(f"{'bare':22} {bare:7.1f} µs/request", file=out)
        for name, us in res.items():
            print(f"{name:22} {us:7.1f} µs/request ({us - bare:+.1f}; {bare / us:.2f}× the bare rate)", file=out)
        if "all (production)" in res:
            print(f"garbage collection: {GC_TIME[0] / (a.n * a.rounds * len(chosen)) * 1e6:.1f} µs/request ({GC_TIME[1]} collections)", file=out)
    finally:
        os.dup2(saved[1], 2)


if __name__ == "__main__":
    main()
