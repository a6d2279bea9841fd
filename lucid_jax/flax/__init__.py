"""Flax layers over :func:`lucid_jax.instance_norm` (needs the ``flax`` extra).

- :class:`lucid_jax.flax.linen.InstanceNorm` — a ``flax.linen.Module`` (``params`` and
  ``batch_stats`` collections).
- :class:`lucid_jax.flax.nnx.InstanceNorm` — an ``nnx.Module`` (``nnx.Param`` and
  ``nnx.BatchStat``).

Both use Flax's momentum convention (``new = momentum * old + (1 - momentum) * batch``):
``lucid_momentum = 1 - flax_momentum``.

Install the extra with ``pip install "lucid-jax[flax]"``; ``import lucid_jax`` alone never
needs flax.
"""

try:
    import flax as _flax
    import optax as _optax
except ImportError as _error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "lucid_jax.flax needs the optional dependencies flax and optax, which could not be "
        f'imported ({_error}). Install them with: pip install "lucid-jax[flax]"'
    ) from _error

from lucid_jax.flax import linen, nnx

del _flax, _optax

__all__ = ["linen", "nnx"]
