"""The Lucid face of lucid-jax: modules, Buffers, the stateful shim and `functional_call`."""

from lucid_jax.nn import functional
from lucid_jax.nn._buffer import Buffer, Parameter
from lucid_jax.nn._containers import (
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    Sequential,
)
from lucid_jax.nn._functional_call import functional_call
from lucid_jax.nn._instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from lucid_jax.nn._module import Module

__all__ = [
    "Buffer",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Parameter",
    "ParameterDict",
    "ParameterList",
    "Sequential",
    "functional",
    "functional_call",
]
