"""The dependency audit and Dependabot, checked offline: the schemas and actionlint accept the files (and
reject broken copies), the audit covers the serve set and the whole lock, and the docs' local
commands are the workflow's.

pip-audit itself needs the network (it asks PyPI for advisories), so it runs only on GitHub.
"""
import re, shutil, subprocess, tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT, script
from support import SHA_PIN, actionlint, check_schema, run_plain  # shared with other test modules

AUDIT = ROOT / ".github" / "workflows" / "audit.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"


@pytest.fixture(scope="module")
def audit() -> dict:
    wf = yaml.safe_load(AUDIT.read_text())
    wf["on"] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    return wf


@pytest.fixture(scope="module")
def dependabot() -> dict:
    return yaml.safe_load(DEPENDABOT.read_text())


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def _run_text(wf: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(wf))


# ---------------------------------------------------------------- validators

def test_audit_workflow_is_valid():
    r = check_schema("vendor.github-workflows", AUDIT)
    assert r.returncode == 0, r.stdout + r.stderr
    r = actionlint(AUDIT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dependabot_is_valid():
    r = check_schema("vendor.dependabot", DEPENDABOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validators_reject_broken_copies(tmp_path, audit, dependabot):
    bad_wf = {**audit, "on": {**audit["on"], "schedule": [{"cron": "61 5 * * 1"}]}}  # no minute 61
    job = next(iter(bad_wf["jobs"]))
    bad_wf["jobs"] = {job: {**audit["jobs"][job], "steps": audit["jobs"][job]["steps"] + [{"run": 'echo "${{ matrix.sett }}"'}]}}
    p = tmp_path / ".github" / "workflows" / "audit.yml"
    p.parent.mkdir(parents=True)
    p.write_text(yaml.safe_dump(bad_wf, sort_keys=False))
    r = actionlint(p)
    assert r.returncode != 0 and "61" in r.stdout and "sett" in r.stdout, r.stdout
    bad_wf["jobs"][job]["runs-on"] = ["ubuntu-24.04", 42, {"x": 1}]
    p.write_text(yaml.safe_dump(bad_wf, sort_keys=False))
    assert check_schema("vendor.github-workflows", p).returncode != 0

    broken = ({**dependabot, "version": 1},
              {**dependabot, "updates": [{**dependabot["updates"][0], "package-ecosystem": "uvx"}]},
              {**dependabot, "updates": [{**dependabot["updates"][0], "schedule": {"interval": "hourly"}}]})
    for i, b in enumerate(broken): (tmp_path / f"dependabot{i}.yml").write_text(yaml.safe_dump(b))
    r = check_schema("vendor.dependabot", *(tmp_path / f"dependabot{i}.yml" for i in range(len(broken))))
    assert r.returncode != 0, r.stdout
    for i in range(len(broken)): assert f"dependabot{i}.yml::" in r.stdout, (i, r.stdout)  # each copy refused


# ---------------------------------------------------------------- what the audit does

def test_audit_runs_weekly_on_push_and_by_hand(audit):
    on = audit["on"]
    assert {"schedule", "push", "workflow_dispatch"} <= set(on), on
    (cron,) = [c["cron"] for c in on["schedule"]]
    minute, hour, dom, month, dow = cron.split()
    assert dom == month == "*" and dow.isdigit(), f"{cron!r} is not weekly"
    assert "uv.lock" in on["push"].get("paths", ["uv.lock"]), "a changed lock must be audited on push"
    assert audit["permissions"] == {"contents": "read"}


def test_audit_covers_the_serve_set_and_the_whole_lock(audit):
    (job,) = audit["jobs"].values()
    flags = {m["groups"] for m in job["strategy"]["matrix"]["include"]}
    assert flags == {"--no-default-groups", "--all-groups"}, flags
    assert job["strategy"].get("fail-fast") is False, "one set's findings must not cancel the other's audit"
    text = _run_text(audit)
    assert re.search(r"uv export --locked\b.*--no-emit-project", text), text
    assert re.search(r"pip-audit|\$PIP_AUDIT", text) and "--disable-pip" in text and "--strict" in text, text
    assert audit["env"]["PIP_AUDIT"].startswith("pip-audit@"), "pin pip-audit's version"


def test_audit_actions_pinned_like_ci(audit):
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    uses = [s["uses"] for s in _steps(audit) if "uses" in s]
    assert uses and all(SHA_PIN.fullmatch(u) for u in uses), uses
    uv = [s["with"]["version"] for s in _steps(audit) + _steps(ci) if s.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert len(set(uv)) == 1, f"the audit and CI must use one uv version: {uv}"


@pytest.mark.parametrize("flag", ["--no-default-groups", "--all-groups"])
def test_exported_sets_hold_what_they_should(flag):
    "The export the audit reads: the serve set is the image's dependencies, the whole lock adds the rest."
    uv = shutil.which("uv")
    if uv is None: pytest.skip("uv is not on PATH")
    r = run_plain(uv, "export", "--locked", "--no-emit-project", "--quiet", flag, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    names = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+", r.stdout, re.M)}
    assert "--hash=sha256:" in r.stdout, "with hashes, pip-audit takes the pins as they are"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    serve = {Requirement(d).name.lower() for d in project["project"]["dependencies"]}
    assert serve <= names, serve - names
    training = {"scikit-learn", "pandas", "nbdev", "pytest"}
    if flag == "--no-default-groups": assert not names & training, names & training
    else: assert training <= names, training - names


# ---------------------------------------------------------------- Dependabot

def test_dependabot_watches_uv_and_actions(dependabot):
    eco = {u["package-ecosystem"]: u for u in dependabot["updates"]}
    assert {"uv", "github-actions"} <= set(eco), set(eco)
    assert all(u["directory"] == "/" and u["schedule"]["interval"] in ("daily", "weekly") for u in eco.values())


def test_dependabot_respects_the_deliberate_pins(dependabot):
    "Each ignored range starts exactly at an upper bound that pyproject.toml sets (docs/development.md: pinned on purpose)."
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(d) for d in project["project"]["dependencies"]]
    reqs += [Requirement(d) for g in project["dependency-groups"].values() for d in g if isinstance(d, str)]
    bounds = {r.name.lower(): {s.version for s in r.specifier if s.operator == "<"} for r in reqs}
    (uv,) = [u for u in dependabot["updates"] if u["package-ecosystem"] == "uv"]
    ignored = {i["dependency-name"]: i["versions"] for i in uv.get("ignore", [])}
    assert {"scikit-learn", "nbdev", "execnb", "fastcore"} <= set(ignored), ignored
    for name, versions in ignored.items():
        (v,) = versions
        assert v.startswith(">="), v
        assert v[2:] in bounds.get(name, set()), f"{name} {v}: pyproject.toml has no matching <{v[2:]}"


# ---------------------------------------------------------------- the local audit the docs show

def test_readme_local_audit_matches_the_workflow(audit):
    "The local audit the docs show (docs/development.md, linked from the README) runs what the workflow runs."
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [l for p in pages for l in p.read_text().splitlines() if "pip-audit@" in l and l.startswith("uvx ")]
    assert len(lines) == 2, "the docs show the local audit of both sets, once"
    for line, flag in zip(lines, ("--no-default-groups", "--all-groups")):
        assert line.startswith(f"uvx {audit['env']['PIP_AUDIT']} "), line
        assert flag in line and "uv export --locked" in line and "--no-emit-project" in line, line
        assert "--disable-pip" in line and "--strict" in line, line
