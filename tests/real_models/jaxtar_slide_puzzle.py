# ruff: noqa
# fmt: off
# (Copied code, kept as written: neither linted nor formatted.)
# MIT License
#
# Copyright (c) 2022 KyuSeok Jung
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
#
# JAxtar (a JAX puzzle solver), its slide-puzzle conv net and the modules it is built of,
# from https://github.com/tinker495/JAxtar at commit b0f2ba5e396ad1ec2cc4a4b95350016aebec5dcc:
#   neural_util/dtypes.py       DTYPE, PARAM_DTYPE
#   neural_util/modules.py      apply_norm, NORM_FN_REGISTRY, get_norm_fn, MLP, ResBlock,
#                               ConvResBlock
#   neural_util/basemodel/base.py  DistanceModel (its fields; train_loss, which needs the
#                               project's train_util, is left out)
#   neural_util/conv_models.py  SlidePuzzleConvModel
# Copied as written but for: the project's own norms (BatchReNorm, DyTan, from
# neural_util/norm.py) are left out of the registry and of apply_norm's BatchNorm check;
# ResBlock's SwiGLU branch (use_swiglu, off by default) is left out; and `nn.InstanceNorm` is
# imported on a line of its own (`from flax.linen import InstanceNorm`), the one line the
# tests swap.

from abc import ABC, abstractmethod
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import InstanceNorm

# --- neural_util/dtypes.py ---------------------------------------------------------------
DTYPE = jnp.bfloat16
# Use float32 for numerically sensitive heads / losses.
HEAD_DTYPE = jnp.float32
# Default parameter dtype (aligned to DTYPE for efficiency)
PARAM_DTYPE = jnp.float32

# --- neural_util/modules.py --------------------------------------------------------------
DEFAULT_NORM_FN = partial(nn.BatchNorm, param_dtype=PARAM_DTYPE)


# Norm application helper to handle BatchNorm/BatchReNorm running stats.
def apply_norm(norm_fn, x, training):
    if norm_fn is None:
        return x
    fn = norm_fn.func if isinstance(norm_fn, partial) else norm_fn
    if isinstance(fn, type) and issubclass(fn, (nn.BatchNorm,)):
        return norm_fn()(x, use_running_average=not training)
    return norm_fn()(x)


# Norm function registry for config-driven selection
NORM_FN_REGISTRY = {
    "batch": partial(nn.BatchNorm, param_dtype=PARAM_DTYPE),
    "batch0999": partial(nn.BatchNorm, momentum=0.999, param_dtype=PARAM_DTYPE),
    "instance": partial(InstanceNorm, param_dtype=PARAM_DTYPE),
    "layer": partial(nn.LayerNorm, param_dtype=PARAM_DTYPE),
    "group": partial(nn.GroupNorm, param_dtype=PARAM_DTYPE),
    "rms": partial(nn.RMSNorm, param_dtype=PARAM_DTYPE),
}


def get_norm_fn(norm_name_or_fn=None):
    if norm_name_or_fn is None:
        return DEFAULT_NORM_FN
    if callable(norm_name_or_fn):
        return norm_name_or_fn
    if isinstance(norm_name_or_fn, str):
        key = norm_name_or_fn.lower()
        if key in NORM_FN_REGISTRY:
            return NORM_FN_REGISTRY[key]
        raise ValueError(
            f"Unknown norm_fn: {norm_name_or_fn}. Available: {list(NORM_FN_REGISTRY.keys())}"
        )
    raise TypeError(f"norm_fn must be a string or callable, got {type(norm_name_or_fn)}")


# Multi-layer Perceptron
class MLP(nn.Module):

    hidden_dim: int = 1000
    norm_fn: nn.Module = DEFAULT_NORM_FN
    activation: str = nn.relu
    param_dtype: any = PARAM_DTYPE
    dot_general_cls: Any = None

    @nn.compact
    def __call__(self, x, training=False):
        x = nn.Dense(
            self.hidden_dim,
            dtype=DTYPE,
            param_dtype=self.param_dtype,
            dot_general_cls=self.dot_general_cls,
        )(x)
        x = apply_norm(self.norm_fn, x, training)
        x = self.activation(x)
        return x


# Residual Block
class ResBlock(nn.Module):
    node_size: int
    hidden_N: int = 1
    norm_fn: nn.Module = DEFAULT_NORM_FN
    activation: str = nn.relu
    use_swiglu: bool = False
    dtype: any = DTYPE
    param_dtype: any = None
    dot_general_cls: Any = None

    @nn.compact
    def __call__(self, x0, training=False):
        dtype = self.dtype
        param_dtype = self.param_dtype if self.param_dtype is not None else PARAM_DTYPE
        x0_cast = x0.astype(dtype)
        x = x0_cast
        out_dim = x0.shape[-1]
        for _ in range(self.hidden_N):
            x = MLP(
                self.node_size,
                norm_fn=self.norm_fn,
                activation=self.activation,
                dot_general_cls=self.dot_general_cls,
            )(x, training)
        x = nn.Dense(
            out_dim,
            dtype=dtype,
            param_dtype=param_dtype,
            dot_general_cls=self.dot_general_cls,
        )(x)
        x = apply_norm(self.norm_fn, x, training)
        return self.activation(x + x0_cast)


# Conv Residual Block
class ConvResBlock(nn.Module):
    filters: int
    kernel_size: int
    strides: int
    hidden_N: int = 1
    norm_fn: nn.Module = DEFAULT_NORM_FN
    activation: str = nn.relu
    param_dtype: any = PARAM_DTYPE

    @nn.compact
    def __call__(self, x0, training=False):
        x = x0
        for _ in range(self.hidden_N):
            x = nn.Conv(
                self.filters,
                self.kernel_size,
                strides=self.strides,
                padding="SAME",
                dtype=DTYPE,
                param_dtype=self.param_dtype,
            )(x)
            x = apply_norm(self.norm_fn, x, training)
            x = self.activation(x)
        x = nn.Conv(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="SAME",
            dtype=DTYPE,
            param_dtype=self.param_dtype,
        )(x)
        x = apply_norm(self.norm_fn, x, training)
        return self.activation(x + x0)


# --- neural_util/basemodel/base.py -------------------------------------------------------
class DistanceModel(ABC, nn.Module):
    action_size: int = 1

    @abstractmethod
    def __call__(self, x, training=False):
        pass


# --- neural_util/conv_models.py ----------------------------------------------------------
class SlidePuzzleConvModel(DistanceModel):
    norm_fn: callable = DEFAULT_NORM_FN

    @nn.compact
    def __call__(self, x, training=False):
        x = nn.Conv(256, (3, 3), strides=1, padding="SAME", dtype=DTYPE, param_dtype=PARAM_DTYPE)(x)
        x = apply_norm(self.norm_fn, x, training)
        x = nn.relu(x)
        x = ConvResBlock(256, (3, 3), strides=1, norm_fn=self.norm_fn)(x, training)
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.Dense(512, dtype=DTYPE, param_dtype=PARAM_DTYPE)(x)
        x = apply_norm(self.norm_fn, x, training)
        x = nn.relu(x)
        x = ResBlock(512, norm_fn=self.norm_fn)(x, training)
        return nn.Dense(self.action_size, dtype=DTYPE, param_dtype=PARAM_DTYPE)(x)
