"""Speed: lucid_jax against naive ``jnp``, Flax and PyTorch, forward and forward+backward.

Run ``python -m benchmarks.speed`` (``--help`` for the options); it writes
``results/speed.{json,md,png}``. Candidates, on every configuration:

* ``lucid_cf``, ``lucid_cl``: ``lucid_jax.instance_norm`` channels first and channels last;
* ``lucid_cf_one_pass``: the same with ``variance_method="one_pass"``;
* ``naive_cf``, ``naive_cl``: ``jnp.mean``, ``jnp.var``, normalise, both layouts;
* float32 only: ``flax_cl`` (``flax.linen.InstanceNorm``, channels last) and ``torch_cf``
  (``F.instance_norm``, where PyTorch runs on JAX's kind of device);
* bf16 only, as references: ``roofline_f32``, ``lucid_cf_f32`` on the same values in float32,
  for "no slower per element".

It also probes that bf16 statistics are kept in float32 (the ``bf16_probe`` of the JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _runner
from benchmarks._candidates import (
    flax_fn,
    lucid_fn,
    naive_fn,
    roofline_candidate,
    roofline_fn,
    torch_candidate,
)
from benchmarks._harness import Candidate, jax_candidate
from benchmarks._inputs import Config, Data
from benchmarks._targets import ISSUE_SHAPE

CONFIGS = (
    Config(ISSUE_SHAPE, "float32"),
    Config((8, 64, 64, 64), "float32"),
    Config((64, 32, 16, 16), "float32"),
    Config((2, 32, 64, 64, 64), "float32"),
    Config((8, 64, 64, 64), "float32", offset=30.0),
    Config((8, 64, 64, 64), "bfloat16"),
    Config(ISSUE_SHAPE, "bfloat16"),
)
QUICK_CONFIGS = (
    Config((2, 3, 8, 8), "float32"),
    Config((2, 3, 4, 4, 4), "float32"),
    Config((2, 3, 8, 8), "bfloat16"),
)


def candidates(config: Config, data: Data, context: _runner.Context) -> list[Candidate]:
    """R, then every candidate the module lists for ``config``."""
    cf, cl, g, g_cl = data.channels_first, data.channels_last, data.g, data.g_cl
    found = [
        roofline_candidate(cf),
        jax_candidate("lucid_cf", "lucid_jax (channel_axis=1)", "NC...", lucid_fn(1), cf, g),
        jax_candidate("lucid_cl", "lucid_jax (channel_axis=-1)", "N...C", lucid_fn(-1), cl, g_cl),
        jax_candidate(
            "lucid_cf_one_pass",
            "lucid_jax, variance_method='one_pass'",
            "NC...",
            lucid_fn(1, variance_method="one_pass"),
            cf,
            g,
        ),
        jax_candidate("naive_cf", "naive jnp", "NC...", naive_fn(1), cf, g),
        jax_candidate("naive_cl", "naive jnp", "N...C", naive_fn(-1), cl, g_cl),
    ]
    if config.dtype == "float32":
        found.append(
            jax_candidate("flax_cl", "flax.linen.InstanceNorm", "N...C", flax_fn(), cl, g_cl)
        )
        if context.torch is not None:
            found.append(torch_candidate(context.torch, context.torch_device, data.host))
    else:
        x32, w32, b32, g32 = data.as_float32()
        cf32 = (x32, w32, b32)
        found += [
            jax_candidate(
                "roofline_f32", "R, float32", "NC...", roofline_fn(1), cf32, None, reference=True
            ),
            jax_candidate(
                "lucid_cf_f32",
                "lucid_jax, float32",
                "NC...",
                lucid_fn(1),
                cf32,
                g32,
                reference=True,
            ),
        ]
    return found


def bf16_probe(configs: Sequence[Config]) -> dict[str, Any]:
    """Largest error of a bf16 instance norm where bf16 statistics would show.

    The input is ``300 + N(0, 1)`` in bfloat16, whose spacing near 300 is 2: an instance's
    mean is not a bf16 number. Statistics kept in float32 leave the bf16 output within its own
    rounding of a float32 computation on the same values; naive ``jnp`` is shown beside it.
    """
    if not any(c.dtype == "bfloat16" for c in configs):
        return {}
    rng = np.random.default_rng(1)
    x = jnp.asarray(300.0 + rng.standard_normal((2, 8, 32, 32)), jnp.bfloat16)
    expected = naive_fn(1)(x.astype(jnp.float32), jnp.ones(8), jnp.zeros(8))
    ones, zeros = jnp.ones(8, jnp.bfloat16), jnp.zeros(8, jnp.bfloat16)
    errors = {}
    for key, f in (("lucid_cf", lucid_fn(1)), ("naive_cf", naive_fn(1))):
        y = jax.jit(f)(x, ones, zeros).astype(jnp.float32)
        errors[key] = float(jnp.max(jnp.abs(y - expected)))
    return {"bf16_probe": errors}


QUESTION = _runner.Question(
    name="speed",
    description="lucid_jax against naive jnp, Flax and PyTorch, forward and forward+backward",
    configs=CONFIGS,
    quick_configs=QUICK_CONFIGS,
    candidates=candidates,
    uses_torch=True,
    probe=bf16_probe,
)


def main(argv: Sequence[str] | None = None) -> int:
    return _runner.run_question(QUESTION, argv)


if __name__ == "__main__":
    raise SystemExit(main())
