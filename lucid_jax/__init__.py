"""lucid-jax: Lucid's `instance_norm` for JAX.

- `instance_norm` — the pure function (returns output and new running stats).
- `lucid_jax.nn` — the Lucid face: `Buffer`, the stateful
  `nn.functional.instance_norm` shim and `InstanceNorm1d/2d/3d` modules.
- `lucid_jax.flax` — Flax linen and nnx layers (needs the `flax` extra).
- [`load`][lucid_jax.load], [`save`][lucid_jax.save] — Lucid's checkpoint files (`.lcd`, `.lct`,
  `.safetensors`).
"""

from lucid_jax import functional, nn
from lucid_jax._tensor import Tensor
from lucid_jax.functional import InstanceNormOutput, instance_norm
from lucid_jax.io import load, save

__all__ = [
    "InstanceNormOutput",
    "Tensor",
    "functional",
    "instance_norm",
    "load",
    "nn",
    "save",
]
__version__ = "0.1.0"
