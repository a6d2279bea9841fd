"""Lucid's `InstanceNorm1d/2d/3d` modules over the stateful shim."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lucid_jax.functional import check_num_features
from lucid_jax.nn import functional as F
from lucid_jax.nn._buffer import Parameter
from lucid_jax.nn._module import Module


class _InstanceNorm(Module):
    _spatial_dims: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.num_features: int = check_num_features(num_features, type(self).__name__)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        # None registers the name empty, as Lucid does for affine=False and untracked stats.
        self.register_parameter("weight", Parameter(np.ones(num_features)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(num_features)) if affine else None)
        tracked = track_running_stats
        self.register_buffer("running_mean", jnp.zeros(num_features) if tracked else None)
        self.register_buffer("running_var", jnp.ones(num_features) if tracked else None)

    def reset_running_stats(self) -> None:
        """Running mean to zeros, running variance to ones."""
        if self.track_running_stats:
            self.running_mean.data = jnp.zeros(self.num_features)
            self.running_var.data = jnp.ones(self.num_features)

    def reset_parameters(self) -> None:
        """Running stats reset; weight to ones and bias to zeros."""
        self.reset_running_stats()
        if self.affine:
            self.weight.data = jnp.ones(self.num_features)
            self.bias.data = jnp.zeros(self.num_features)

    def forward(self, input_: Any) -> jax.Array:
        ndim = getattr(input_, "ndim", None)
        if ndim is None:
            ndim = jnp.ndim(input_)
        expected = self._spatial_dims + 2
        if ndim != expected:
            raise ValueError(
                f"{type(self).__name__}: expected a {expected}-D input (N, C, "
                f"{', '.join('LHW'[3 - self._spatial_dims :] if self._spatial_dims < 3 else 'DHW')}"
                f"); got {ndim}-D input of shape {tuple(jnp.shape(input_))}."
            )
        momentum = 0.1 if self.momentum is None else self.momentum
        return F.instance_norm(
            input_,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over `(N, C, L)` input, as `lucid.nn.InstanceNorm1d`.

    Args:
      num_features: the number of channels C.
      eps: added to the variance.
      momentum: weight of the batch statistics in the running-stat update (None: 0.1).
      affine: learn a per-channel `weight` (ones) and `bias` (zeros), as Parameters.
      track_running_stats: keep `running_mean` (zeros) and `running_var` (ones) as Buffers,
        updated in training and used in evaluation.

    Raises:
      ValueError: `num_features` is not a positive int; at call time, the input has
        another number of dimensions.

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax.nn import InstanceNorm1d
      >>> m = InstanceNorm1d(2)
      >>> m(jnp.arange(8.0).reshape(1, 2, 4)).shape
      (1, 2, 4)
      >>> m.running_mean
      Buffer([0.15, 0.55], dtype=float32)
    """

    _spatial_dims = 1


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over `(N, C, H, W)` input, as `lucid.nn.InstanceNorm2d`.

    Its arguments, state and errors are
    [`InstanceNorm1d`][lucid_jax.nn.InstanceNorm1d]'s.

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax.nn import InstanceNorm2d
      >>> m = InstanceNorm2d(3).eval()
      >>> m(jnp.ones((2, 3, 4, 4))).shape
      (2, 3, 4, 4)
      >>> list(m.state_dict())
      ['weight', 'bias', 'running_mean', 'running_var']
    """

    _spatial_dims = 2


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over `(N, C, D, H, W)` input, as `lucid.nn.InstanceNorm3d`.

    Arguments, state and errors as [`InstanceNorm1d`][lucid_jax.nn.InstanceNorm1d]. Without
    `affine`, the state is the running statistics alone:

    Examples:
      >>> from lucid_jax.nn import InstanceNorm3d
      >>> list(InstanceNorm3d(2, affine=False).state_dict())
      ['running_mean', 'running_var']
    """

    _spatial_dims = 3
