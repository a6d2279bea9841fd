"""The Python examples of the README and of the docs' guides run, in order, as a reader would.

Each page's ```python blocks run one after another in one namespace (a later block may use
names an earlier one defined), so an example that drifts from the API fails here. Blocks that
import the real Lucid (the "Lucid" side of a side-by-side example) are skipped: Lucid is not a
dependency.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, python_blocks, reference_instance_norm, skip_without_source_tree

skip_without_source_tree("README.md", "docs")

#: Pages whose examples run in-process. docs/scaling.md sets up 8 host devices before JAX
#: starts, so tests/test_sharding.py runs its example in a subprocess instead.
PAGES = [
    "README.md",
    "docs/getting-started.md",
    "docs/pure-or-shim.md",
    "docs/flax.md",
    "docs/porting.md",
    "docs/checkpoints.md",
]


#: Most of the pages' time was optimising the programs they compile (Flax's initialisers above
#: all; `conftest.xla_optimisations_off`); their asserts compare names and allclose values.
pytestmark = pytest.mark.usefixtures("unoptimised_module")

REAL_LUCID = re.compile(r"^\s*(?:import lucid\b(?!_)|from lucid[ .])", re.M)
#: A block that uses Flax (or our Flax layers): it needs the flax extra.
USES_FLAX = re.compile(
    r"^\s*(?:import|from)\s+(?:flax|lucid_jax\.flax)\b|\blucid_jax\.flax\b", re.M
)


def _flax_installed() -> bool:
    try:
        import flax  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("page", PAGES)
def test_the_page_examples_run(page, tmp_path, monkeypatch):
    path = ROOT / page
    if not path.exists():
        pytest.skip(f"{page} does not exist")
    blocks = python_blocks(path.read_text())
    assert blocks, f"{page} has no python example"
    monkeypatch.chdir(tmp_path)  # where the examples write their files
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(blocks, 1):
        if REAL_LUCID.search(block):
            continue
        if USES_FLAX.search(block) and not _flax_installed():
            # The blocks before it ran; this one and the rest may build on it.
            pytest.skip(f"{page}: python block {number} on needs the flax extra")
        code = compile(block, f"{page}, python block {number}", "exec")
        exec(code, namespace)  # the documentation's own examples


def test_blocks_of_the_real_lucid_are_told_apart():
    assert REAL_LUCID.search("import lucid.nn as nn") and REAL_LUCID.search("from lucid import x")
    assert not REAL_LUCID.search("import lucid_jax.nn as nn\nfrom lucid_jax import Tensor")


def test_python_blocks_are_found_in_content_tabs():
    text = '=== "a"\n\n    ```python\n    x = 1\n    ```\n\n```python\ny = 2\n```\n'
    assert python_blocks(text) == ["x = 1", "y = 2"]


def test_lucid_s_seed_example_runs_unchanged_but_for_imports_and_gives_lucid_s_numbers():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Lucid's example, unchanged but for its imports\n", 1)[1]
    namespace: dict = {}
    exec(python_blocks(section)[0], namespace)
    out = namespace["out"]
    expected, _, _ = reference_instance_norm(np.array([[[1.0, 2.0], [3.0, 4.0]]]))
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)
