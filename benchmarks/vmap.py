"""vmap: is ``jax.vmap`` of the single-sample call as fast as the batched call?

Run ``python -m benchmarks.vmap`` (``--help`` for the options); it writes
``results/vmap.{json,md,png}``. ``lucid_cf_vmap`` maps ``instance_norm(x[i][None])[0]`` over
the batch; ``lucid_cf`` is one call on the whole batch. Both are timed in the same rounds,
forward and forward+backward, and the targets bound their time ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks import _runner
from benchmarks._candidates import lucid_fn, lucid_vmap_fn, roofline_candidate
from benchmarks._harness import Candidate, jax_candidate
from benchmarks._inputs import Config, Data

CONFIGS = (Config((16, 64, 64, 64), "float32"),)
QUICK_CONFIGS = (Config((4, 3, 8, 8), "float32"),)


def candidates(config: Config, data: Data, context: _runner.Context) -> list[Candidate]:
    """R, the batched call and the vmapped single-sample call, channels first."""
    del config, context
    cf, g = data.channels_first, data.g
    return [
        roofline_candidate(cf),
        jax_candidate("lucid_cf", "lucid_jax (channel_axis=1)", "NC...", lucid_fn(1), cf, g),
        jax_candidate(
            "lucid_cf_vmap", "lucid_jax vmapped over samples", "NC...", lucid_vmap_fn(), cf, g
        ),
    ]


DESCRIPTION = "jax.vmap of the single-sample call against the batched call"
QUESTION = _runner.Question("vmap", DESCRIPTION, CONFIGS, QUICK_CONFIGS, candidates)


def main(argv: Sequence[str] | None = None) -> int:
    return _runner.run_question(QUESTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
