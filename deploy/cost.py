"""What predictions cost on Fly.io, Google Cloud Run and AWS Lambda: the README's "Cost" table, computed from the
figures measured here and the platforms' published prices (each with its source and the day it was read).

    uv run python deploy/cost.py        # prints the block between <!-- cost:start --> and <!-- cost:end --> in README.md

tests/test_platforms.py checks that the README shows exactly what this prints, so a price or a measurement is changed
here, once, and the table follows.
"""
import math

MONTH_S = 30 * 24 * 3600  # Fly quotes prices per 30 days; every platform is costed over the same month
RATES = (1, 10, 100)  # steady requests a second, one prediction each

# ---- measured here: README "Performance", fly.toml, tests/test_container_replay.py
WORKER_RPS = 7_400  # one worker, the image's settings (JSON access log on), saturated on one core of the dev box
COLD_START_S = (0.43, 0.55)  # the replayed image, spawn -> 200 on /ready, 7 runs on the 2-vCPU dev box
RSS_MIB, PEAK_MIB = 54, 109  # one worker: steady, and after the largest batches
RESPONSE_BYTES = 349  # a /predict answer with its headers, as churn_serve sends it

# ---- Fly.io: https://fly.io/docs/about/pricing/ (its source, superfly/docs about/pricing.mdx at commit 0137eed1), read 2026-11-27
FLY_MACHINE = 2.19  # $ per 30 days, a started shared-cpu-1x with 256 MB, iad/ewr (the lowest-priced regions)
FLY_ROOTFS = 0.15  # $ per GB of rootfs per 30 days, for a stopped or suspended machine
FLY_EGRESS = 0.02  # $ per GB to the internet, North America and Europe
# https://fly.io/docs/machines/cpu-performance/ (superfly/docs machines/cpu-performance.html.md), read 2026-11-27
FLY_BASELINE = 5 / 80  # a shared vCPU may run 5 ms in each 80 ms, bursting to 100 % on an accrued balance

# ---- Google Cloud Run, request-based billing, Tier 1 regions: https://cloud.google.com/run/pricing, read 2026-11-27
CR_VCPU_S, CR_GIB_S, CR_REQUEST = 0.000024, 0.0000025, 0.40 / 1e6
CR_FREE_VCPU_S, CR_FREE_GIB_S, CR_FREE_REQUESTS = 180_000, 360_000, 2_000_000  # each month
CR_VCPU, CR_GIB = 1, 0.5  # deploy/cloud-run/service.yaml
CR_ROUND_S = 0.1  # billable time is rounded up to 100 ms

# ---- AWS Lambda, x86: https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html, read 2026-11-27
L_GB_S, L_REQUEST = 0.00001667, 0.20 / 1e6
L_FREE_GB_S, L_FREE_REQUESTS = 400_000, 1_000_000  # each month
L_GB = 0.5  # MemorySize in deploy/aws-lambda/template.yaml
L_BILLED_S = 0.002  # ASSUMED billed duration of one /predict through the adapter (not measured: no AWS account here)
# Amazon API Gateway HTTP API, first 300 million a month: https://aws.amazon.com/api-gateway/pricing/, read 2026-11-27
APIGW_REQUEST = 1.00 / 1e6


def requests(rate: float) -> float: return rate * MONTH_S


def fly(rate: float) -> float:
    "Machines of one worker each, enough for `rate` at the shared vCPU's baseline, always started."
    return FLY_MACHINE * max(1, math.ceil(rate / (WORKER_RPS * FLY_BASELINE)))


def cloud_run(rate: float) -> float:
    "Request-based billing: the instance is billed while a request is in flight, each stretch rounded up to 100 ms."
    busy = MONTH_S * (1 - math.exp(-rate * CR_ROUND_S))  # random (Poisson) arrivals: the share of time within 100 ms of one
    busy = max(busy, requests(rate) / WORKER_RPS)  # and never less than the CPU the requests need
    return (max(0, busy * CR_VCPU - CR_FREE_VCPU_S) * CR_VCPU_S + max(0, busy * CR_GIB - CR_FREE_GIB_S) * CR_GIB_S
            + max(0, requests(rate) - CR_FREE_REQUESTS) * CR_REQUEST)


def aws_lambda(rate: float, api_gateway: bool = False, billed_s: float = L_BILLED_S) -> float:
    "One request per invocation: the request fee plus memory x billed duration, after the free tier."
    n = requests(rate)
    return (max(0, n - L_FREE_REQUESTS) * L_REQUEST + max(0, n * L_GB * billed_s - L_FREE_GB_S) * L_GB_S
            + (n * APIGW_REQUEST if api_gateway else 0))


def crossover(cost, other, lo: float = 0.01, hi: float = 1000.0) -> float:
    "The steady rate (requests/s) where `cost` starts to exceed `other`, by bisection on a log scale."
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cost(mid) <= other(mid) else (lo, mid)
    return hi


def cell(monthly: float, rate: float) -> str:
    return f"${monthly:,.2f} (${monthly / requests(rate) * 1e6:,.3f}/M)"


ROWS = [
    ("Fly.io, 1 `shared-cpu-1x` 256 MB, always on (`min_machines_running = 1`)", fly,
     "$2.19", "never, except deploys and host moves"),
    ("Fly.io, the same with `auto_stop_machines = \"stop\"` (this repository's `fly.toml`)", fly,
     "rootfs only, $0.15/GB", "first request after a few idle minutes: VM boot + the service's {cs}"),
    ("Fly.io, the same with `auto_stop_machines = \"suspend\"`", fly,
     "rootfs only, $0.15/GB", "first request after idle: a resume of a few hundred ms; the service does not start again"),
    ("Cloud Run, 1 vCPU, 512 MiB, request-based billing, 0 to 10 instances, concurrency 32", cloud_run,
     "$0", "first request after idle and each new instance: container start + {cs}"),
    ("Lambda, 512 MB x86, function URL", aws_lambda,
     "$0", "every new execution environment (one per concurrent request): adapter + {cs} on ~0.3 vCPU"),
    ("Lambda, the same behind an API Gateway HTTP API", lambda r: aws_lambda(r, api_gateway=True),
     "$0", "as above"),
]


def table() -> str:
    cs = f"{COLD_START_S[0]:.2f}–{COLD_START_S[1]:.2f} s start"
    lines = ["| platform and setup | 1 request/s | 10 requests/s | 100 requests/s | a month with no traffic | where the cold start shows |",
             "|---|---:|---:|---:|---|---|"]
    for name, cost, idle, cold in ROWS:
        lines.append(f"| {name} | " + " | ".join(cell(cost(r), r) for r in RATES) + f" | {idle} | {cold.format(cs=cs)} |")
    gb = requests(100) * RESPONSE_BYTES / 1e9
    lines += ["",
              f"Monthly cost, and in brackets the cost per million predictions, at a steady rate (a month is 30 days: "
              f"{requests(1) / 1e6:.3f} million requests at 1/s); free tiers applied as each platform applies them. "
              f"One `shared-cpu-1x` machine sustains about {WORKER_RPS * FLY_BASELINE:,.0f} requests/s at its CPU "
              f"baseline ({WORKER_RPS:,}/s on a full core × 1/16), so one machine covers all three rates. Not included: egress, "
              f"about {gb:.0f} GB a month at 100 requests/s ({RESPONSE_BYTES} bytes an answer; ${gb * FLY_EGRESS:.2f} on Fly "
              f"at ${FLY_EGRESS}/GB; Cloud Run and Lambda bill their clouds' internet egress), storage of the image, and "
              f"Lambda's billed cold starts.",
              "",
              "If a request bills 10 ms instead of 2, Lambda behind a function URL costs "
              + ", ".join(f"${aws_lambda(r, billed_s=0.010):,.2f}" for r in RATES)
              + " a month at " + ", ".join(str(r) for r in RATES) + " requests/s: the request fee dominates.",
              "",
              f"Break-even: Cloud Run costs more than an always-on Fly machine from {crossover(cloud_run, fly):.1f} requests/s, "
              f"Lambda with a function URL from {crossover(aws_lambda, fly):.1f} requests/s, Lambda behind the HTTP API from "
              f"{crossover(lambda r: aws_lambda(r, True), fly):.1f} requests/s."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
