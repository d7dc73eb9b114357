"""One command-line style: every console script's `--help` spells each flag one way (underscores), and every flag the
docs show for a command is one that command's help lists, spelled the same way."""
import re, subprocess, tomllib

import pytest

from conftest import ROOT, script

SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def helps() -> dict[str, set[str]]:
    "Each console script's flags, as its --help lists them."
    out, procs = {}, {name: subprocess.Popen([script(name), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for name in SCRIPTS}  # all at once: each spends its time importing
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0 and stderr == "", (name, stderr)
        out[name] = set(FLAG.findall(stdout))
    return out


def test_every_script_has_help_with_one_spelling(helps):
    assert set(helps) == set(SCRIPTS)
    for name, flags in helps.items():
        assert "--help" in flags, (name, flags)
        assert [f for f in flags if "-" in f[2:]] == [], f"{name} --help spells flags with hyphens: use underscores"


def without_substitutions(line: str) -> str:
    "The line without its `$(...)` command substitutions (another command's flags), nested parentheses included."
    out, depth, i = [], 0, 0
    while i < len(line):
        if line.startswith("$(", i): depth += 1; i += 2; continue
        if depth and line[i] == "(": depth += 1
        elif depth and line[i] == ")": depth -= 1
        elif not depth: out.append(line[i])
        i += 1
    return "".join(out)


def commands_in(text: str) -> list[tuple[str, str]]:
    "(script, the rest of its command) for each console script run in the text's code: fenced blocks and inline spans."
    code = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for chunk in code:
        for line in map(without_substitutions, chunk.replace("\\\n", " ").splitlines()):
            for m in re.finditer(r"(?<![\w/.-])(churn_[a-z_]+)\b(.*?)(?=\||&&|;|\bchurn_[a-z_]+\b|$)", line):
                if m[1] in SCRIPTS: found.append((m[1], m[2]))
    return found


def test_every_flag_the_docs_show_is_in_its_commands_help(helps):
    shown, wrong = 0, []
    for page in DOCS:
        for name, rest in commands_in(page.read_text()):
            for flag in FLAG.findall(rest.split("#")[0]):
                shown += 1
                if flag not in helps[name]: wrong.append(f"{page.name}: {name} {flag}")
    assert shown > 50, f"only {shown} flags found in the docs: is the scanner broken?"
    assert wrong == [], "flags the docs show that the command's --help does not list (spelling included):\n" + "\n".join(sorted(set(wrong)))


def test_the_scanner_finds_commands_and_flags():
    text = ("Run `churn_score --input a.csv --output b.csv` and\n```bash\nuv run churn_campaign --contact-cost 5 \\\n  --budget 9 | head\n"
            "churn_client --url \"$(gcloud describe x --format 'value(a.b)')\" --batch_size 3\n```\n")
    assert sorted(commands_in(text)) == [("churn_campaign", " --contact-cost 5    --budget 9 "),
                                         ("churn_client", ' --url "" --batch_size 3'), ("churn_score", " --input a.csv --output b.csv")]
