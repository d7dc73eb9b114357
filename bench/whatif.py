"""What-if timing for the benchmark: the retention desk's `whatif` on real customers, in process (issue 11).

    uv run --locked python bench/whatif.py     # best of 5 runs over 2,000 distinct real customers

The issue's target is under 100 µs per call for the default set of offers. bench/bench.py can import
`whatif_timing` (bench/ is on its path) and print it beside the in-process single prediction.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 100.0  # the bound for one call with the default set


def whatif_timing(model=None, customers: list[dict] | None = None, calls: int = 2000, repeats: int = 5) -> dict:
    """µs per `whatif(model, customer)` call with the default offers: best and median of `repeats` runs over
    `calls` distinct customers (default: the committed model and the real data), and the p99 of single calls."""
    from churn_deploy.offers import whatif
    if model is None:
        from churn_deploy.predict import load_model
        model = load_model(ROOT / "model")
    if customers is None:
        from churn_deploy.data import FEATURES, load_churn_data
        customers = load_churn_data()[FEATURES].to_dict(orient="records")
    custs = [customers[i * 7 % len(customers)] for i in range(calls)]  # spread over the file, as bench.py does
    offers = sum(len(whatif(model, c)["offers"]) for c in custs) / calls  # also the warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in custs: whatif(model, c)
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    single = []
    for c in custs:
        t0 = time.perf_counter()
        whatif(model, c)
        single.append((time.perf_counter() - t0) * 1e6)
    single.sort()
    return {"best_us": min(runs), "median_us": statistics.median(runs), "runs_us": runs,
            "p99_us": single[int(0.99 * (len(single) - 1))], "calls": calls, "offers_per_call": offers,
            "target_us": TARGET_US, "pass": min(runs) < TARGET_US}


def main() -> int:
    t = whatif_timing()
    print(f"whatif, default offers: {t['best_us']:.1f} µs/call (best of {len(t['runs_us'])} × {t['calls']:,} real customers: "
          f"{', '.join(f'{x:.1f}' for x in t['runs_us'])}; p99 of single calls {t['p99_us']:.1f} µs; "
          f"{t['offers_per_call']:.1f} offers a call) {'PASS' if t['pass'] else 'FAIL'}, must be < {TARGET_US:g} µs")
    return 0 if t["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
