"""``make demo`` (``python -m lucid_jax``) prints the seed example as the README shows it."""

from __future__ import annotations

from conftest import ROOT, python_blocks, run_python, skip_without_source_tree

skip_without_source_tree("README.md")


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
    printed_lines = [line.strip() for line in printed.splitlines()[: len(shown)]]
    assert printed_lines == [line.strip() for line in shown], (printed_lines, shown)
    assert demo.startswith("lucid-jax ")
