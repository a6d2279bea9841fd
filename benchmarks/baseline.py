"""Import ``lucid_jax`` as it was at a git revision, beside today's, for side-by-side timing.

``load("ff21247")`` copies ``lucid_jax/`` of that revision (``git archive``) into a temporary
folder as the package ``lucid_jax_baseline`` (its own imports renamed to match) and imports it.
Both versions then run in one process, interleaved in the same timing rounds, so their ratio is
not at the mercy of a noisy machine between two runs.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

NAME = "lucid_jax_baseline"
ROOT = Path(__file__).resolve().parent.parent


def load(revision: str) -> ModuleType:
    """The package ``lucid_jax`` at ``revision`` (any git revision), imported as ``NAME``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "lucid_jax"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="lucid_jax_baseline_"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    package = folder / NAME
    (folder / "lucid_jax").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(re.sub(r"\blucid_jax\b", NAME, source.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module(NAME)
