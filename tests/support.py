"""Helpers that several test modules share and that are not fixtures (those live in conftest.py).

Test modules import from here and from conftest, never from one another.
"""
import re, subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile

from conftest import ROOT

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
