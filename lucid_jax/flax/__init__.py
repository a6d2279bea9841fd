"""Flax layers over [`instance_norm`][lucid_jax.instance_norm] (needs the `flax` extra).

- [`linen.InstanceNorm`][lucid_jax.flax.linen.InstanceNorm]: a `flax.linen.Module`.
- [`nnx.InstanceNorm`][lucid_jax.flax.nnx.InstanceNorm]: an `nnx.Module`.

By default both are Flax's `InstanceNorm`: every argument with Flax's meaning and default,
Flax's variables, no train flag. Lucid's running statistics are opt-in
(`track_running_stats=True`, linen's `batch_stats`, nnx's `nnx.BatchStat`), with Flax's
momentum convention (`new = momentum * old + (1 - momentum) * batch`):
`lucid_momentum = 1 - flax_momentum`. `InstanceNorm.lucid(...)` gives Lucid's whole
behaviour; [`linen_variables_for`][lucid_jax.flax.linen_variables_for] and
[`load_nnx_state`][lucid_jax.flax.load_nnx_state] move checkpoints across the switch.

Install flax itself (`pip install flax`) or lucid-jax's `flax` extra (`pip install ".[flax]"`
from a clone); `import lucid_jax` alone never needs flax.
"""

try:
    import flax as _flax
except ImportError as _error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"lucid_jax.flax needs the optional dependency flax, which could not be imported "
        f"({_error}). Install it with: pip install flax (or install lucid-jax with its flax "
        'extra, e.g. pip install ".[flax]" from a clone of lucid-jax)'
    ) from _error

from lucid_jax.flax import linen, nnx
from lucid_jax.flax._lucid_state import (
    flax_momentum_from_lucid,
    linen_variables_from_lucid,
    load_lucid_into_nnx,
)
from lucid_jax.flax._running_stats import linen_variables_for, load_nnx_state

del _flax

__all__ = [
    "flax_momentum_from_lucid",
    "linen",
    "linen_variables_for",
    "linen_variables_from_lucid",
    "load_lucid_into_nnx",
    "load_nnx_state",
    "nnx",
]
