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
