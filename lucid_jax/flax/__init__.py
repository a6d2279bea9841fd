"""Flax layers over [`instance_norm`][lucid_jax.instance_norm] (needs the `flax` extra).

- [`linen.InstanceNorm`][lucid_jax.flax.linen.InstanceNorm]: a `flax.linen.Module` (`params`
  and `batch_stats` collections).
- [`nnx.InstanceNorm`][lucid_jax.flax.nnx.InstanceNorm]: an `nnx.Module` (`nnx.Param` and
  `nnx.BatchStat`).

Both take every argument of Flax's `InstanceNorm`, with Flax's meaning, and add Lucid's running
statistics (`track_running_stats`), with Flax's momentum convention
(`new = momentum * old + (1 - momentum) * batch`): `lucid_momentum = 1 - flax_momentum`.

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

del _flax

__all__ = [
    "flax_momentum_from_lucid",
    "linen",
    "linen_variables_from_lucid",
    "load_lucid_into_nnx",
    "nnx",
]
