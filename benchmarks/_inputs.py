"""The workload: a configuration (shape, dtype), its seeded data and the float32 reference.

Data: ``x ~ 0.5 + offset + 2·N(0, 1)``, per-channel ``w ~ 1 + 0.1·N(0, 1)`` and
``b ~ 0.1·N(0, 1)``, a fixed cotangent ``g ~ N(0, 1)``, all channels first ``(N, C, *S)``, with
channels-last copies for the candidates that take that layout. The reference is naive ``jnp``
in float32 on the very values fed (bf16-rounded for bf16), output and the three gradients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._candidates import naive_fn
from benchmarks._harness import vjp_fn


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark configuration: a channels-first shape ``(N, C, *S)`` and a dtype."""

    shape: tuple[int, ...]
    dtype: str  # "float32" or "bfloat16"
    #: Added to the input's mean: data far from zero, where a one-pass variance is wrong.
    offset: float = 0.0

    @property
    def label(self) -> str:
        """``16x128x128x128-f32``, ``8x64x64x64-f32-offset30``: what ``--shapes`` selects."""
        suffix = f"-offset{self.offset:g}" if self.offset else ""
        short = {"float32": "f32", "bfloat16": "bf16"}[self.dtype]
        return f"{'x'.join(map(str, self.shape))}-{short}{suffix}"

    @property
    def title(self) -> str:
        suffix = f", mean {self.offset + 0.5:g}" if self.offset else ""
        return f"({', '.join(map(str, self.shape))}) {self.dtype}{suffix}"

    @property
    def input_bytes(self) -> int:
        return math.prod(self.shape) * jnp.dtype(self.dtype).itemsize


@dataclasses.dataclass
class Data:
    """The arrays of one configuration, on JAX's default device."""

    host: dict[str, np.ndarray]  # float32 x, w, b, g as generated (for PyTorch)
    x: jax.Array
    w: jax.Array
    b: jax.Array
    g: jax.Array
    x_cl: jax.Array  # channels-last copies
    g_cl: jax.Array
    #: float32 output ``y`` and gradients ``dx``, ``dw``, ``db``, channels first.
    reference: dict[str, jax.Array]

    @property
    def channels_first(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.x, self.w, self.b

    @property
    def channels_last(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.x_cl, self.w, self.b

    def as_float32(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``x, w, b, g`` in float32, holding exactly the values fed in ``self``'s dtype."""
        return tuple(a.astype(jnp.float32) for a in (self.x, self.w, self.b, self.g))


def make_data(config: Config, seed: int = 0) -> Data:
    """Seeded inputs for ``config`` and their float32 naive-``jnp`` reference."""
    rng = np.random.default_rng(seed)
    channels = config.shape[1]
    host = {
        "x": (0.5 + config.offset + 2.0 * rng.standard_normal(config.shape)).astype(np.float32),
        "w": (1.0 + 0.1 * rng.standard_normal(channels)).astype(np.float32),
        "b": (0.1 * rng.standard_normal(channels)).astype(np.float32),
        "g": rng.standard_normal(config.shape, dtype=np.float32),
    }
    x, w, b, g = (jnp.asarray(host[k]).astype(config.dtype) for k in ("x", "w", "b", "g"))
    channels_last = (jnp.moveaxis(a, 1, -1).copy() for a in (x, g))
    data = Data(host, x, w, b, g, *channels_last, reference={})
    y, (dx, dw, db) = jax.jit(vjp_fn(naive_fn(1)))(*data.as_float32())
    data.reference = {"y": y, "dx": dx, "dw": dw, "db": db}
    return data


def select(configs: Sequence[Config], patterns: Sequence[str] | None) -> list[Config]:
    """The configurations ``patterns`` name: a full label (``8x64x64x64-bf16``) or a shape
    (``8x64x64x64``: every dtype and offset of it); all of them when ``patterns`` is empty."""
    if not patterns:
        return list(configs)
    wanted = {p.strip() for p in patterns if p.strip()}
    return [c for c in configs if c.label in wanted or c.label.split("-")[0] in wanted]
