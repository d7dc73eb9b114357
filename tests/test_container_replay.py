"""The serving image without a Docker engine: parse the Dockerfile, check its rules, then replay it.

The replay walks the build context through `.dockerignore` with Docker's own matching rules, performs
each stage's `COPY` and `uv sync` steps in a temporary root, and starts the `ENTRYPOINT` as the
image's numeric user with the image's `ENV`, then calls `/health`, `/ready` and `/predict`.
What stands in for what:
- the base image's `/usr/local` Python is the interpreter running these tests (same major.minor),
  hard-linked into the temporary root so the unprivileged user can read it;
- the uv copied from `ghcr.io/astral-sh/uv:X` is the uv on this machine, which must be version X;
- `--mount=type=cache,target=/root/.cache/uv` is this machine's uv cache;
- `docker run -e CHURN_HOST=127.0.0.1 -e PORT=<free port>` keeps the test on the loopback, with the port
  given the way Cloud Run, Heroku and Render give it.
"""
import json, math, os, posixpath, re, shlex, shutil, signal, subprocess, sys
import tempfile, time, tomllib, urllib.error, urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from churn_deploy.data import SAMPLE_CUSTOMER as SAMPLE  # the course workshop's customer
from conftest import ROOT, free_port
from support import BASE_PATH, Stage, docker_words, final_env, mebibytes, parse_duration, parse_stages  # shared with other test modules


UV_SYNC = ["uv", "sync", "--locked", "--no-default-groups"]
"The serve set only: [project] dependencies, neither the train nor the dev group."
NOT_IN_SERVE_ENV = ["pandas", "scikit-learn", "numpy", "nbdev", "jupyterlab", "jupyter-core", "ipykernel",
                    "pytest", "matplotlib", "uv"]


# ---------------------------------------------------------------- .dockerignore, as moby/patternmatcher reads it

def go_clean(p: str) -> str:
    "Go's `filepath.Clean` on a slash path (Python's normpath keeps a leading `//`, Go does not)."
    rooted, out = p.startswith("/"), []
    for seg in p.split("/"):
        if seg in ("", "."): continue
        if seg == "..":
            if out and out[-1] != "..": out.pop()
            elif not rooted: out.append("..")
            continue
        out.append(seg)
    s = "/".join(out)
    return ("/" + s) if rooted else (s or ".")


def read_dockerignore(text: str) -> list[str]:
    "Patterns as BuildKit's `ignorefile.ReadAll` returns them: comments dropped, cleaned, made relative."
    pats = []
    for i, line in enumerate(text.splitlines()):
        if i == 0: line = line.removeprefix("\ufeff")
        if line.startswith("#"): continue
        line = line.strip()
        if not line: continue
        invert = line.startswith("!")
        if invert: line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"): line = line[1:]
        pats.append("!" + line if invert else line)
    return pats


@dataclass
class IgnorePattern:
    "One pattern, compiled the way moby/patternmatcher compiles it (exact, prefix, suffix or regexp)."
    text: str
    exclusion: bool = False
    kind: str = "exact"
    regex: re.Pattern | None = None
    dirs: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.dirs = self.text.split("/")
        out, kind, s, pos = "^", "exact", self.text, 0
        for n in range(len(s)):  # n counts tokens, as the Go scanner loop does
            if pos >= len(s): break
            ch = s[pos]
            pos += 1
            if ch == "*":
                if s[pos:pos + 1] == "*":  # some flavour of **
                    pos += 1
                    if s[pos:pos + 1] == "/": pos += 1  # **/ is **
                    if pos >= len(s):  # ** at the end: everything below
                        if kind == "exact": kind = "prefix"
                        else: out, kind = out + ".*", "regexp"
                    else: out, kind = out + "(.*/)?", "regexp"
                    if n == 0: kind = "suffix"
                else: out, kind = out + "[^/]*", "regexp"
            elif ch == "?": out, kind = out + "[^/]", "regexp"
            elif ch in ".+()|{}$": out += "\\" + ch
            elif ch == "\\":
                if pos < len(s): out, kind, pos = out + "\\" + s[pos], "regexp", pos + 1
                else: out += "\\\\"
            elif ch in "[]": out, kind = out + ch, "regexp"
            else: out += ch
        self.kind = kind
        if kind == "regexp": self.regex = re.compile(out + "$")

    def match(self, path: str) -> bool:
        t = self.text
        if self.kind == "exact": return path == t
        if self.kind == "prefix": return path.startswith(t[:-2])
        if self.kind == "suffix":
            suffix = t[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return bool(self.regex.match(path))


class DockerIgnore:
    "Which context paths `docker build` leaves out (`MatchesOrParentMatches`)."
    def __init__(self, patterns: list[str]):
        self.patterns = []
        for p in patterns:
            p = p.strip()
            if not p: continue
            p = go_clean(p)
            excl = p.startswith("!")
            if excl:
                assert len(p) > 1, 'illegal exclusion pattern: "!"'
                p = p[1:]
            self.patterns.append(IgnorePattern(p, excl))

    @classmethod
    def from_file(cls, path: Path) -> "DockerIgnore":
        return cls(read_dockerignore(path.read_text()) if path.exists() else [])

    def ignored(self, path: str) -> bool:
        path = go_clean(path)
        if path == ".": return False
        parents = posixpath.dirname(path).split("/") if "/" in path else []
        matched = False
        for p in self.patterns:
            if p.exclusion != matched: continue
            m = p.match(path) or any(p.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if m: matched = not p.exclusion
        return matched

    def _could_reinclude(self, d: str) -> bool:
        "Whether some `!` pattern might match a path inside the ignored directory `d` (else skip it)."
        parts = d.split("/")
        for p in self.patterns:
            if not p.exclusion: continue
            for i, comp in enumerate(p.dirs[:len(parts)]):
                if "**" in comp: return True
                if not IgnorePattern(comp).match(parts[i]): break
            else: return True
        return False

    def context_files(self, root: Path) -> set[str]:
        "Relative paths of the files `docker build` would send from `root`."
        out = set()
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root).as_posix()
            pre = "" if rel == "." else rel + "/"
            dirnames[:] = [d for d in dirnames
                           if not (self.ignored(pre + d) and not self._could_reinclude(pre + d))]
            out |= {pre + f for f in filenames if not self.ignored(pre + f)}
        return out


def test_dockerignore_matcher_follows_docker_semantics():
    "Known answers from Docker's documentation and patternmatcher's tests, so the replay's context is right."
    di = DockerIgnore(read_dockerignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n"))
    assert di.ignored("somedir/temporary.txt") and di.ignored("somedir/temp")
    assert di.ignored("somedir/subdir/temporary.txt") and di.ignored("tempa") and not di.ignored("temp")
    assert not di.ignored("temporary.txt")  # `*/temp*` needs one directory level
    di = DockerIgnore(read_dockerignore("*.md\n!README*.md\nREADME-secret.md\n"))
    assert di.ignored("CHANGES.md") and not di.ignored("README.md") and di.ignored("README-secret.md")
    di = DockerIgnore(read_dockerignore("**/*.go\n/abs/x\ndir/\n"))
    assert di.ignored("a/b/c.go") and di.ignored("c.go") and di.ignored("abs/x") and di.ignored("dir/sub/f")
    assert not di.ignored("a/b/c.gox") and not di.ignored("dirx/f")
    di = DockerIgnore(read_dockerignore("*\n!keep/\n**/__pycache__\n"))
    assert di.ignored("top.txt") and di.ignored("other/deep/file") and not di.ignored("keep/a/b.py")
    assert di.ignored("keep/__pycache__/b.pyc") and di._could_reinclude("keep") and not di._could_reinclude(".git")
    assert DockerIgnore(read_dockerignore("a?c\n")).ignored("abc") and not DockerIgnore(["a?c"]).ignored("a/c")


# ---------------------------------------------------------------- the Dockerfile


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages()


def test_base_images_pinned(stages):
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    for s in stages:
        m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)(@sha256:[0-9a-f]{64})?", s.image)
        assert m, f"{s.image}: pin an exact python X.Y.Z-slim-<debian> tag"
        assert (m[1], m[2]) == ("3", "12"), f"{s.image}: the project is on Python 3.12"
    # The build stage's venv is copied into the final stage, so both need the same interpreter path.
    assert len({s.image for s in stages}) == 1, [s.image for s in stages]
    assert "latest" not in stages[-1].image


def test_uv_comes_from_pinned_official_image(stages):
    images = [(i, s.flag(c, "from")) for i, s in enumerate(stages) for c in s.cmds("COPY")
              if s.flag(c, "from") and s.flag(c, "from") not in {t.name for t in stages}]
    assert images == [(0, "ghcr.io/astral-sh/uv:0.13.9")], "uv from the pinned official image, in the build stage only"
    local = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True).stdout.split()[1]
    assert images[0][1].endswith(":" + local), f"the image's uv and this machine's uv ({local}) must agree"


def test_dependencies_synced_before_code(stages):
    build = stages[0]
    steps = [(c.cmd, c) for c in build.commands if c.cmd in ("COPY", "RUN")]
    runs = [i for i, (k, c) in enumerate(steps) if k == "RUN"]
    assert len(runs) == 2, "one RUN for the dependencies, one for the project"
    deps, proj = (shlex.split(steps[i][1].value[0]) for i in runs)
    assert deps == UV_SYNC + ["--no-install-project"], deps
    assert proj == UV_SYNC + ["--no-editable"], proj
    before = [src for k, c in steps[:runs[0]] if k == "COPY" and not build.flag(c, "from") for src in c.value[:-1]]
    assert sorted(before) == ["pyproject.toml", "uv.lock"], f"only the lock goes in before the deps layer: {before}"
    after = [src.rstrip("/") for k, c in steps[runs[0]:runs[1]] if k == "COPY" for src in c.value[:-1]]
    assert "churn_deploy" in after, after
    for i in runs:
        assert any("type=cache" in f and "target=/root/.cache/uv" in f for f in steps[i][1].flags), \
            "cache mount for uv's cache"
    env = final_env(build)
    assert env.get("UV_COMPILE_BYTECODE") == "1" and env.get("UV_LINK_MODE") == "copy", env


def test_runtime_stage_rules(stages):
    final = stages[-1]
    user = final.cmds("USER")
    assert user, "USER is set in the runtime stage"
    uid, _, gid = user[-1].value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit() and int(gid) != 0), user[-1].value
    assert [p for c in final.cmds("EXPOSE") for p in c.value] == ["9696"]
    from churn_deploy.config import PORT
    env = final_env(final)
    assert "CHURN_PORT" not in env and env["CHURN_HOST"] == "0.0.0.0", "no CHURN_PORT, so a platform's $PORT is used"
    assert PORT == 9696, "without either, the service listens on the port it EXPOSEs"
    assert env.get("CHURN_WORKERS", "").isdigit(), "the worker count is an ENV, overridable with docker run -e"
    assert env["CHURN_MODEL_DIR"] == "/app/model"
    ep, cmd = final.cmds("ENTRYPOINT"), final.cmds("CMD")
    assert ep and all(c.json for c in ep + cmd), "exec form (JSON) so the server is PID 1 and gets SIGTERM"
    assert ep[-1].value[0].endswith("churn_serve"), ep[-1].value
    hc = final.cmds("HEALTHCHECK")
    assert hc and hc[-1].json and hc[-1].value[:2] == ("CMD", "python"), "a stdlib-only HEALTHCHECK"
    assert "/health" in hc[-1].value[-1] and "urllib" in hc[-1].value[-1]
    assert not any(c.cmd == "RUN" and "uv " in c.value[0] for c in final.commands), "no uv in the runtime stage"
    copies = [(final.flag(c, "from"), c.value) for c in final.cmds("COPY")]
    assert copies == [(stages[0].name, ("/app/.venv", "/app/.venv")), (None, ("model/", "/app/model/"))], copies
    run = " ".join(c.value[0] for c in final.cmds("RUN"))
    assert f"--uid {uid}" in run, "the numeric USER exists in /etc/passwd (HOME, getpass work)"


# ---------------------------------------------------------------- the replay

def uv_binary() -> str:
    "The uv that runs this test session (`uv run` exports it as UV)."
    beside_python = Path(sys.base_prefix) / "bin" / "uv"
    uv = os.environ.get("UV") or (str(beside_python) if beside_python.exists() else shutil.which("uv"))
    assert uv, "uv not found"
    return uv


def link_or_copy(a: Path, b: Path):
    "Hard-link a file (instant, and the original's mode bits), or copy it where linking is not allowed."
    try: os.link(a, b)
    except OSError: shutil.copy2(a, b)


def link_tree(src: Path, dst: Path, skip=()):
    "A directory tree of hard links, leaving out the top-level entries in `skip`."
    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy,
                    ignore=lambda d, names: [n for n in names if n in skip] if Path(d) == src else [])


class Replay:
    "The Dockerfile's stages, performed in a temporary root: `/x` in the image is `root/x` here."
    def __init__(self, stages: list[Stage], tmp: Path):
        self.stages, self.tmp = stages, tmp
        self.base = tmp / "base"  # the python image's /usr/local
        self.root = tmp / "rootfs"  # the stage being built; a finished stage moves to tmp/stages/NAME
        self.done: dict[str, Path] = {}
        self.log: list[str] = []
        self.context = DockerIgnore.from_file(ROOT / ".dockerignore").context_files(ROOT)

    def host(self, p: str, root: Path | None = None) -> Path:
        if p == "/usr/local" or p.startswith("/usr/local/"): return self.base / p.removeprefix("/usr/local/")
        return (root or self.root) / p.lstrip("/")

    def translate(self, value: str) -> str:
        "An absolute path of the image as a path here; a path the image does not hold stays the host's (/usr/bin)."
        if not value.startswith("/"): return value
        if value == "/usr/local" or value.startswith("/usr/local/"): return str(self.host(value))
        top = value.lstrip("/").split("/")[0]
        return str(self.host(value)) if top and (self.root / top).exists() else value

    def host_path_var(self, path_var: str) -> str:
        "PATH with the image's directories mapped here."
        return ":".join(self.translate(d) for d in path_var.split(":"))

    def make_base(self):
        "The base image's interpreter at /usr/local, readable by any user."
        prefix = Path(sys.base_prefix)
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        (self.base / "bin").mkdir(parents=True)
        (self.base / "lib").mkdir()
        link_or_copy(prefix / "bin" / ver, self.base / "bin" / ver)
        for alias in ("python3", "python"): (self.base / "bin" / alias).symlink_to(ver)
        for lib in (prefix / "lib").glob("libpython*.so*"):
            if lib.is_symlink(): (self.base / "lib" / lib.name).symlink_to(os.readlink(lib))
            else: link_or_copy(lib, self.base / "lib" / lib.name)
        link_tree(prefix / "lib" / ver, self.base / "lib" / ver, skip={"site-packages", "test", "idlelib", "tkinter",
                                                                       "turtledemo"})
        (self.base / "lib" / ver / "site-packages").mkdir()

    def base_env(self) -> dict[str, str]:
        # The image finds libpython in /usr/local/lib through ld.so's defaults; here it takes a hint.
        return {"LD_LIBRARY_PATH": str(self.base / "lib")}

    def run(self):
        self.make_base()
        for stage in self.stages:
            assert stage.image == self.stages[0].image
            self.run_stage(stage)

    def run_stage(self, stage: Stage):
        self.root.mkdir()
        env, workdir = {"PATH": BASE_PATH}, "/"
        for c in stage.commands:
            if c.cmd == "ENV":
                for k, v in zip(c.value[::2], c.value[1::2]): env[k] = docker_words(v, env)
            elif c.cmd == "WORKDIR":
                workdir = posixpath.join(workdir, docker_words(c.value[0], env))
                self.host(workdir).mkdir(parents=True, exist_ok=True)
            elif c.cmd == "COPY": self.copy(stage, c, env, workdir)
            elif c.cmd == "RUN": self.run_cmd(c, env, workdir)
            elif c.cmd in ("USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"): pass
            else: raise AssertionError(f"line {c.start_line}: the replay does not know {c.cmd}")
        if stage is self.stages[-1]:
            self.env, self.workdir = env, workdir
        else:
            dest = self.tmp / "stages" / (stage.name or str(len(self.done)))
            dest.parent.mkdir(exist_ok=True)
            self.root.rename(dest)  # same absolute paths for the next stage: the venv's shebangs stay valid
            self.done[stage.name] = dest

    def copy(self, stage: Stage, c, env: dict, workdir: str):
        src_stage = stage.flag(c, "from")
        *srcs, dest = [docker_words(v, env) for v in c.value]
        if src_stage and src_stage not in self.done:
            # An image, not a stage: only the pinned uv image is allowed, and this machine's uv stands in for it.
            assert src_stage.startswith("ghcr.io/astral-sh/uv:"), src_stage
            self.log.append(f"COPY --from={src_stage}: this machine's uv")
            return
        dest_abs = posixpath.join(workdir, dest)
        to_dir = dest.endswith("/") or len(srcs) > 1
        for src in srcs:
            assert not any(ch in src for ch in "*?["), f"{src}: wildcards are not replayed"
            if src_stage:
                files = self.stage_files(self.done[src_stage], src)
            else:
                files = self.context_files(src)
            assert files, f"COPY {src}: nothing to copy (missing, or excluded by .dockerignore)"
            for rel, path in files:
                if rel == "": target = posixpath.join(dest_abs, posixpath.basename(src)) if to_dir else dest_abs
                else: target = posixpath.join(dest_abs, rel)
                out = self.host(target)
                out.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink(): out.symlink_to(os.readlink(path))
                else: shutil.copy2(path, out)  # Docker keeps the mode bits; the owner becomes root
            self.log.append(f"COPY {src} -> {dest_abs}: {len(files)} file(s)")

    def context_files(self, src: str) -> list[tuple[str, Path]]:
        "(path relative to src, file) for what the build context holds under src."
        src = go_clean(src).lstrip("/")
        ctx = self.context
        if src in ctx: return [("", ROOT / src)]
        return [(f[len(src) + 1:], ROOT / f) for f in sorted(ctx) if f.startswith(src + "/")]

    def stage_files(self, root: Path, src: str) -> list[tuple[str, Path]]:
        p = self.host(src, root)
        if p.is_file() or p.is_symlink() and not p.is_dir(): return [("", p)]
        out = []
        for dirpath, dirnames, filenames in os.walk(p):
            for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                f = Path(dirpath) / name
                out.append((f.relative_to(p).as_posix(), f))
        return out

    def run_cmd(self, c, env: dict, workdir: str):
        argv = shlex.split(c.value[0])
        if argv[0] == "uv":
            run_env = {**{k: v for k, v in os.environ.items()
                          if k.upper() in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")},
                       **env, **self.base_env(), "HOME": "/root",
                       "PATH": self.host_path_var(env["PATH"]),
                       "UV_PYTHON": str(self.base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"),
                       "UV_CACHE_DIR": uv_cache_dir()}
            if "UV_PROJECT_ENVIRONMENT" in env: run_env["UV_PROJECT_ENVIRONMENT"] = str(self.host(env["UV_PROJECT_ENVIRONMENT"]))
            r = subprocess.run([uv_binary(), *argv[1:]], cwd=self.host(workdir), env=run_env, umask=0o022,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"line {c.start_line}: {c.value[0]}\n{r.stderr[-3000:]}"
            self.log.append(f"RUN {c.value[0]}")
        elif argv[0] == "groupadd":
            # The user is created for /etc/passwd; the replay switches to the numeric ids directly.
            self.log.append(f"RUN {c.value[0]} (not replayed)")
        else:
            raise AssertionError(f"line {c.start_line}: the replay does not know how to run {c.value[0]!r}")


def uv_cache_dir() -> str:
    return subprocess.run([uv_binary(), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()


def expected_probability(model_dir: Path) -> float:
    "The sample's churn probability from the plain weights in model.json, as a logistic regression gives it."
    w = json.loads((model_dir / "model.json").read_text())["weights"]
    z = w["intercept"] + sum(w["coef"][f"{k}={v}"] if isinstance(v, str) else w["coef"][k] * v
                             for k, v in SAMPLE.items())
    return 1 / (1 + math.exp(-z))


def http(url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e: return e.code, {}


def tree_rss_kib(pid: int, field: str = "VmRSS") -> int:
    "Resident memory (or its peak, VmHWM) of a process and all its descendants (uvicorn workers), in KiB."
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError): continue
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            total += int(next(l for l in Path(f"/proc/{p}/status").read_text().splitlines()
                              if l.startswith(field + ":")).split()[1])
        except (OSError, StopIteration): pass
    return total


@dataclass
class Running:
    replay: Replay
    url: str
    proc: subprocess.Popen
    env: dict
    as_user: list[str]
    cold_start_s: float
    ready_s: float
    log_path: Path | None = None


@pytest.fixture(scope="module")
def service(stages):
    "Replay the build, start the ENTRYPOINT as the image's user, and wait for /health and /ready."
    tmp = Path(tempfile.mkdtemp(prefix="churn-replay-"))
    os.chmod(tmp, 0o755)  # the unprivileged user must reach its files, as in an image
    proc = log = None
    try:
        replay = Replay(stages, tmp)
        replay.run()
        final = stages[-1]
        port = free_port()
        env = {**replay.env, "HOME": "/nonexistent", "HOSTNAME": "replay",
               # `docker run -e`: listen on the loopback, on the port a platform gives in $PORT.
               "CHURN_HOST": "127.0.0.1", "PORT": str(port), **replay.base_env()}
        env = {k: replay.host_path_var(v) if k == "PATH" else replay.translate(v) for k, v in env.items()}
        argv = [*final.cmds("ENTRYPOINT")[-1].value, *(final.cmds("CMD")[-1].value if final.cmds("CMD") else ())]
        exe = shutil.which(argv[0], path=env["PATH"])
        assert exe and Path(exe).is_relative_to(replay.root), f"{argv[0]} resolves to {exe}, not the image's venv"
        uid, _, gid = final.cmds("USER")[-1].value[0].partition(":")
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--no-new-privs"] \
            if os.geteuid() == 0 else []
        t0 = time.monotonic()
        log = open(tmp / "service.log", "w+")  # a file, not a pipe nobody drains
        proc = subprocess.Popen([*as_user, exe, *argv[1:]], cwd=replay.host(replay.workdir), env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        health = ready = None
        while time.monotonic() - t0 < 60 and proc.poll() is None:
            try:
                if health is None and http(url + "/health", timeout=1)[0] == 200: health = time.monotonic() - t0
                if health is not None and http(url + "/ready", timeout=1)[0] == 200:
                    ready = time.monotonic() - t0
                    break
            except (OSError, urllib.error.URLError): pass
            time.sleep(0.05)
        if ready is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"the replayed service did not get ready:\n{(tmp / 'service.log').read_text()[-3000:]}")
        yield Running(replay, url, proc, env, as_user, health, ready, log_path=tmp / "service.log")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=15)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        if log is not None: log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_replay_context_is_only_what_the_image_needs():
    ctx = DockerIgnore.from_file(ROOT / ".dockerignore").context_files(ROOT)
    tops = {f.split("/")[0] for f in ctx}
    assert tops <= {"pyproject.toml", "uv.lock", "README.md", "churn_deploy", "model"}, sorted(tops)
    assert {"pyproject.toml", "uv.lock", "model/model.json", "model/model.bin", "churn_deploy/config.py"} <= ctx
    assert not any("__pycache__" in f or f.endswith((".pyc", ".csv")) or ".ipynb_checkpoints" in f for f in ctx)


def test_dockerignore_keeps_junk_out():
    "Whether or not this checkout has them: repository metadata, environments, caches, data, notebooks, test output."
    di = DockerIgnore.from_file(ROOT / ".dockerignore")
    for junk in (".git/HEAD", ".venv/bin/python", "data/WA_Fn-UseC_-Telco-Customer-Churn.csv", "churn.csv",
                 "model/extra.csv", "nbs/02_data.ipynb", "nbs/.ipynb_checkpoints/00_data-checkpoint.ipynb",
                 "churn_deploy/__pycache__/serve.cpython-312.pyc", "churn_deploy/.ipynb_checkpoints/serve-checkpoint.py",
                 "model/.ipynb_checkpoints/model-checkpoint.json", ".pytest_cache/v/cache/lastfailed", "bench/out/run.json",
                 "tests/test_ship.py", ".coverage", "_docs/index.html", ".cache/churn-deploy/x.csv", ".env"):
        assert di.ignored(junk), junk
    for needed in ("pyproject.toml", "uv.lock", "README.md", "churn_deploy/serve.py", "model/model.json"):
        assert not di.ignored(needed), needed


def test_replay_serve_environment_is_lean(service):
    root = service.replay.root
    assert sorted(p.name for p in (root / "app").iterdir()) == [".venv", "model"], "only the venv and the model"
    assert sorted(p.relative_to(root).as_posix() for p in root.iterdir()) == ["app"]
    site = next((root / "app" / ".venv" / "lib").glob("python3*/site-packages"))
    dists = {re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in site.glob("*.dist-info")}
    assert {"fastapi", "uvicorn", "pydantic", "churn-deploy"} <= dists, dists
    assert not dists & {re.sub(r"[-_.]+", "-", n) for n in NOT_IN_SERVE_ENV}, dists & set(NOT_IN_SERVE_ENV)
    assert not (site / "churn_deploy.pth").exists() and (site / "churn_deploy" / "serve.py").exists(), "non-editable"
    assert not list(site.glob("_churn_deploy*.pth")), "non-editable"


def process_ids(pid: int) -> dict[str, list[str]]:
    "The ids in /proc/PID/status: Uid and Gid (real, effective, saved, filesystem), Groups, NoNewPrivs."
    lines = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    return {k: lines[k].split() for k in ("Uid", "Gid", "Groups", "NoNewPrivs")}


def descendants(pid: int) -> list[int]:
    "`pid` and every process below it (uvicorn's workers)."
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: children.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
        except (OSError, IndexError): continue  # a process that ended meanwhile
    out, todo = [], [pid]
    while todo:
        out.append(p := todo.pop())
        todo += children.get(p, [])
    return out


def test_replay_runs_as_the_image_user(service, stages):
    "Every process of the service has the USER's numeric ids, no supplementary groups and no way to gain privileges."
    uid, _, gid = stages[-1].cmds("USER")[-1].value[0].partition(":")
    gid = gid or uid
    if os.geteuid() != 0:
        pytest.skip(f"the tests run as uid {os.geteuid()}, not root, so the replay cannot switch to the image's "
                    f"uid {uid}; run them as root (CI's image job checks `id -u` in the real image)")
    cmdline = Path(f"/proc/{service.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert any(a.endswith(b"/churn_serve") for a in cmdline), f"setpriv did not exec the server: {cmdline}"
    tree = descendants(service.proc.pid)
    for pid in tree:
        ids = process_ids(pid)
        assert ids == {"Uid": [uid] * 4, "Gid": [gid] * 4, "Groups": [], "NoNewPrivs": ["1"]}, (pid, ids)


def test_replay_health_and_predict(service, model_dir):
    assert http(service.url + "/health") == (200, {"status": "ok"})
    assert http(service.url + "/ready")[0] == 200
    status, body = http(service.url + "/predict", SAMPLE)
    assert status == 200, body
    assert set(body) >= {"churn_probability", "churn", "model_version"}, body
    p = expected_probability(model_dir)
    # The training artifact itself agrees with the plain weights (the test environment has scikit-learn).
    from churn_deploy.predict import load_pipeline
    assert abs(load_pipeline(model_dir).predict_proba([SAMPLE])[0, 1] - p) < 1e-12
    assert abs(body["churn_probability"] - p) < 1e-9, (body, p)
    assert body["churn"] is (p >= 0.5)
    assert body["model_version"] == json.loads((model_dir / "model.json").read_text())["version"]
    assert http(service.url + "/predict", {**SAMPLE, "contract": "weekly"})[0] == 422


def test_replay_healthcheck_command(service, stages):
    "The image's HEALTHCHECK, run as the image user, follows the service's port (CHURN_PORT, then $PORT) and fails without one."
    hc = list(stages[-1].cmds("HEALTHCHECK")[-1].value[1:])
    exe = shutil.which(hc[0], path=service.env["PATH"])
    assert exe and Path(exe).is_relative_to(service.replay.root), exe
    ok = subprocess.run([*service.as_user, exe, *hc[1:]], env=service.env, capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    def check(**env): return subprocess.run([*service.as_user, exe, *hc[1:]], env={**service.env, **env},
                                            capture_output=True, timeout=10).returncode
    assert check(PORT=str(free_port())) != 0, "nothing listens on another $PORT"
    assert check(CHURN_PORT=str(free_port())) != 0, "CHURN_PORT, when set, is the port churn_serve uses"
    assert check(CHURN_PORT=service.env["PORT"], PORT=str(free_port())) == 0


def test_replay_measured_cold_start_and_memory_fit_the_deploy_config(service):
    "The figures fly.toml and the Kubernetes manifest rely on, measured on the replayed service."
    from churn_deploy.config import Settings
    for _ in range(300): assert http(service.url + "/predict", SAMPLE)[0] == 200
    rss_mib = tree_rss_kib(service.proc.pid) / 1024
    biggest = {"customers": [SAMPLE] * Settings().max_batch}  # the largest batch the service accepts
    for _ in range(2): assert http(service.url + "/predict/batch", biggest, timeout=60)[0] == 200
    peak_mib = tree_rss_kib(service.proc.pid, "VmHWM") / 1024
    print(f"\ncold start: /health {service.cold_start_s:.2f}s, /ready {service.ready_s:.2f}s; "
          f"RSS {rss_mib:.0f} MiB after 300 predictions, peak {peak_mib:.0f} MiB after max-size batches")
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    grace = parse_duration(fly["http_service"]["checks"][0]["grace_period"])
    assert grace >= 2 * service.ready_s, f"grace period {grace}s vs measured cold start {service.ready_s:.2f}s"
    vm_mib = int(re.fullmatch(r"(\d+)mb", fly["vm"][0]["memory"].lower())[1])
    assert rss_mib * 2 <= vm_mib and peak_mib < vm_mib, f"RSS {rss_mib:.0f}/{peak_mib:.0f} MiB on a {vm_mib} MB VM"
    import yaml
    dep = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    req, lim = (mebibytes(res[k]["memory"]) for k in ("requests", "limits"))
    assert rss_mib <= req and peak_mib < lim, f"memory request {req} / limit {lim} MiB vs {rss_mib:.0f}/{peak_mib:.0f}"


def test_replay_without_model_exits_with_one_line(service):
    "With no model the image's entrypoint fails at once with one line (the image has no training libraries)."
    empty = Path(tempfile.mkdtemp(prefix="churn-nomodel-"))
    os.chmod(empty, 0o755)
    try:
        exe = shutil.which("churn_serve", path=service.env["PATH"])
        r = subprocess.run([*service.as_user, exe], env={**service.env, "CHURN_MODEL_DIR": str(empty),
                                                         "CHURN_PORT": str(free_port())},
                           cwd=empty, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("churn_serve: error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr


def test_replay_stops_on_sigterm(service):
    "`docker stop` sends SIGTERM to PID 1, the exec-form ENTRYPOINT: the server must exit cleanly and quickly."
    service.proc.send_signal(signal.SIGTERM)
    service.proc.wait(timeout=10)
    log = service.log_path.read_text()
    # uvicorn shuts down, then re-raises the signal so the exit status tells it (143 in `docker ps -a`).
    assert service.proc.returncode in (0, -signal.SIGTERM), log[-2000:]
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-2000:]


