"""The README, tried as a newcomer would: its examples are run and compared with what the commands
really print, its figures are read back from the committed model, and the setup it asks for after
cloning leaves the work tree as clean as `.ci/run` requires."""
import json, os, re, shutil, subprocess

import pytest

from conftest import BIN, HEADER, ROOT, ROW, script

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    "The text of the README's section `## title` (up to the next heading of level 1 or 2)."
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#{{1,2}} |\Z)", README, re.M | re.S)
    assert m, f"no section '## {title}' in the README"
    return m.group(1)


def blocks(text: str, lang: str | None = None) -> list[str]:
    "Fenced code blocks of `text` (only those tagged `lang`, when given)."
    return [b for tag, b in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if lang is None or tag == lang]


def git(*args, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, **kw)


# ---------------------------------------------------------------- after cloning

def test_install_hooks_leaves_the_tree_clean(tmp_path):
    "`uv run nbdev_install_hooks` (README, dev container) writes .gitattributes and .gitconfig: they are committed as written."
    assert "nbdev_install_hooks" in README
    tracked = git("ls-files", ".gitattributes", ".gitconfig", cwd=ROOT).stdout.split()
    assert sorted(tracked) == [".gitattributes", ".gitconfig"], f"not committed: {tracked}"
    repo, home = tmp_path / "clone", tmp_path / "home"
    repo.mkdir(); home.mkdir()
    for name in (".gitattributes", ".gitconfig", ".gitignore"): shutil.copy(ROOT / name, repo / name)
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "."], [*ident, "commit", "-q", "-m", "clone"]):
        r = git(*cmd, cwd=repo, env=env)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([script("nbdev_install_hooks")], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git("status", "--porcelain", cwd=repo, env=env).stdout == "", "nbdev_install_hooks changed the tree"
    assert git("config", "--local", "include.path", cwd=repo, env=env).stdout.strip() == "../.gitconfig"
    attr = git("check-attr", "merge", "--", "nbs/00_data.ipynb", cwd=repo, env=env).stdout.strip()
    assert attr.endswith("merge: nbdev-merge"), attr
    merge = git("config", "merge.nbdev-merge.driver", cwd=repo, env=env).stdout
    assert merge.startswith("nbdev_merge "), merge
