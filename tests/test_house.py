"""The house rules, checked from the sources alone (no servers, no data): reading order is dependency order.

A newcomer reads the notebooks in the order of their numbers. Each exported module comes from exactly one
notebook, imports only modules of notebooks that come before it, and uses no private name (`_x`) of another
module. The test files follow their own rules: no test module imports another, and a test that reads the
Telco data asks for it through the `data_csv` fixture, so it carries the `data` mark.
"""
import ast, json, re, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "churn_deploy"
GENERATED = {"__init__", "_modidx"}
# The one import against reading order, kept lazy on purpose: `churn_serve` trains a model on its first run
# when none is committed, and serving never imports training code otherwise.
LAZY_EXCEPTIONS = {("run", "train")}


def notebook_modules() -> list[tuple[str, str]]:
    "(notebook, module) for every exporting notebook, in reading order."
    out = []
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] == "code" and (m := re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M)):
                out.append((nb.name, m[1])); break
    return out


def package_imports(module: str) -> list[tuple[str, str | None, bool, int]]:
    "(imported module, imported name or None, inside a function?, line) for each import of the package in `module`."
    src = (PKG / f"{module}.py").read_text()
    tree, out = ast.parse(src), []
    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level == 1 and not base:  # from . import x
                    out.extend((a.name, None, f, child.lineno) for a in child.names)
                elif child.level == 1 or base.startswith("churn_deploy"):
                    mod = base.removeprefix("churn_deploy").lstrip(".") if child.level == 0 else base
                    if mod: out.extend((mod.split(".")[0], a.name, f, child.lineno) for a in child.names)
                    else: out.extend((a.name, None, f, child.lineno) for a in child.names)
            elif isinstance(child, ast.Import):
                out.extend((a.name.split(".")[1], None, f, child.lineno) for a in child.names if a.name.startswith("churn_deploy."))
            visit(child, f)
    visit(tree, False)
    return out


def private_attribute_uses(module: str, modules: set[str]) -> list[tuple[str, str, int]]:
    "`mod._name` where `mod` is another package module imported as a name (`from . import registry`)."
    tree = ast.parse((PKG / f"{module}.py").read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
            aliases.update({(a.asname or a.name): a.name for a in node.names if a.name in modules})
        elif isinstance(node, ast.Import):
            aliases.update({(a.asname or a.name): a.name.split(".")[1] for a in node.names if a.name.startswith("churn_deploy.")})
    return [(aliases[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
            and n.attr.startswith("_") and not n.attr.startswith("__")]


@pytest.fixture(scope="module")
def layout():
    pairs = notebook_modules()
    order = {m: i for i, (_, m) in enumerate(pairs)}
    return pairs, order


def test_every_module_comes_from_exactly_one_notebook(layout):
    pairs, _ = layout
    by_module = {}
    for nb, m in pairs: by_module.setdefault(m, []).append(nb)
    modules = {p.stem for p in PKG.glob("*.py")} - GENERATED
    assert {m: nbs for m, nbs in by_module.items() if len(nbs) > 1} == {}, "modules exported by more than one notebook"
    assert sorted(modules - set(by_module)) == [], "modules that no notebook exports"
    assert sorted(set(by_module) - modules) == [], "notebooks whose module was not exported (run nbdev_export)"


def test_a_module_imports_only_modules_of_earlier_notebooks(layout):
    pairs, order = layout
    later = []
    for nb, m in pairs:
        for imp, name, in_func, line in package_imports(m):
            if imp not in order: later.append(f"{m}.py:{line} imports {imp}, which no notebook exports"); continue
            if order[imp] >= order[m] and not (in_func and (m, imp) in LAZY_EXCEPTIONS):
                later.append(f"{m}.py:{line} ({nb}) imports {imp} ({pairs[order[imp]][0]})")
    assert later == [], "imports against reading order:\n" + "\n".join(dict.fromkeys(later))


def test_no_import_cycles(layout):
    pairs, order = layout
    graph = {m: {imp for imp, *_ in package_imports(m) if imp in order and imp != m} for _, m in pairs}
    cycles, state = [], {}
    def dfs(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open": cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state: dfs(n, path + [n])
        state[m] = "done"
    for _, m in pairs:
        if m not in state: dfs(m, [m])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_crosses_modules(layout):
    pairs, order = layout
    crossing = []
    for _, m in pairs:
        crossing += [f"{m}.py:{line} imports {imp}.{name}" for imp, name, _, line in package_imports(m)
                     if name and name.startswith("_") and not name.startswith("__")]
        crossing += [f"{m}.py:{line} uses {imp}.{attr}" for imp, attr, line in private_attribute_uses(m, set(order))]
    assert crossing == [], "private names used across modules:\n" + "\n".join(dict.fromkeys(crossing))


# ---------------------------------------------------------------- the rules catch what they are for

def test_the_checks_catch_a_planted_violation(tmp_path, monkeypatch):
    "Each rule fails on a small package that breaks it (so a check that cannot fail would show here)."
    nbs, pkg = tmp_path / "nbs", tmp_path / "churn_deploy"
    nbs.mkdir(); pkg.mkdir()
    def notebook(name, module):
        (nbs / name).write_text(json.dumps({"cells": [{"cell_type": "code", "source": [f"#| default_exp {module}\n"]}]}))
    notebook("00_a.ipynb", "a"); notebook("01_b.ipynb", "b")
    (pkg / "a.py").write_text("from .b import _hidden\n")
    (pkg / "b.py").write_text("from . import a\nx = a._secret\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "PKG", pkg)
    monkeypatch.setattr(here, "ROOT", tmp_path)
    pairs = notebook_modules()
    order = {m: i for i, (_, m) in enumerate(pairs)}
    with pytest.raises(AssertionError, match="a.py:1 .* imports b"): test_a_module_imports_only_modules_of_earlier_notebooks((pairs, order))
    with pytest.raises(AssertionError, match="a -> b -> a|b -> a -> b"): test_no_import_cycles((pairs, order))
    with pytest.raises(AssertionError, match=r"imports b\._hidden[\s\S]*uses a\._secret"): test_no_private_name_crosses_modules((pairs, order))
    notebook("02_c.ipynb", "a")
    with pytest.raises(AssertionError, match="more than one notebook"): test_every_module_comes_from_exactly_one_notebook((notebook_modules(), order))


# ---------------------------------------------------------------- the suite's own rules

TESTS = ROOT / "tests"


def test_test_modules_do_not_import_each_other():
    "Shared helpers and fixtures live in conftest.py or one support module, not in another test file."
    names = {p.stem for p in TESTS.glob("test_*.py")}
    found = []
    for p in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{p.name}:{node.lineno} imports {m}" for m in mods if m.split(".")[-1] in names]
    assert found == [], "\n".join(found)


def test_a_test_that_reads_the_data_asks_for_it():
    "The default data search (`find_data()`, `load_churn_data()`) is only called by conftest: tests take `data_csv`."
    calls = re.compile(r"\b(?:find_data|load_churn_data)\(\)")
    found = [f"{p.name}:{i}" for p in sorted(TESTS.glob("*.py")) if p.name not in ("conftest.py", "test_house.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if calls.search(line)]
    assert found == [], "tests that search for the data without the data_csv fixture (so without the data mark): " + ", ".join(found)


def test_the_readme_lists_every_notebook_in_reading_order(layout):
    "The front page's notebook table is the reading order: every notebook, in order, with the module it exports."
    pairs, _ = layout
    table = re.findall(r"^\s*\| `(\d\d_\w+\.ipynb)` \| `(\w+)\.py` \|", (ROOT / "README.md").read_text(), re.M)
    assert table == pairs


def test_no_module_holds_more_than_one_concern_by_size():
    """A module over about 450 lines holds more than one concern: split its notebook. nbdev's cell markers (`# %% ...`,
    one per export cell) are not counted: splitting a cell along its functions must not count against a module."""
    sizes = {p.name: sum(not l.startswith("# %% ") for l in p.read_text().splitlines())
             for p in PKG.glob("*.py") if p.stem not in GENERATED}
    assert {n: s for n, s in sizes.items() if s > 450} == {}


def test_a_test_modules_tests_share_one_worker():
    """The suite's scheduling (conftest.py: pytest_xdist_make_scheduler): under pytest-xdist every test of a module runs
    on one worker, so its module fixtures start once. pytest-xdist's own `--dist loadgroup` lost its groups under
    pytest 9 and spread a module over both workers; this nested run of two modules on two workers fails then."""
    import subprocess
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider",
                        "tests/test_house.py", "tests/test_cli_help.py::test_the_scanner_finds_commands_and_flags",
                        "-k", "not share_one_worker"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    ran = re.findall(r"\[(gw\d)\] .*?PASSED (tests/\S+?)::", r.stdout)
    assert r.returncode == 0 and ran, r.stdout[-3000:] + r.stderr[-2000:]
    workers = {m: {w for w, mod in ran if mod == m} for _, m in ran}
    assert set(workers) == {"tests/test_house.py", "tests/test_cli_help.py"}, workers
    assert all(len(w) == 1 for w in workers.values()), f"a module's tests ran on several workers: {workers}"
    assert sum(mod == "tests/test_house.py" for _, mod in ran) >= 8, ran
