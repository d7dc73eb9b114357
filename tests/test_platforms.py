"""The deploy configurations for the other platforms (deploy/cloud-run, aws-lambda, elastic-beanstalk, heroku, render),
checked offline: each against a real schema or linter, each broken copy rejected by it, and each against the app: the
port it listens on, the probe paths it serves, the grace period it drains for. No platform account is used, so none
of these deployments is exercised for real; what can run here (Heroku's start command on a platform-chosen $PORT)
runs for real.

| file | checked with |
|---|---|
| cloud-run/service.yaml | check-jsonschema, Knative Serving's Service schema (its CRD's, vendored in tests/schemas/); kubernetes-validate --strict on its revision template as a core/v1 Pod |
| aws-lambda/template.yaml | cfn-lint, which applies the SAM transform |
| aws-lambda/Dockerfile, heroku/Dockerfile | hadolint |
| elastic-beanstalk/docker-compose.yml | check-jsonschema, the Compose specification's schema (built in) |
| elastic-beanstalk/.ebextensions/*.config | check-jsonschema, a schema of the documented options of the namespaces it sets (written here: AWS publishes none) |
| heroku/heroku.yml | check-jsonschema, a schema of heroku.yml's documented sections (written here: Heroku publishes none) |
| render/render.yaml | check-jsonschema, Render's Blueprint schema (vendored in tests/schemas/) |
"""
import copy, json, os, re, subprocess, sys, tomllib
from pathlib import Path

import dockerfile
import httpx
import pytest
import yaml

from conftest import ROOT, free_port
from support import docker_words, final_env, parse_duration, parse_stages, run_plain
from conftest import server_env, stop, wait_until_up  # the environment without CHURN_*, and a server's start and stop

BIN = Path(sys.executable).parent
DEPLOY = ROOT / "deploy"
SCHEMAS = ROOT / "tests" / "schemas"
LAMBDA_ADAPTER = "public.ecr.aws/awsguru/aws-lambda-adapter"


def tool(name: str) -> str:
    p = BIN / name
    assert p.exists(), f"{name} is not installed in {BIN}: run `uv sync`"
    return str(p)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    "The serving image's ENV, read from the Dockerfile."
    return final_env(parse_stages()[-1])


@pytest.fixture(scope="module")
def settings_fields() -> set[str]:
    from churn_deploy.config import Settings
    return {f"CHURN_{name.upper()}" for name in Settings.model_fields}


def grace() -> float:
    from churn_deploy.config import Settings
    return Settings.model_fields["grace_period"].default


def is_get(routes, path: str) -> bool: return "GET" in routes.get(path, set())


def test_every_platform_has_its_files():
    for f in ("cloud-run/service.yaml", "aws-lambda/Dockerfile", "aws-lambda/template.yaml",
              "elastic-beanstalk/docker-compose.yml", "elastic-beanstalk/.ebextensions/churn.config",
              "heroku/heroku.yml", "heroku/Dockerfile", "render/render.yaml"):
        assert (DEPLOY / f).is_file(), f


def check_schema(schema: str | list[str], good: list[Path], broken: dict[str, object], tmp_path: Path) -> None:
    """One check-jsonschema run (each costs a second or two to start): every `good` file passes, and every broken
    copy (its name → the document) fails. `schema`: a file in tests/schemas/, or check-jsonschema's own arguments."""
    paths = {}
    for i, (name, doc) in enumerate(broken.items()):
        paths[name] = tmp_path / f"broken-{i}.yaml"
        paths[name].write_text(yaml.safe_dump(doc))
    how = ["--schemafile", SCHEMAS / schema] if isinstance(schema, str) else schema
    r = run_plain(tool("check-jsonschema"), "-o", "json", "--force-filetype", "yaml", *how, *good, *paths.values())
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert not out.get("parse_errors"), out["parse_errors"]
    failed = {e["filename"] for e in out["errors"]}
    assert not failed & {str(p) for p in good}, [e for e in out["errors"] if e["filename"] in map(str, good)]
    accepted = [name for name, p in paths.items() if str(p) not in failed]
    assert not accepted, f"{schema} accepts broken copies: {accepted}"
    assert r.returncode == (1 if broken else 0), r.stdout + r.stderr


def edited(doc, edit) -> object:
    "A deep copy of `doc` with `edit` applied to it."
    bad = copy.deepcopy(doc)
    edit(bad)
    return bad


# ---------------------------------------------------------------- Google Cloud Run (Knative Service)

KNATIVE_REVISION_FIELDS = {"containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"}
"RevisionSpec fields beyond a PodSpec's, which a core/v1 Pod does not have."


@pytest.fixture(scope="module")
def knative() -> dict:
    return load_yaml(DEPLOY / "cloud-run" / "service.yaml")


def pod_of(svc: dict) -> dict:
    "The revision template as the core/v1 Pod it is a subset of (without Knative's own RevisionSpec fields)."
    spec = {k: v for k, v in svc["spec"]["template"]["spec"].items() if k not in KNATIVE_REVISION_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": svc["metadata"]["name"]}, "spec": spec}


def kubernetes_validate(tmp_path: Path, doc: dict) -> subprocess.CompletedProcess:
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(doc))
    return run_plain(tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.30.0", tmp_path / "pod.yaml")


def test_cloud_run_revision_validates_as_a_pod(tmp_path, knative):
    r = kubernetes_validate(tmp_path, pod_of(knative))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = copy.deepcopy(knative)
    bad["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["pathh"] = "/ready"
    r = kubernetes_validate(tmp_path, pod_of(bad))
    assert r.returncode != 0 and "pathh" in r.stdout + r.stderr, r.stdout + r.stderr


def test_cloud_run_service_matches_knatives_schema(tmp_path, knative):
    "Knative Serving's own schema of a Service (its CRD's, vendored in tests/schemas/), and broken copies it rejects."
    tmpl = lambda d: d["spec"]["template"]
    check_schema("knative-service_v1.json", [DEPLOY / "cloud-run" / "service.yaml"], {
        "a misspelt probe field": edited(knative, lambda d: tmpl(d)["spec"]["containers"][0]["startupProbe"].update(periodSecondss=1)),
        "a number as an annotation": edited(knative, lambda d: tmpl(d)["metadata"]["annotations"].update({"autoscaling.knative.dev/minScale": 0})),
        "concurrency as text": edited(knative, lambda d: tmpl(d)["spec"].update(containerConcurrency="32")),
        "a Pod field Knative does not allow": edited(knative, lambda d: tmpl(d)["spec"].update(restartPolicy="Never")),
        "no containers": edited(knative, lambda d: tmpl(d)["spec"].pop("containers"))}, tmp_path)


def test_cloud_run_limits(knative):
    "What Knative's schema leaves to Cloud Run: its annotations, its ranges, its reserved PORT."
    assert (knative["apiVersion"], knative["kind"]) == ("serving.knative.dev/v1", "Service")
    tmpl = knative["spec"]["template"]
    ann = tmpl["metadata"]["annotations"]
    lo, hi = int(ann["autoscaling.knative.dev/minScale"]), int(ann["autoscaling.knative.dev/maxScale"])
    assert lo == 0 and hi >= 1, "scales to zero"
    assert ann["run.googleapis.com/cpu-throttling"] == "true", "request-based billing, as the cost table assumes"
    spec = tmpl["spec"]
    assert 1 <= spec["containerConcurrency"] <= 1000 and 1 <= spec["timeoutSeconds"] <= 3600
    (c,) = spec["containers"]
    assert not any(e["name"] == "PORT" for e in c.get("env", [])), "PORT is reserved: Cloud Run sets it from containerPort"
    assert c["resources"]["limits"]["cpu"] == "1"


def test_cloud_run_concurrency_is_the_measured_saturation_point(knative):
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert knative["spec"]["template"]["spec"]["containerConcurrency"] == fly["http_service"]["concurrency"]["soft_limit"]


def test_cloud_run_port_probes_and_grace(knative, routes, image_env):
    (c,) = knative["spec"]["template"]["spec"]["containers"]
    ((port,),) = [[p["containerPort"] for p in c["ports"]]]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert "CHURN_PORT" not in image_env and "CHURN_PORT" not in env, \
        "Cloud Run sets PORT=containerPort: with no CHURN_PORT, churn_serve listens there"
    assert c["startupProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert is_get(routes, get["path"]) and get["port"] == port, (probe, get)
    assert float(env["CHURN_GRACE_PERIOD"]) < 10, "Cloud Run kills 10 s after SIGTERM"


# ---------------------------------------------------------------- AWS Lambda (Web Adapter + SAM)

@pytest.fixture(scope="module")
def sam() -> dict:
    class Loader(yaml.SafeLoader): pass
    def tagged(loader, node):  # CloudFormation's short forms, kept as {tag: value}
        build = {yaml.ScalarNode: loader.construct_scalar, yaml.SequenceNode: loader.construct_sequence,
                 yaml.MappingNode: loader.construct_mapping}[type(node)]
        return {node.tag: build(node, deep=True) if not isinstance(node, yaml.ScalarNode) else build(node)}
    for tag in ("!Ref", "!If", "!Not", "!Equals", "!GetAtt", "!Sub"): Loader.add_constructor(tag, tagged)
    return yaml.load((DEPLOY / "aws-lambda" / "template.yaml").read_text(), Loader=Loader)


def test_sam_template_passes_cfn_lint(tmp_path):
    r = run_plain(tool("cfn-lint"), DEPLOY / "aws-lambda" / "template.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DEPLOY / "aws-lambda" / "template.yaml").read_text()
    for broken, code in ((text.replace("MemorySize: 512", "MemorySize: 50000"), "E3034"),
                         (text.replace("      Timeout: 30", "      Timeoutt: 30"), "E3002")):
        (tmp_path / "bad.yaml").write_text(broken)
        r = run_plain(tool("cfn-lint"), tmp_path / "bad.yaml")
        assert r.returncode != 0 and code in r.stdout, r.stdout


@pytest.mark.parametrize("path", ["aws-lambda/Dockerfile", "heroku/Dockerfile"])
def test_platform_dockerfiles_pass_hadolint(path, tmp_path):
    r = run_plain(tool("hadolint"), "--failure-threshold", "warning", DEPLOY / path)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text((DEPLOY / path).read_text() + "RUN cd /tmp && apt-get install curl\n")
    r = run_plain(tool("hadolint"), "--failure-threshold", "warning", bad)
    assert r.returncode != 0 and "DL3003" in r.stdout, r.stdout  # DL3003: use WORKDIR, not cd


def dockerfile_facts(path: Path) -> dict:
    "FROM, build-arg defaults, ENV (expanded as Docker does), COPY --from and CMD/ENTRYPOINT of a one-stage Dockerfile."
    cmds = dockerfile.parse_file(str(path))
    args = {k: v for c in cmds if c.cmd == "ARG" for k, _, v in [c.value[0].partition("=")]}
    env = {}
    for c in cmds:
        if c.cmd == "ENV":
            for k, v in zip(c.value[::2], c.value[1::2]): env[k] = docker_words(v, env)
    (frm,) = [c.value[0] for c in cmds if c.cmd == "FROM"]
    return {"from": frm, "args": args, "env": env, "cmds": cmds,
            "copies": [(f.split("=", 1)[1], c.value) for c in cmds if c.cmd == "COPY" for f in c.flags if f.startswith("--from=")],
            "entrypoint": [c for c in cmds if c.cmd == "ENTRYPOINT"], "cmd": [c for c in cmds if c.cmd == "CMD"]}


def test_lambda_image_adds_the_pinned_adapter_and_points_it_at_the_service(routes, sam, image_env):
    from churn_deploy.config import PORT
    f = dockerfile_facts(DEPLOY / "aws-lambda" / "Dockerfile")
    assert f["from"] == "${BASE_IMAGE}", "FROM the serving image, not a copy of its build"
    ((src, value),) = f["copies"]
    assert re.fullmatch(re.escape(LAMBDA_ADAPTER) + r":\d+\.\d+\.\d+", src), f"{src}: pin the adapter's version"
    assert tuple(value) == ("/lambda-adapter", "/opt/extensions/lambda-adapter")
    env = {**image_env, **f["env"]}
    assert int(env["AWS_LWA_PORT"]) == PORT and not {"CHURN_PORT", "PORT"} & set(env), \
        "Lambda sets no PORT: the adapter calls churn_serve's default port"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/ready" and is_get(routes, "/ready")
    assert env["AWS_LWA_READINESS_CHECK_HEALTHY_STATUS"] == "200", "/ready answers 503 while loading or draining"
    assert env["CHURN_HOST"] == "127.0.0.1", "only the adapter, on the same host, calls the service"
    assert not f["entrypoint"] and not f["cmd"], "the image's ENTRYPOINT (churn_serve) runs as is"
    meta = sam["Resources"]["ChurnFunction"]["Metadata"]
    assert (DEPLOY / "aws-lambda" / meta["DockerContext"] / meta["Dockerfile"]).resolve() == (DEPLOY / "aws-lambda" / "Dockerfile").resolve()
    assert meta["DockerBuildArgs"]["BASE_IMAGE"] == f["args"]["BASE_IMAGE"], "sam build and the Dockerfile name the same base"


def test_sam_function(sam, settings_fields):
    fn = sam["Resources"]["ChurnFunction"]
    assert sam["Transform"] == "AWS::Serverless-2016-10-31" and fn["Type"] == "AWS::Serverless::Function"
    props = fn["Properties"]
    assert props["PackageType"] == "Image" and props["FunctionUrlConfig"]["AuthType"] in ("NONE", "AWS_IAM")
    assert [e["Type"] for e in props["Events"].values()] == ["HttpApi"]
    assert set(props["Environment"]["Variables"]) <= settings_fields
    assert "!Ref" in str(props["Environment"]["Variables"]["CHURN_API_KEYS"]), "keys come from a NoEcho parameter"
    assert sam["Parameters"]["ApiKeys"]["NoEcho"] is True
    assert props["MemorySize"] >= 256, "the 109 MiB peak needs room"


# ---------------------------------------------------------------- AWS Elastic Beanstalk (Docker Compose)

@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(DEPLOY / "elastic-beanstalk" / "docker-compose.yml")


def test_compose_file_matches_the_compose_schema(tmp_path, compose):
    check_schema(["--builtin-schema", "vendor.compose-spec"], [DEPLOY / "elastic-beanstalk" / "docker-compose.yml"],
                 {"a misspelt key": edited(compose, lambda d: d["services"]["churn"].update(stop_grace_periodd="25s"))}, tmp_path)


EB_CONFIGS = sorted((DEPLOY / "elastic-beanstalk" / ".ebextensions").glob("*.config"))


def test_ebextensions_match_the_option_schema(tmp_path):
    "Each .ebextensions file against the documented options of the namespaces it sets (tests/schemas/README.md)."
    assert EB_CONFIGS
    doc, process = load_yaml(EB_CONFIGS[0]), "aws:elasticbeanstalk:environment:process:default"
    def setting(ns, option, value): return edited(doc, lambda d: d["option_settings"].setdefault(ns, {}).update({option: value}))
    check_schema("ebextensions-options.schema.json", EB_CONFIGS, {
        "a deregistration delay past 3600 s": setting(process, "DeregistrationDelay", "4000"),
        "a misspelt option": setting(process, "HealthCheckPathh", "/ready"),
        "a number, not a string": setting(process, "Port", 80),
        "a misspelt namespace": setting("aws:elasticbeanstalk:enviroment", "EnvironmentType", "LoadBalanced")}, tmp_path)


def test_beanstalk_port_health_and_grace(compose, routes, settings_fields, image_env):
    from churn_deploy.config import PORT
    (svc,) = compose["services"].values()
    assert svc["ports"] == [f"80:{PORT}"] and not {"CHURN_PORT", "PORT"} & (set(image_env) | set(svc["environment"])), \
        "the instance's port 80 to the service's default port"
    assert set(svc["environment"]) <= settings_fields
    assert parse_duration(svc["stop_grace_period"]) >= grace() + 5 and svc["stop_signal"] == "SIGTERM"
    assert svc["read_only"] is True and svc["tmpfs"] == ["/tmp"]
    opts = {}
    for p in EB_CONFIGS:
        for ns, kv in load_yaml(p)["option_settings"].items(): opts.setdefault(ns, {}).update(kv)
    proc = opts["aws:elasticbeanstalk:environment:process:default"]
    assert proc["Port"] == "80" and proc["HealthCheckPath"] == "/ready" and is_get(routes, "/ready")
    assert float(proc["DeregistrationDelay"]) >= grace(), "in-flight requests finish before an instance leaves"


# ---------------------------------------------------------------- Heroku (heroku.yml + a thin image)

def test_heroku_yml(routes, tmp_path):
    path = DEPLOY / "heroku" / "heroku.yml"
    doc = load_yaml(path)
    check_schema("heroku.yml.schema.json", [path], {
        "a misspelt section": {**doc, "runn": {"web": "churn_serve"}},
        "a list for a Dockerfile": {**doc, "build": {"docker": {"web": ["Dockerfile"]}}},
        "a release without its command": {**doc, "release": {"image": "web"}}}, tmp_path)
    web = doc["build"]["docker"]["web"]
    assert (ROOT / web).resolve() == (DEPLOY / "heroku" / "Dockerfile").resolve(), "a path from the repository root"
    assert "run" not in doc, "the image's CMD starts the service on $PORT"
    f = dockerfile_facts(DEPLOY / "heroku" / "Dockerfile")
    assert f["from"] == "${BASE_IMAGE}" and "BASE_IMAGE" in doc["build"]["config"]


def serve_image(tmp_path, argv, image_env, **env) -> tuple[subprocess.Popen, Path]:
    "Start the image's command as the image would, with its ENV and no inherited PORT, on the loopback, plus `env`."
    base = server_env()
    base.pop("PORT", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env={**base, **image_env, "PATH": f"{BIN}:{os.environ['PATH']}",
                                           "CHURN_MODEL_DIR": str(ROOT / "model"), "CHURN_HOST": "127.0.0.1", **env},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def test_heroku_command_serves_on_the_platforms_port(tmp_path, image_env):
    "Heroku's CMD, run for real with the image's ENV and a $PORT chosen by the platform: it listens on $PORT."
    f = dockerfile_facts(DEPLOY / "heroku" / "Dockerfile")
    assert [c.value for c in f["entrypoint"]] == [()], "ENTRYPOINT reset, so Heroku runs the CMD"
    (cmd,) = f["cmd"]
    assert cmd.json and cmd.value == ("churn_serve",)
    port = free_port()
    proc, log = serve_image(tmp_path, list(cmd.value), image_env, PORT=str(port))
    try: wait_until_up(f"http://127.0.0.1:{port}", proc, log)
    finally: assert stop(proc) == 0, "Heroku's SIGTERM drains and exits 0"
    # a platform that sets a PORT that is not a port number: one line, at once, rather than a silent 9696
    r = subprocess.run(list(cmd.value), env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PORT": "web"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr == "churn_serve: error: PORT: expected a port number 1-65535, got 'web'\n", r.stderr


def test_churn_port_wins_over_the_platforms_port(tmp_path, image_env):
    "An operator's CHURN_PORT (or --port) is kept even where the platform sets $PORT."
    churn_port, platform_port = free_port(), free_port()
    proc, log = serve_image(tmp_path, [str(BIN / "churn_serve")], image_env, CHURN_PORT=str(churn_port), PORT=str(platform_port))
    try:
        wait_until_up(f"http://127.0.0.1:{churn_port}", proc, log)
        with pytest.raises(httpx.ConnectError): httpx.get(f"http://127.0.0.1:{platform_port}/health", timeout=2)
    finally: stop(proc)


# ---------------------------------------------------------------- Render (Blueprint)

@pytest.fixture(scope="module")
def render() -> dict:
    return load_yaml(DEPLOY / "render" / "render.yaml")


def test_render_blueprint_matches_renders_schema(tmp_path, render):
    def service(**change): return edited(render, lambda d: d["services"][0].update(change))
    check_schema("render.yaml.schema.json", [DEPLOY / "render" / "render.yaml"], {
        "an unknown plan": service(plan="huge"), "a misspelt key": service(healthCheckPathh="/ready"),
        "a shutdown delay past 300 s": service(maxShutdownDelaySeconds=900)}, tmp_path)


def test_render_port_health_and_grace(render, routes, settings_fields, image_env):
    (svc,) = render["services"]
    assert svc["runtime"] == "docker" and (ROOT / svc["dockerContext"] / svc["dockerfilePath"]).resolve() == (ROOT / "Dockerfile").resolve()
    env = {e["key"]: e for e in svc["envVars"]}
    assert not {"CHURN_PORT", "PORT"} & (set(env) | set(image_env)), "Render sets $PORT and routes to it: churn_serve follows it"
    assert svc["healthCheckPath"] == "/ready" and is_get(routes, "/ready")
    assert svc["maxShutdownDelaySeconds"] >= float(env["CHURN_GRACE_PERIOD"]["value"]) + 5
    assert set(env) <= settings_fields
    assert env["CHURN_API_KEYS"] == {"key": "CHURN_API_KEYS", "sync": False}, "a secret, set in the dashboard"


# ---------------------------------------------------------------- every platform

def test_no_secret_is_written_in_any_platform_file():
    for p in DEPLOY.glob("*/**/*"):
        if not p.is_file() or p.parent.name in ("k8s", "prometheus", "grafana"): continue
        text = p.read_text()
        assert not re.search(r"CHURN_API_KEYS?\s*[:=]\s*['\"]?[0-9a-f]{16,}", text), p
        assert not re.search(r"value:\s*['\"]?[a-z]+:[0-9a-f]{64}", text), p


# ---------------------------------------------------------------- the README's sections

README = (ROOT / "docs" / "deploy.md").read_text()


def section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert m, f"no section '## {title}' in the README"
    return m.group(1)


def test_readme_deploy_anywhere():
    sec = section("Deploy anywhere")
    assert "None of these deployments was exercised for real" in sec
    for sub, needed in (("Google Cloud Run", ["gcloud run services replace deploy/cloud-run/service.yaml"]),
                        ("AWS Lambda", ["sam build", "sam deploy --guided"]),
                        ("AWS Elastic Beanstalk", ["eb init", "eb create", "cd deploy/elastic-beanstalk"]),
                        ("Heroku", ["heroku container:release web", "deploy/heroku"]),
                        ("Render", ["deploy/render/render.yaml"])):
        m = re.search(rf"^### {re.escape(sub)}\n(.*?)(?=^### |\Z)", sec, re.M | re.S)
        assert m, f"no '### {sub}' under Deploy anywhere"
        assert all(n in m.group(1) for n in needed), (sub, needed)
        assert "churn_client --url" in m.group(1), f"{sub}: how to check the deployment"
    adapter = dockerfile_facts(DEPLOY / "aws-lambda" / "Dockerfile")["copies"][0][0].split(":")[1]
    assert f"pinned, {adapter}" in sec, "the README names the adapter version the Dockerfile pins"


def test_readme_load_test_section():
    sec = section("Load test before going live")
    assert "churn_load --url https://<app>.fly.dev" in sec and "How to read it" in sec
    for exit_status in ("**0**", "**3**", "**1**"): assert exit_status in sec


def test_readme_cost_table_is_what_cost_py_prints():
    sys.path.insert(0, str(DEPLOY))
    try: import cost
    finally: sys.path.remove(str(DEPLOY))
    sec = section("Cost")
    block = sec.split("<!-- cost:start -->\n")[1].split("<!-- cost:end -->")[0]
    assert block.strip() == cost.table().strip(), "run `uv run python deploy/cost.py` and run `uv run python deploy/cost.py --write`"
    # the prose after the table quotes the same model
    assert f"(${cost.aws_lambda(1):.2f}), then Cloud Run (${cost.cloud_run(1):.2f}), then Fly (${cost.fly(1):.2f})" in sec
    assert f"(${cost.fly(100):.2f} against ${cost.aws_lambda(100):.0f} and ${cost.cloud_run(100):.0f})" in sec
    assert cost.aws_lambda(1) < cost.cloud_run(1) < cost.fly(1) and cost.fly(100) < cost.aws_lambda(100) < cost.cloud_run(100)
    assert round(cost.crossover(cost.aws_lambda, cost.fly)) == 5 and round(cost.crossover(cost.cloud_run, cost.fly)) == 1
    # the figures it is built from are the ones measured and configured elsewhere
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert (fly["vm"][0]["size"], fly["vm"][0]["memory"]) == ("shared-cpu-1x", "256mb"), "the machine the table prices"
    assert re.search(rf"^\s+MemorySize: {int(cost.L_GB * 1024)}$", (DEPLOY / "aws-lambda" / "template.yaml").read_text(), re.M)
    knative = load_yaml(DEPLOY / "cloud-run" / "service.yaml")
    limits = knative["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (float(limits["cpu"]), limits["memory"]) == (cost.CR_VCPU, f"{int(cost.CR_GIB * 1024)}Mi")
    assert f"{cost.COLD_START_S[0]:.2f}–{cost.COLD_START_S[1]:.2f} s" in sec
