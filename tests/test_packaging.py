"""The project's one home: every link to its repository derives from pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import pytest
from conftest import ROOT, skip_without_source_tree

skip_without_source_tree("notebooks", "README.md", "pyproject.toml")

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
#: Links to other projects' repositories that the docs cite on purpose.
OTHER_PROJECTS = (
    "https://github.com/ChanLumerico/lucid",
    "https://github.com/huggingface/safetensors",
    # The source of the number parse io/_serde_json_numbers.py restates (with its licence).
    "https://github.com/serde-rs/json",
)
GITHUB = re.compile(r"(?:https://github\.com|colab\.research\.google\.com/github)/[\w.-]+/[\w.-]+")


def _texts():
    paths = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "mkdocs.yml"]
    paths += [*sorted(ROOT.glob("notebooks/*")), *sorted(ROOT.glob("docs/*.md"))]
    paths += sorted((ROOT / "lucid_jax").rglob("*.py"))
    return [(p.relative_to(ROOT), p.read_text()) for p in paths if p.is_file()]


def test_every_repository_link_is_the_one_in_pyproject():
    home = REPOSITORY.removeprefix("https://")
    colab_home = "colab.research.google.com/github/" + REPOSITORY.removeprefix(
        "https://github.com/"
    )
    wrong = [
        (str(path), link)
        for path, text in _texts()
        for link in GITHUB.findall(text)
        if link.removeprefix("https://") not in (home, colab_home)
        and not link.startswith(OTHER_PROJECTS)
    ]
    assert not wrong, wrong


def test_readme_renders_on_a_package_page_without_relative_links():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", readme)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert targets and not relative, relative


def test_readme_says_it_is_not_on_pypi_and_gives_install_commands_that_work_today():
    readme = (ROOT / "README.md").read_text()
    assert "not on PyPI" in readme
    assert 'pip install ".[flax]"' in readme and "pip install ." in readme
    assert "git+" not in readme.split("## Install", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", ["LICENSE"])
def test_license_is_shipped(name):
    assert (ROOT / name).is_file()
    assert name in PROJECT["license-files"]
    assert PROJECT["license"] == "MIT" and "MIT License" in (ROOT / name).read_text()
