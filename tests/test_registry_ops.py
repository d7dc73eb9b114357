"""`churn_models` as operators really run it: as root against a service's registry, with hostile version names,
two commands at once, an oversized registry.json, and decisions that change a version's role."""
import hashlib, json, os, shutil, stat, subprocess, sys, tempfile, textwrap
from pathlib import Path

import pytest

from churn_deploy.config import META_FILE
from churn_deploy.data import canonical_sha256
from churn_deploy.registry import (LOCK_FILE, REGISTRY_FILE, relabelled, add_version, init_registry, load_served, read_registry,
                                   reject, set_challenger, version_dir)
from conftest import ROOT, assert_one_line_error, run, script

SERVICE_UID = 65534  # nobody: the service's own user in these tests


def make_registry(base: Path, extra: int = 2) -> tuple[Path, list[str]]:
    "A registry under `base/model`: the committed model as champion and `extra` relabelled versions, newest last."
    root = base / "model"
    shutil.copytree(ROOT / "model", root, ignore=shutil.ignore_patterns(REGISTRY_FILE))
    if not (root / REGISTRY_FILE).exists(): init_registry(root)
    first = read_registry(root).champion
    versions = [first] + [add_version(root, relabelled(version_dir(root, first), base / f"src-{i}", f"0.{i + 2}.0+ops",
                                                        f"203{i}-01-01T00:00:00+00:00")) for i in range(extra)]
    return root, versions


def models(root: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(script("churn_models"), *args, "--models", str(root), **kw)


def with_version(src: Path, dest: Path, version: str) -> Path:
    "A re-signed copy of a model directory whose model.json names `version`, whatever it is."
    shutil.copytree(src, dest)
    meta = json.loads((dest / META_FILE).read_text())
    meta["version"] = version
    meta.pop("meta_sha256"); meta["meta_sha256"] = canonical_sha256(meta)
    (dest / META_FILE).write_text(json.dumps(meta))
    return dest


# ---------------------------------------------------------------- item 2: a root operator, a service as another user

READER_VENV = """
import sys
from churn_deploy.registry import load_served
s = load_served(sys.argv[1])
print("load_served", s.champion.version, s.challenger.version if s.challenger else None)
"""
READER_PLAIN = """
import hashlib, json, os, sys
root = sys.argv[1]
reg = json.load(open(os.path.join(root, "registry.json")))
for v in (reg["champion"], reg["challenger"]):
    raw = open(os.path.join(root, v, "model.json"), "rb").read()
    assert hashlib.sha256(raw).hexdigest() == reg["versions"][v], v
print("plain", reg["champion"], reg["challenger"])
"""


def as_service(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=60, cwd="/")


def service_reads(root: Path) -> subprocess.CompletedProcess:
    "Load the served state as the service's uid: with this environment's Python if that uid can run it, else a system Python."
    if as_service(sys.executable, "-c", "import churn_deploy.registry").returncode == 0:
        return as_service(sys.executable, "-c", READER_VENV, str(root))
    plain = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if plain is None or as_service(plain, "-c", "pass").returncode != 0: pytest.skip("no Python the service uid can run")
    return as_service(plain, "-c", READER_PLAIN, str(root))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_root_operator_leaves_a_registry_the_service_user_reads():
    base = Path(tempfile.mkdtemp(prefix="churn-root-op-", dir="/tmp"))  # pytest's tmp_path is private to root
    try:
        os.chmod(base, 0o755)
        root, (first, second, third) = make_registry(base)
        for p in [root, *root.rglob("*")]: os.chown(p, SERVICE_UID, SERVICE_UID)  # the service's volume
        os.chmod(root / REGISTRY_FILE, 0o640)
        fourth_src = relabelled(version_dir(root, first), base / "src-4", "0.9.0+root", "2040-01-01T00:00:00+00:00")
        os.chmod(base / "src-4", 0o700); os.chmod(base / "src-4" / META_FILE, 0o600)  # what a umask 077 leaves
        umask077 = lambda: os.umask(0o077)  # `fly ssh console` and `kubectl exec` shells are often so
        for args in (("add", str(base / "src-4")), ("challenger", "0.9.0+root"), ("promote", second)):
            r = subprocess.run([script("churn_models"), *args, "--models", str(root)], capture_output=True, text=True,
                               preexec_fn=umask077, timeout=60)
            assert r.returncode == 0, r.stderr
        st = (root / REGISTRY_FILE).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, SERVICE_UID, 0o640)  # kept as it was
        new = version_dir(root, "0.9.0+root")
        assert stat.S_IMODE(new.stat().st_mode) == 0o755 and stat.S_IMODE((new / META_FILE).stat().st_mode) == 0o644
        assert new.stat().st_uid == SERVICE_UID  # root writes as the registry's owner
        assert stat.S_IMODE((root / LOCK_FILE).stat().st_mode) == 0o644
        r = service_reads(root)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[1:] == [second, "0.9.0+root"], r.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- item 3: version names and paths

def test_hostile_version_names_are_refused_in_one_line(tmp_path):
    base = tmp_path / "ops"; base.mkdir()
    root, (first, second, third) = make_registry(base)
    before = (root / REGISTRY_FILE).read_bytes()
    # a model whose model.json names a path or a header injection is never registered
    for i, bad in enumerate(("../escaped", str(tmp_path / "absolute"), "1.0\r\nX-Evil: 1")):
        r = models(root, "add", str(with_version(version_dir(root, first), tmp_path / f"bad-{i}", bad)))
        assert_one_line_error(r, "churn_models: error:", "is not a valid name")
    assert not (base / "escaped").exists() and not (tmp_path / "absolute").exists()
    assert (root / REGISTRY_FILE).read_bytes() == before
    for cmd, bad in (("promote", "../escaped"), ("promote", "a\r\nb"), ("challenger", "/etc"), ("reject", "..")):
        assert_one_line_error(models(root, cmd, bad), "churn_models: error:", "is not a valid name")
    # registry.json naming "../victim": prune deletes nothing outside, and says why in one line
    victim = base / "victim"; victim.mkdir(); (victim / "precious").write_text("keep me")
    reg = json.loads(before); reg["versions"]["../victim"] = "0" * 64
    (root / REGISTRY_FILE).write_text(json.dumps(reg))
    assert_one_line_error(models(root, "prune", "--keep", "1"), "churn_models: error:", "'../victim' is not a valid name")
    assert (victim / "precious").read_text() == "keep me"
    assert_one_line_error(models(root, "list"), "churn_models: error:", "is not a valid name")
    with pytest.raises(Exception, match="is not a valid name"): load_served(root)  # nor does the service serve it
    # a version directory that is a symlink out of the registry: refused, never followed, never deleted through
    (root / REGISTRY_FILE).write_bytes(before)
    outside = tmp_path / "outside"; shutil.copytree(version_dir(root, third), outside)
    shutil.rmtree(version_dir(root, third)); (root / third).symlink_to(outside, target_is_directory=True)
    assert_one_line_error(models(root, "prune", "--keep", "1"), "churn_models: error:", "leads outside the registry")
    assert_one_line_error(models(root, "challenger", third), "churn_models: error:", "leads outside the registry")
    assert (outside / META_FILE).exists() and read_registry(root).challenger is None


# ---------------------------------------------------------------- item 4: two commands at once

RACE = textwrap.dedent("""
    import json, os, sys, tempfile
    from churn_deploy.models import churn_models
    from churn_deploy.registry import REGISTRY_FILE
    root, target, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    initial = open(os.path.join(root, REGISTRY_FILE), "rb").read()
    commands = (["promote", target], ["route", "canary", "--fraction", "0.2"])
    results = []
    for i in range(rounds):
        tmp = os.path.join(root, ".reset"); open(tmp, "wb").write(initial); os.replace(tmp, os.path.join(root, REGISTRY_FILE))
        go_r, go_w = os.pipe()
        kids = []
        for j, cmd in enumerate(commands):
            err = tempfile.TemporaryFile()
            pid = os.fork()
            if pid == 0:  # a real process running the real command line, started at the same instant as the other
                os.close(go_w); os.read(go_r, 1)
                os.dup2(err.fileno(), 2); os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                sys.argv = ["churn_models", *cmd, "--models", root]
                code = 0
                try: churn_models()
                except SystemExit as e:
                    if isinstance(e.code, str): sys.stderr.write(e.code + "\\n"); code = 1
                    else: code = e.code or 0
                except BaseException:
                    import traceback; traceback.print_exc(); code = 2
                sys.stderr.flush(); os._exit(code)
            kids.append((pid, err))
        os.close(go_r); os.write(go_w, b"gogo"); os.close(go_w)
        codes = []
        for pid, err in kids:
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])); err.seek(0); codes.append(err.read().decode())
        results.append([*codes, json.loads(open(os.path.join(root, REGISTRY_FILE)).read())])
    print(json.dumps(results))
""")


def check_pair(promote_rc, promote_err, route_rc, route_err, reg, target) -> list[str]:
    "What went wrong in one round: a change lost by a command that exited 0, or a failure that is not one clear line."
    problems = []
    for rc, err, done, what in ((promote_rc, promote_err, reg["champion"] == target, "promote"),
                                (route_rc, route_err, reg["routing"]["mode"] == "canary" and reg["routing"]["fraction"] == 0.2, "route")):
        if rc == 0 and not done: problems.append(f"{what} exited 0 but its change is lost")
        if rc != 0 and not (err.count("\n") == 1 and err.startswith("churn_models: error:")): problems.append(f"{what}: {err!r}")
    return problems


def test_concurrent_promote_and_route_both_take_effect(tmp_path):
    root, (first, second, third) = make_registry(tmp_path)
    set_challenger(root, second, "shadow")
    # 50 rounds: two forked processes run the command line at the same instant
    (tmp_path / "race.py").write_text(RACE)  # a file, run as a script: the command line is parsed as the console script does
    r = subprocess.run([sys.executable, str(tmp_path / "race.py"), str(root), third, "50"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rounds = json.loads(r.stdout)
    problems = [p for res in rounds for p in check_pair(*res, third)]
    assert len(rounds) == 50 and problems == [], f"{len(problems)} problems in 50 rounds: {problems[:5]}"
    both = sum(res[0] == 0 and res[2] == 0 for res in rounds)
    # and 5 rounds through the installed console script, started together
    initial = json.loads(json.dumps(rounds[0][4]))
    initial.update(champion=first, previous=None, routing={**initial["routing"], "mode": "shadow", "fraction": 0.0})
    for _ in range(5):
        (root / ".reset").write_text(json.dumps(initial)); os.replace(root / ".reset", root / REGISTRY_FILE)
        procs = [subprocess.Popen([script("churn_models"), *cmd, "--models", str(root)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for cmd in (["promote", third], ["route", "canary", "--fraction", "0.2"])]
        (p_err, r_err) = [p.communicate(timeout=120)[1] for p in procs]
        assert check_pair(procs[0].returncode, p_err, procs[1].returncode, r_err, read_registry(root).model_dump(), third) == []
    print(f"50 forked pairs, both changes kept in {both}; 5 CLI pairs kept both")


# ---------------------------------------------------------------- item 8 (part): an oversized registry.json

def test_registry_over_1mb_is_refused_in_one_line(tmp_path):
    root, (first, second, third) = make_registry(tmp_path)
    good = (root / REGISTRY_FILE).read_text()
    (root / REGISTRY_FILE).write_text(good.rstrip()[:-1] + " " * 1_100_000 + "}\n")  # valid JSON, 1.1 MB
    for args in (("list",), ("promote", second), ("route", "off")):
        assert_one_line_error(models(root, *args), "churn_models: error:", "a registry may hold at most 1,000,000")
    with pytest.raises(Exception, match="a registry may hold at most"): load_served(root)
    with pytest.raises(Exception, match="a registry may hold at most"): read_registry(tmp_path, root / REGISTRY_FILE)


# ---------------------------------------------------------------- issue 16 item 3: one role per version

def test_a_version_holds_one_role(tmp_path):
    root, (first, second, third) = make_registry(tmp_path)
    # what churn_retrain does when a rejected candidate is run again with a looser gate
    reject(root, third); set_challenger(root, third, "canary", 0.2)
    reg = read_registry(root)
    assert (reg.challenger, reg.rejected) == (third, []), reg
    assert models(root, "challenger", "none").returncode == 0
    assert models(root, "challenger", second).returncode == 0
    assert models(root, "route", "canary", "--fraction", "0.3").returncode == 0
    r = models(root, "reject", second)  # a rejected challenger stops serving at once
    assert r.returncode == 0, r.stderr
    reg = read_registry(root)
    assert (reg.challenger, reg.rejected, reg.routing.mode) == (None, [second], "off")
    assert [l.split()[:2] for l in r.stdout.splitlines() if l.startswith(second)] == [[second, "rejected"]]
    assert models(root, "challenger", second).returncode == 0  # a new decision on it replaces "rejected"
    reg = read_registry(root)
    assert (reg.challenger, reg.rejected) == (second, [])
    assert_one_line_error(models(root, "reject", first), "churn_models: error:", "is the champion")
    # a file in which a version holds two roles is refused, by the commands and by the service
    bad = json.loads((root / REGISTRY_FILE).read_text()); bad["rejected"] = [second]
    (root / REGISTRY_FILE).write_text(json.dumps(bad))
    assert_one_line_error(models(root, "list"), "churn_models: error:", f"version '{second}' holds two roles: challenger and rejected")
    with pytest.raises(Exception, match="holds two roles"): load_served(root)


def test_promote_twice_then_rollback_follows_the_previous_chain(tmp_path):
    root, (first, second, third) = make_registry(tmp_path)
    for args in (("promote", second), ("promote", third), ("rollback",)):
        assert models(root, *args).returncode == 0
    reg = read_registry(root)
    assert (reg.champion, reg.previous) == (second, third)
    assert models(root, "rollback").returncode == 0
    assert (read_registry(root).champion, read_registry(root).previous) == (third, second)


def test_canary_assignment_is_sticky_per_caller_and_follows_the_salt(tmp_path):
    """A second check of the canary salt, apart from 08_registry's: a caller gets the challenger exactly when sha256(salt:caller)
    falls under the fraction (recomputed here, not by canary_share), on every load and every request; a new salt reshuffles."""
    from fastapi.testclient import TestClient
    from churn_deploy.config import Settings
    from churn_deploy.data import SAMPLE_CUSTOMER
    from churn_deploy.registry import write_registry
    from churn_deploy.serve import create_app

    root, (first, second, _) = make_registry(tmp_path)
    set_challenger(root, second, "canary", 0.5)
    ids = [f"cust-{i}" for i in range(400)]

    def expected(salt: str) -> list[str]:
        below = lambda caller: int.from_bytes(hashlib.sha256(f"{salt}:{caller}".encode()).digest()[:8], "big") < 0.5 * 2**64
        return ["challenger" if below(f"customer:{i}") else "champion" for i in ids]

    def roles() -> list[str]:
        served = load_served(root)
        return [served.pick(f"customer:{i}")[1] for i in ids]

    salt = read_registry(root).routing.salt
    assert roles() == expected(salt) == roles()
    assert 150 < expected(salt).count("challenger") < 250
    with TestClient(create_app(Settings(model_dir=root))) as client:  # the service asks the same question per X-Customer-Id
        for i, role in list(zip(ids, expected(salt)))[:40] * 2:
            r = client.post("/predict", json=SAMPLE_CUSTOMER, headers={"X-Customer-Id": i})
            assert (r.status_code, r.headers["x-model-role"]) == (200, role), (i, r.text)
            assert r.json()["model_version"] == (second if role == "challenger" else first)
    reg = read_registry(root)
    write_registry(root, reg.model_copy(update={"routing": reg.routing.model_copy(update={"salt": "another-salt"})}))
    reshuffled = roles()
    assert reshuffled == expected("another-salt") != expected(salt)
    assert 150 < reshuffled.count("challenger") < 250
