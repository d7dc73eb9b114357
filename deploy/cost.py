"""What predictions cost on Fly.io, Google Cloud Run and AWS Lambda: the "Cost" section of docs/deploy.md, computed from
the figures measured here and the platforms' published prices (each with its source and the day it was read).

    uv run python deploy/cost.py            # prints the block between <!-- cost:start --> and <!-- cost:end --> in docs/deploy.md
    uv run python deploy/cost.py --write    # writes it there

Every price, measurement and dollar figure the docs cite is built here, from the constants below, and each constant is
used (tests/test_readme_figures.py checks both; tests/test_platforms.py checks the page shows exactly what this prints),
so a price or a measurement is changed here, once, and the page follows.
"""
import math, sys, textwrap
from pathlib import Path

MONTH_S = 30 * 24 * 3600  # Fly quotes prices per 30 days; every platform is costed over the same month
RATES = (1, 10, 100)  # steady requests a second, one prediction each

# ---- measured here: README "Performance", fly.toml, tests/test_container_replay.py
WORKER_RPS = 7_400  # one worker, the image's settings (JSON access log on), saturated on one core of the dev box
SATURATION_IN_FLIGHT = (16, 32)  # requests in flight at that saturation point (the wrk sweep behind fly.toml's limits)
COLD_START_S = (0.43, 0.55)  # the replayed image, spawn -> 200 on /ready, 7 runs on the 2-vCPU dev box
COLD_START_RUNS, MEASURED_ON = 7, "2026-11-27"
RSS_MIB, PEAK_MIB = 54, 109  # one worker: steady, and after the largest batches
CPU_PER_PREDICTION_MS = 0.14  # one prediction's CPU on a full core (1 / WORKER_RPS, rounded)
RESPONSE_BYTES = 349  # a /predict answer with its headers, as churn_serve sends it

# ---- Fly.io: https://fly.io/docs/about/pricing/ (its source, superfly/docs about/pricing.mdx at commit 0137eed1), read 2026-11-27
PRICES_READ = "2026-11-27"  # the day every price below was read
FLY_MACHINE = 2.19  # $ per 30 days, a started shared-cpu-1x with 256 MB, iad/ewr (the lowest-priced regions)
FLY_SNIPPET_MACHINE = 1.94  # $ the same page's region snippet computes from a per-second rate (not used: the table wins)
FLY_AMS_EXTRA = 0.04  # ams, the region in fly.toml, costs about this much more
FLY_SUSPEND_MAX_GB = 2  # suspend needs at most this much memory (and no swap)
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
APIGW_TIER_MILLIONS = 300  # the price holds for the first 300 million requests a month
L_VCPU = 0.3  # about the share of a vCPU 512 MB gives a Lambda function


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


def usd(x: float, places: int = 2) -> str:
    "A price as the docs print it: `$2.19`, `$0.000024`."
    return f"${x:,.{places}f}"


def cell(monthly: float, rate: float) -> str:
    return f"${monthly:,.2f} (${monthly / requests(rate) * 1e6:,.3f}/M)"


ROWS = [
    ("Fly.io, 1 `shared-cpu-1x` 256 MB, always on (`min_machines_running = 1`)", fly,
     f"{usd(FLY_MACHINE)}", "never, except deploys and host moves"),
    ("Fly.io, the same with `auto_stop_machines = \"stop\"` (this repository's `fly.toml`)", fly,
     f"rootfs only, {usd(FLY_ROOTFS)}/GB", "first request after a few idle minutes: VM boot + the service's {cs}"),
    ("Fly.io, the same with `auto_stop_machines = \"suspend\"`", fly,
     f"rootfs only, {usd(FLY_ROOTFS)}/GB", "first request after idle: a resume of a few hundred ms; the service does not start again"),
    ("Cloud Run, 1 vCPU, 512 MiB, request-based billing, 0 to 10 instances, concurrency 32", cloud_run,
     "$0", "first request after idle and each new instance: container start + {cs}"),
    ("Lambda, 512 MB x86, function URL", aws_lambda,
     "$0", "every new execution environment (one per concurrent request): adapter + {cs} on ~%s vCPU" % L_VCPU),
    ("Lambda, the same behind an API Gateway HTTP API", lambda r: aws_lambda(r, api_gateway=True),
     "$0", "as above"),
]


def measured() -> str:
    "The paragraph of figures measured here that the table is built from."
    lo, hi = SATURATION_IN_FLIGHT
    return (f"**Measured here** (2-vCPU development machine): one worker sustains about {WORKER_RPS:,} requests/s on a full "
            f"core with the image's settings (the JSON access log on), at its saturation point of {lo}–{hi} requests in "
            f"flight (the wrk sweep behind `fly.toml`'s concurrency limits); it holds {RSS_MIB} MiB resident, {PEAK_MIB} MiB "
            f"at peak after the largest batches; the replayed image answers `/ready` {COLD_START_S[0]:.2f}–{COLD_START_S[1]:.2f} s "
            f"after it is spawned ({COLD_START_RUNS} runs of `test_replay_measured_cold_start_and_memory_fit_the_deploy_config` "
            f"with `-s`, {MEASURED_ON}; the earlier 0.8–1.4 s in *Deploy* were measured on a busier machine). An answer is "
            f"{RESPONSE_BYTES} bytes with its headers.")


def prices() -> str:
    "The platforms' prices, each with its source, as the constants above hold them."
    return "\n".join([
        f"**Prices**, each read on {PRICES_READ} from the stored copy named (the live pages could not be reached from here):",
        "",
        f"- Fly.io: a started `shared-cpu-1x` with 256 MB is {usd(FLY_MACHINE)} per 30 days in `iad`/`ewr`, the lowest-priced "
        f"regions (`ams`, in `fly.toml`, is about {FLY_AMS_EXTRA * 100:.0f} % more); a stopped or suspended machine bills only its "
        f"rootfs, {usd(FLY_ROOTFS)}/GB per 30 days; egress {usd(FLY_EGRESS)}/GB in North America and Europe. Source: "
        "[fly.io/docs/about/pricing](https://fly.io/docs/about/pricing/), as its source file `about/pricing.mdx` in "
        f"superfly/docs (commit 0137eed1; the page's region snippet in the same repository still computes "
        f"{usd(FLY_SNIPPET_MACHINE)} from a per-second rate, so the page's own table is used). A shared vCPU may run "
        f"{FLY_BASELINE * 80:.0f} ms in each 80 ms (1/{1 / FLY_BASELINE:.0f}) and bursts from an accrued balance: "
        "[fly.io/docs/machines/cpu-performance](https://fly.io/docs/machines/cpu-performance/). Suspend resumes \"in a few "
        "hundred ms\" and bills like a stopped machine: [fly.io/docs/reference/suspend-resume](https://fly.io/docs/reference/suspend-resume/) "
        "(dated 2025-08-15).",
        f"- Google Cloud Run, request-based billing, Tier 1 regions: {usd(CR_VCPU_S, 6)} per vCPU-second, "
        f"{usd(CR_GIB_S, 7)} per GiB-second, {usd(CR_REQUEST * 1e6)} per million requests; free each month "
        f"{CR_FREE_VCPU_S:,} vCPU-seconds, {CR_FREE_GIB_S:,} GiB-seconds, {CR_FREE_REQUESTS / 1e6:.0f} million requests; "
        f"billed time rounded up to {CR_ROUND_S * 1000:.0f} ms. Source: [cloud.google.com/run/pricing](https://cloud.google.com/run/pricing) "
        "(the stored copy shows no date, and its table is cut after the CPU price: the memory and request prices are those "
        "that third-party summaries of the same page give, e.g. cloudwebschool.com's Cloud Run calculator).",
        f"- AWS Lambda, x86: {usd(L_REQUEST * 1e6)} per million requests, {usd(L_GB_S, 8)} per GB-second; free each month "
        f"{L_FREE_REQUESTS / 1e6:.0f} million requests and {L_FREE_GB_S:,} GB-seconds. Source: "
        "[How AWS Pricing Works: Lambda](https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html). "
        "Container images have always been billed for their INIT phase (cold start), and since 1 August 2025 every "
        f"function is. API Gateway HTTP API: {usd(APIGW_REQUEST * 1e6)} per million requests for the first "
        f"{APIGW_TIER_MILLIONS} million a month (its free tier is for new accounts' first 12 months only, so it is left "
        "out): [aws.amazon.com/api-gateway/pricing](https://aws.amazon.com/api-gateway/pricing/), whose stored copy omits "
        "the figure; it is the one learnaws.org and awsforengineers.com (2025-05-19) quote from it.",
    ])


def assumptions() -> str:
    "How the monthly figures are modelled."
    slow = [usd(aws_lambda(r, billed_s=0.010)) for r in RATES]
    return (f"**Assumptions.** Steady traffic of one prediction a request; a 30-day month. Cloud Run: requests arrive at "
            f"random, so the instance is billed for 1 − e^(−{CR_ROUND_S}·rate) of the month (each stretch of activity "
            f"rounded up to {CR_ROUND_S * 1000:.0f} ms; all of it from ~30 requests/s). Lambda: **{L_BILLED_S * 1000:.0f} ms** "
            f"billed a request through the adapter, an assumption (no AWS account here): the service needs about "
            f"{CPU_PER_PREDICTION_MS} ms of CPU a prediction on a full core, {L_GB * 1024:.0f} MB gives about {L_VCPU} vCPU, "
            f"and Lambda bills whole milliseconds; at 10 ms the function-URL column would read {slow[0]}, {slow[1]} and "
            f"{slow[2]}, since the request fee dominates.")


def cost_table() -> str:
    "The table itself, with the notes that read it."
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


def cheapest() -> str:
    "Which platform is cheapest, and where the cold start shows, in the table's own figures."
    cs = f"{COLD_START_S[0]:.2f}–{COLD_START_S[1]:.2f} s"
    return "\n".join([
        f"**Which is cheapest.** With no traffic, or a few requests an hour, Cloud Run and Lambda cost nothing (their free "
        f"tiers) and a stopped Fly machine a few cents of rootfs. At a steady 1 request/s, Lambda behind a function URL is "
        f"the cheapest ({usd(aws_lambda(1))}), then Cloud Run ({usd(cloud_run(1))}), then Fly ({usd(fly(1))}). From about "
        f"{crossover(cloud_run, fly):.0f} request/s for Cloud Run and {crossover(aws_lambda, fly):.0f} for Lambda, one "
        f"always-on Fly machine is the cheapest, and by far at 100 requests/s ({usd(fly(100))} against "
        f"${aws_lambda(100):.0f} and ${cloud_run(100):.0f}): the serverless platforms charge per request, a machine per "
        f"hour, and one worker is fast enough that one small machine carries {WORKER_RPS * FLY_BASELINE:,.0f} requests/s "
        f"at its baseline CPU. Batches change the arithmetic: 100 customers in one `/predict/batch` pay one request fee "
        f"on Cloud Run, Lambda and API Gateway.",
        "",
        f"**Where the cold start shows, and why scale to zero matters for it.** A platform that scales to zero pays for "
        f"idleness with latency: the first request after a quiet spell waits for an instance to be created and for "
        f"`churn_serve` to start (import FastAPI, load and verify the model: {cs} measured here on a full core, more on a "
        f"throttled one). Cloud Run shows it after every idle period and on each scale-out (its startup probe and CPU "
        f"boost keep it short); Lambda on every new execution environment, which is every additional concurrent request, "
        f"and bills it; Fly with `auto_stop_machines = \"stop\"` after a few idle minutes, plus the VM's boot (the grace "
        f"period in `fly.toml` allows 10 s). An always-on Fly machine (`min_machines_running = 1`) never shows it, for "
        f"{usd(FLY_MACHINE)} a month. Fly's **`suspend`** mode sits between: the proxy snapshots an idle machine's memory "
        f"and resumes it \"in a few hundred ms\" on the next request, with the service already running, so the "
        f"{cs} start and the boot are skipped, at the stopped machine's price (rootfs only, {usd(FLY_ROOTFS)}/GB). It needs "
        f"at most {FLY_SUSPEND_MAX_GB} GB of memory and no swap (256 MB here), and a deploy or a host move still gives one "
        f"cold start. To use it, set `auto_stop_machines = \"suspend\"` in `fly.toml`.",
    ])


def wrap(text: str) -> str:
    "Paragraphs and list items wrapped at 118 characters, as the rest of the docs are; table rows left whole."
    out = []
    for line in text.split("\n"):
        if line.startswith("|") or not line: out.append(line)
        else: out.append(textwrap.fill(line, 118, subsequent_indent="  " if line.startswith("- ") else "",
                                       break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def table() -> str:
    "The whole generated block of the Cost section: measurements, prices, assumptions, the table and what it says."
    return wrap("\n\n".join([measured(), prices(), assumptions(), cost_table(), cheapest()]))


START, END = "<!-- cost:start -->\n", "<!-- cost:end -->"


def write(page: Path = Path(__file__).resolve().parents[1] / "docs" / "deploy.md") -> None:
    "Replace the block between the cost markers of `page` with `table()`."
    text = page.read_text()
    if text.count(START) != 1 or text.count(END) != 1: sys.exit(f"{page}: expected one {START.strip()} ... {END} block")
    head, rest = text.split(START)
    tail = rest.split(END)[1]
    page.write_text(head + START + table() + "\n" + END + tail)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]: write()
    elif sys.argv[1:]: sys.exit("usage: python deploy/cost.py [--write]")
    else: print(table())
