"""Fuzzing `lucid_jax.load`'s pickle reader: every mutant reads to plain data or is refused.

The mutants (Hypothesis, in `tests/fuzz_pickle_reader.py`) are read in a child process under a
2 GiB address-space limit, so a crash or runaway allocation fails this test instead of taking
the test run down. `LUCID_JAX_FUZZ_EXAMPLES` sets how many (default 1500, about 20 s); for a
longer run: `LUCID_JAX_FUZZ_EXAMPLES=100000 pytest tests/test_checkpoint_fuzz.py`.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import ROOT, run_python

EXAMPLES = int(os.environ.get("LUCID_JAX_FUZZ_EXAMPLES", "1500"))


@pytest.mark.long_running
@pytest.mark.skipif(sys.platform == "win32", reason="the child sets a POSIX memory limit")
def test_mutated_checkpoints_read_to_valid_data_or_are_refused(tmp_path):
    # One BLAS thread: each thread's stack would count against the address-space limit.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = run_python(
        str(ROOT / "tests" / "fuzz_pickle_reader.py"),
        str(EXAMPLES),
        cwd=tmp_path,
        env=env,
        timeout=max(600, EXAMPLES / 10),
    )
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["examples"] >= EXAMPLES
    # Both outcomes occur: the mutations neither all break the files nor all miss them.
    assert counts["read"] > EXAMPLES // 100, counts
    assert counts["refused"] > EXAMPLES // 2, counts
    # The control: every unmutated seed (Lucid's files, numpy's pickles, the forgeries)
    # reads but the two attacks among the forgeries (an object dtype, a BUILD on a global).
    assert counts.get("refused seeds") == 2, counts
