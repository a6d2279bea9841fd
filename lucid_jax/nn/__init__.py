"""The Lucid face of lucid-jax: Buffers, the stateful functional shim, Lucid-style modules."""

from lucid_jax.nn import functional
from lucid_jax.nn._buffer import Buffer, Parameter
from lucid_jax.nn._instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from lucid_jax.nn._module import Module

__all__ = [
    "Buffer",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "Module",
    "Parameter",
    "functional",
]
