"""Static checks of everything that ships the service: the Dockerfile's lint, fly.toml, the dev container,
the GitHub workflows, the Kubernetes manifests and the README's deploy section, each against the app itself.

Every validator is also shown a broken copy and must reject it, so a validator that silently checks
nothing cannot pass these tests.
"""
import copy, hashlib, json, re, subprocess, sys, tomllib
from pathlib import Path

import json5
import pytest
import yaml

from conftest import ROOT
from support import run_plain

BIN = Path(sys.executable).parent
SCHEMAS = ROOT / "tests" / "schemas"  # vendored third-party schemas; their origin and licence in its README.md
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest still-common and the newest that kubernetes-validate knows offline
UV_VERSION = "0.13.9"  # as in .ci/run and the Dockerfile's uv image


def tool(name: str) -> str:
    p = BIN / name
    assert p.exists(), f"{name} is not installed in {BIN}: run `uv sync`"
    return str(p)


@pytest.fixture(scope="module")
def dockerfile_facts() -> dict:
    "EXPOSE, USER and the uv image version, read with the Dockerfile parser."
    import dockerfile
    cmds = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    last_from = max(i for i, c in enumerate(cmds) if c.cmd == "FROM")
    final = cmds[last_from:]
    uv = [f.split(":")[-1] for c in cmds if c.cmd == "COPY" for f in c.flags if f.startswith("--from=ghcr.io/astral-sh/uv:")]
    return {"expose": [int(p.split("/")[0]) for c in final if c.cmd == "EXPOSE" for p in c.value],
            "user": [c.value[0] for c in final if c.cmd == "USER"][-1], "uv": uv}


# ---------------------------------------------------------------- Dockerfile

def test_hadolint_passes():
    r = run_plain(tool("hadolint"), "--failure-threshold", "warning", ROOT / "Dockerfile")
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python app.py\n")
    r = run_plain(tool("hadolint"), "--failure-threshold", "warning", bad)
    assert r.returncode != 0 and "DL3007" in r.stdout, r.stdout  # DL3007: using latest


def test_healthcheck_calls_a_real_route(routes):
    import dockerfile
    (hc,) = [c for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd == "HEALTHCHECK"]
    paths = re.findall(r"http://127\.0\.0\.1:[^/]+(/[\w/]*)", hc.value[-1])
    assert paths == ["/health"] and "GET" in routes["/health"], hc.value


def test_uv_version_agrees_everywhere(dockerfile_facts):
    assert dockerfile_facts["uv"] == [UV_VERSION]
    assert f"UV_VERSION={UV_VERSION}" in (ROOT / ".ci" / "run").read_text()


# ---------------------------------------------------------------- fly.toml

@pytest.fixture(scope="module")
def fly() -> dict:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def test_fly_app_and_build(fly):
    assert re.fullmatch(r"[a-z0-9-]+", fly["app"]) and "change-me" in fly["app"].lower(), "a placeholder app name"
    assert re.fullmatch(r"[a-z]{3}", fly["primary_region"]), fly["primary_region"]
    assert fly["build"]["dockerfile"] == "Dockerfile" and (ROOT / "Dockerfile").exists()
    assert fly["deploy"]["strategy"] in {"rolling", "immediate", "canary", "bluegreen"}


def test_fly_port_and_health_agree_with_the_app(fly, routes, dockerfile_facts):
    from churn_deploy.config import PORT
    svc = fly["http_service"]
    env = fly.get("env", {})
    listens = int(env.get("CHURN_PORT") or env.get("PORT") or PORT)  # churn_serve's order; the image sets neither
    assert svc["internal_port"] == listens == PORT == 9696
    assert dockerfile_facts["expose"] == [PORT], "fly.toml and the Dockerfile's EXPOSE agree"
    checks = svc["checks"]
    assert len(checks) >= 1
    for c in checks:
        assert c.get("method", "GET").upper() == "GET" and "GET" in routes.get(c["path"], set()), c
    assert [c["path"] for c in checks] == ["/health"]


def test_fly_scale_to_zero_and_limits(fly):
    svc = fly["http_service"]
    assert svc["force_https"] is True
    assert svc["auto_stop_machines"] == "stop" and svc["auto_start_machines"] is True
    assert svc["min_machines_running"] == 0
    conc = svc["concurrency"]
    assert conc["type"] == "requests" and 0 < conc["soft_limit"] < conc["hard_limit"], conc
    vm = fly["vm"]
    assert len(vm) == 1 and vm[0]["size"] == "shared-cpu-1x" and vm[0]["memory"] == "256mb", vm


def test_fly_env_are_real_settings(fly):
    "Every [env] variable is a field of Settings (no typo that silently does nothing), and no secret is in it."
    from churn_deploy.config import Settings
    fields = {f"CHURN_{name.upper()}" for name in Settings.model_fields}
    assert set(fly.get("env", {})) <= fields, set(fly["env"]) - fields
    assert "CHURN_API_KEY" not in fly.get("env", {}), "secrets go through `fly secrets set`"
    assert all(isinstance(v, str) for v in fly["env"].values())


# ---------------------------------------------------------------- dev container

def _check_devcontainer(path: Path) -> subprocess.CompletedProcess:
    return run_plain(tool("check-jsonschema"), "--force-filetype", "json5", "--schemafile",
               SCHEMAS / "devContainer.base.schema.json", path)


def test_vendored_schemas_match_their_origin_note():
    "Each schema has a README row: a vendored one its origin, licence and sha256 (which must match); one written here what it validates."
    text = (SCHEMAS / "README.md").read_text()
    def rows(section: str) -> list[list[str]]:
        body = text.split(f"\n## {section}\n")[1].split("\n## ")[0]
        return [[c.strip() for c in r.strip("|").split(" | ")] for r in body.splitlines() if r.startswith("| `")]
    noted = {}
    for name, origin, licence, sha in rows("Vendored"):
        assert "https://github.com/" in origin and licence, f"{name}: say where it comes from and under which licence"
        noted[name.strip("`")] = sha.strip("`")
    written = {name.strip("`"): target for name, target, source in rows("Written here") if source}
    assert all((ROOT / t.strip("`").split("*")[0]).exists() for t in written.values()), written
    files = sorted(p.name for p in SCHEMAS.glob("*.json"))
    assert sorted([*noted, *written]) == files, (sorted(noted), sorted(written), files)
    for name, sha in noted.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == sha, f"{name} differs from its origin note"


def test_devcontainer_matches_schema(tmp_path):
    r = _check_devcontainer(ROOT / ".devcontainer" / "devcontainer.json")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = json5.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    bad["forwardPorts"] = [{"port": 9696}]  # not a port number or "host:port"
    (tmp_path / "devcontainer.json").write_text(json.dumps(bad))
    assert _check_devcontainer(tmp_path / "devcontainer.json").returncode != 0, "the schema must catch a bad port"


def test_devcontainer_reproduces_the_setup():
    from churn_deploy.config import PORT
    dc = json5.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert re.search(r"python:[\w.-]*3\.12", dc["image"]), dc["image"]
    assert any(f.startswith("ghcr.io/devcontainers/features/docker-in-docker:") for f in dc["features"])
    setup = " && ".join(dc.get(k, "") for k in ("onCreateCommand", "postCreateCommand"))
    assert f"uv=={UV_VERSION}" in setup, "uv at the version CI uses"
    assert "uv sync --locked" in dc["postCreateCommand"] and "nbdev_install_hooks" in dc["postCreateCommand"]
    assert PORT in dc["forwardPorts"]
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(dc["customizations"]["vscode"]["extensions"])


# ---------------------------------------------------------------- GitHub workflows

WORKFLOWS = [ROOT / ".github" / "workflows" / n for n in ("ci.yml", "deploy.yml")]


def _actionlint(*paths) -> subprocess.CompletedProcess:
    return run_plain(tool("actionlint"), "-no-color", *paths, cwd=ROOT)


def test_workflows_match_schema():
    r = run_plain(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_workflows_pass_actionlint():
    r = _actionlint(*WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validators_reject_a_broken_workflow(tmp_path):
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    wf["on"] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    wf["jobs"]["deploy"]["steps"][-1]["run"] = "flyctl deploy --image-label ${{ github.sha_typo }}"
    wf["jobs"]["deploy"]["runs-on"] = ["ubuntu-24.04", 42, {"x": 1}]
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(yaml.safe_dump(wf, sort_keys=False).replace("'on':", "on:"))
    assert _actionlint(bad).returncode != 0
    assert run_plain(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", bad).returncode != 0


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def test_actions_pinned_to_commits():
    for path in WORKFLOWS:
        for s in _steps(yaml.safe_load(path.read_text())):
            if "uses" in s: assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", s["uses"]), (path.name, s["uses"])


def test_ci_workflow_tests_then_builds_runs_and_smoke_tests_the_image():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = _steps(wf)
    uv = [s for s in steps if s.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert uv and uv[0]["with"]["version"] == UV_VERSION
    py = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert py and py[0]["with"]["python-version-file"] == ".python-version"
    script = "\n".join(s.get("run", "") for s in steps)
    assert "uv run --locked pytest" in script, "the README's test command"
    test_steps = wf["jobs"]["test"]["steps"]
    runs = [s.get("run", "") for s in test_steps]
    (pytest_at,) = [i for i, r in enumerate(runs) if "pytest" in r]
    assert re.search(r"\bpytest\b.*\s-r[a-zA-Z]*s", runs[pytest_at]), "pytest -rs: every skip shows its reason"
    wrk_at = [i for i, r in enumerate(runs) if re.search(r"apt-get install\b.*\bwrk\b", r)]
    assert wrk_at and wrk_at[0] < pytest_at, "wrk is installed before the tests, so the benchmark smoke test runs"
    assert re.search(r"docker build\b", script) and re.search(r"docker run .*--publish 9696:9696", script)
    assert "/health" in script and "/predict" in script and "model/model.json" in script
    jobs = wf["jobs"]
    assert jobs["image"]["needs"] == "test"


def test_deploy_workflow():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"] == ["v*"]
    assert wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is False
    steps = _steps(wf)
    assert any(s.get("uses", "").startswith("superfly/flyctl-actions/setup-flyctl@") for s in steps)
    deploy = [s for s in steps if "flyctl deploy" in s.get("run", "")]
    assert len(deploy) == 1 and "--remote-only" in deploy[0]["run"]
    assert deploy[0]["env"]["FLY_API_TOKEN"] == "${{ secrets.FLY_API_TOKEN }}"


# ---------------------------------------------------------------- Kubernetes

@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    docs = {}
    for p in K8S:
        for d in yaml.safe_load_all(p.read_text()):
            docs[d["kind"]] = d
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly(version):
    assert {p.name for p in K8S} >= {"deployment.yaml", "service.yaml", "hpa.yaml"}
    r = run_plain(tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *K8S)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path, k8s):
    bad = copy.deepcopy(k8s["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = run_plain(tool("kubernetes-validate"), "--strict", tmp_path / "bad.yaml")
    assert r.returncode != 0, r.stdout


def test_k8s_ports_and_probes_agree_with_the_app(k8s, routes, dockerfile_facts):
    from churn_deploy.config import PORT
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert list(ports.values()) == [PORT] == dockerfile_facts["expose"]

    def port_of(ref): return ports[ref] if isinstance(ref, str) else ref
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert "GET" in routes.get(get["path"], set()), (probe, get["path"])
        assert port_of(get["port"]) == PORT, probe
    svc = k8s["Service"]["spec"]
    assert [port_of(p["targetPort"]) for p in svc["ports"]] == [PORT]
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= labels.items()
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_runs_locked_down(k8s, dockerfile_facts):
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    uid = int(dockerfile_facts["user"].split(":")[0])
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == uid, "the Dockerfile's USER"
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"]), "a writable /tmp"
    assert pod["automountServiceAccountToken"] is False
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"]
    assert [e for e in c["env"] if e["name"] == "CHURN_API_KEYS"][0]["valueFrom"]["secretKeyRef"], "a Secret"


def test_hpa_scales_the_deployment(k8s):
    hpa = k8s["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", k8s["Deployment"]["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    assert cpu, "CPU utilisation needs the container's cpu request, which the Deployment sets"


# ---------------------------------------------------------------- README

def test_readme_deploy_section():
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert text.count("<!-- deploy:start -->") == 1 and text.count("<!-- deploy:end -->") == 1
    section = text.split("<!-- deploy:start -->")[1].split("<!-- deploy:end -->")[0]
    for needed in ("docker build", "docker run", "fly launch", "fly deploy", "fly secrets set CHURN_API_KEY=",
                   "fly scale", "churn_client --url", "kubectl apply -f deploy/k8s/"):
        assert needed in section, needed
    for topic in ("scale to zero", "cold start", "why the model is committed"):
        assert topic in section.lower(), topic
