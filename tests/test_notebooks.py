"""Run every notebook's tests with nbdev_test, one pytest case per notebook."""
import subprocess

import pytest

from conftest import ROOT, script

NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook(nb):
    r = subprocess.run([script("nbdev_test"), "--path", f"nbs/{nb}", "--do_print"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
