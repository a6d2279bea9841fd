"""``make demo`` (``python -m lucid_jax``) prints the seed example as the README shows it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, python_blocks, run_python, skip_without_source_tree

skip_without_source_tree("README.md")

NUMBER = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?")


@pytest.mark.long_running
def test_demo_prints_the_seed_example_as_the_readme_shows_it():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Lucid's example, unchanged but for its imports", 1)[1]
    block = python_blocks(section)[0]
    shown = [line.removeprefix("# ") for line in block.splitlines() if line.startswith("# Array")]
    shown += [
        line.removeprefix("#").removeprefix(" ")
        for line in block.splitlines()
        if line.startswith("#  ")
    ]
    demo = run_python("-m", "lucid_jax", cwd=ROOT).stdout
    printed = demo.split("1. Lucid's seed example, unchanged but for its imports\n", 1)[1]
    printed_text = " ".join(line.strip() for line in printed.splitlines()[: len(shown)])
    shown_text = " ".join(line.strip() for line in shown)
    # The same text around the numbers, and the same numbers to the digits shown (the demo
    # prints five; a value's last bit may differ between CPUs, the fifth digit does not).
    assert NUMBER.sub("#", printed_text) == NUMBER.sub("#", shown_text), (printed_text, shown)
    np.testing.assert_allclose(
        [float(n) for n in NUMBER.findall(printed_text)],
        [float(n) for n in NUMBER.findall(shown_text)],
        rtol=0,
        atol=1e-5,
    )
    assert demo.startswith("lucid-jax ")
