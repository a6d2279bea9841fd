"""compare: this tree's lucid_jax against the same package at a git revision.

Run ``python -m benchmarks.compare --baseline REVISION`` (``--help`` for the options); it
writes ``results/compare.{json,md,png}``. ``baseline.load`` imports ``lucid_jax`` of that
revision beside today's, so both run in one process and are timed in the same rounds, on the
configurations of ``speed.py``, in both layouts.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks import _runner, speed
from benchmarks._candidates import lucid_fn, roofline_candidate
from benchmarks._harness import Candidate, jax_candidate
from benchmarks._inputs import Config, Data


def candidates(config: Config, data: Data, context: _runner.Context) -> list[Candidate]:
    """R, then lucid_jax of this tree and of the baseline, channels first and last."""
    del config
    found = [roofline_candidate(data.channels_first)]
    for suffix, layout, axis, args, g in (
        ("cf", "NC...", 1, data.channels_first, data.g),
        ("cl", "N...C", -1, data.channels_last, data.g_cl),
    ):
        label = f"lucid_jax (channel_axis={axis})"
        found.append(jax_candidate(f"lucid_{suffix}", label, layout, lucid_fn(axis), args, g))
        label = f"lucid_jax at {context.baseline_revision} (channel_axis={axis})"
        f = lucid_fn(axis, context.baseline)
        found.append(jax_candidate(f"baseline_{suffix}", label, layout, f, args, g))
    return found


DESCRIPTION = "lucid_jax of this tree against lucid_jax at the --baseline revision"
QUESTION = _runner.Question(
    "compare", DESCRIPTION, speed.CONFIGS, speed.QUICK_CONFIGS[:1], candidates, needs_baseline=True
)


def main(argv: Sequence[str] | None = None) -> int:
    return _runner.run_question(QUESTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
