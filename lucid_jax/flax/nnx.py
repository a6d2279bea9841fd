"""``flax.nnx`` face of Lucid's instance norm: :class:`InstanceNorm`.

The same thin layer as :class:`lucid_jax.flax.linen.InstanceNorm` (it shares its call into
:func:`lucid_jax.instance_norm`), with state held the nnx way: ``nnx.Param`` ``scale`` and
``bias``, ``nnx.BatchStat`` ``mean`` and ``var``, updated in place in training mode.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.module import first_from
from flax.nnx.nn import initializers
from flax.typing import Dtype, Initializer

from lucid_jax._core import statistics_dtype
from lucid_jax.flax._common import normalize, num_channels

Array = jax.Array

__all__ = ["InstanceNorm"]


class InstanceNorm(nnx.Module):
    """Instance normalisation with Lucid's running statistics, as an ``nnx.Module``.

    Each sample's channels are normalised by their own statistics over the spatial axes
    (every axis but the batch axis 0 and ``channel_axis``)::

        y[n, ..., c] = (x[n, ..., c] - mean[n, c]) / sqrt(var[n, c] + epsilon) * scale[c] + bias[c]

    with the biased variance. When ``track_running_stats``, training mode
    (``use_running_average=False``, set by ``.train()``) also updates the ``nnx.BatchStat``
    running averages in place, with Flax's momentum convention::

        mean <- momentum * mean + (1 - momentum) * mean_n(mean[n, :])
        var  <- momentum * var  + (1 - momentum) * mean_n(var[n, :])

    and eval mode (``use_running_average=True``, set by ``.eval()``) normalises with them. The
    work is done by :func:`lucid_jax.instance_norm` with ``momentum=1 - self.momentum``.

    Args:
      num_features: the number of channels ``C``.
      momentum: Flax convention, the weight of the *old* running value. Lucid's (and
        PyTorch's) momentum is ``1 - momentum``: Flax 0.9 is Lucid 0.1, Flax 0.99 (the
        default) is Lucid 0.01.
      epsilon: added to the variance (Lucid's ``eps``).
      use_running_average: True: normalise with the running statistics (eval); False:
        instance statistics, updating the running ones (training). ``.train()``/``.eval()``
        and ``nnx.view`` set it; a value given at call time takes precedence. With
        ``track_running_stats=False``, True falls back to instance statistics (as Lucid).
      use_scale: learn a per-channel ``scale`` (``nnx.Param``, initialised by ``scale_init``).
      use_bias: learn a per-channel ``bias`` (``nnx.Param``, initialised by ``bias_init``).
      track_running_stats: keep ``nnx.BatchStat`` ``mean`` (zeros) and ``var`` (ones).
      channel_axis: the channel axis (Flax layout: -1, the default; Lucid's layout: 1). Not 0.
      axis_name: a ``shard_map``/``pmap`` axis name: the batch averages feeding the running
        statistics are also averaged over it, so every shard stores the global-batch update.
      dtype: the output dtype (default: inferred from input and params, as Flax).
      param_dtype: the dtype of ``scale`` and ``bias`` (running statistics are kept in at least
        float32).
      scale_init: initializer for ``scale`` (ones).
      bias_init: initializer for ``bias`` (zeros).
      use_fast_variance: take the variance in one pass, ``E[x²] - E[x]²`` (fastest; accurate
        only for data near zero). The default, False, is two-pass: accurate at any mean.
      rngs: ``nnx.Rngs`` for the initializers (the ``params`` stream).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from lucid_jax.flax.nnx import InstanceNorm
      >>> x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2.0 + 1.0   # NHWC
      >>> layer = InstanceNorm(3, momentum=0.9, rngs=nnx.Rngs(0))  # Flax 0.9 == Lucid 0.1
      >>> y = layer(x)                                              # training: updates stats
      >>> bool(jnp.allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5))
      True
      >>> bool(jnp.allclose(layer.mean[...], 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-6))
      True
      >>> layer.eval()                                              # running stats, frozen
      >>> before = layer.mean[...]
      >>> layer(x).shape, bool((layer.mean[...] == before).all())
      ((4, 5, 5, 3), True)
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        use_running_average: bool | None = False,
        use_scale: bool = True,
        use_bias: bool = True,
        track_running_stats: bool = True,
        channel_axis: int = -1,
        axis_name: str | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer = initializers.ones,
        bias_init: Initializer = initializers.zeros,
        use_fast_variance: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        if (
            not isinstance(num_features, numbers.Integral)
            or isinstance(num_features, bool)
            or num_features <= 0
        ):
            raise ValueError(
                f"InstanceNorm: num_features must be a positive int; got {num_features!r}."
            )
        feature_shape = (int(num_features),)

        self.scale: nnx.Param[Array] | None
        if use_scale:
            self.scale = nnx.Param(scale_init(rngs.params(), feature_shape, param_dtype))
        else:
            self.scale = nnx.data(None)
        self.bias: nnx.Param[Array] | None
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), feature_shape, param_dtype))
        else:
            self.bias = nnx.data(None)

        self.mean: nnx.BatchStat[Array] | None
        self.var: nnx.BatchStat[Array] | None
        if track_running_stats:
            running_dtype = statistics_dtype(param_dtype)
            self.mean = nnx.BatchStat(jnp.zeros(feature_shape, running_dtype))
            self.var = nnx.BatchStat(jnp.ones(feature_shape, running_dtype))
        else:
            self.mean = nnx.data(None)
            self.var = nnx.data(None)

        self.num_features = int(num_features)
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.use_scale = use_scale
        self.use_bias = use_bias
        self.track_running_stats = track_running_stats
        self.channel_axis = channel_axis
        self.axis_name = axis_name
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_fast_variance = use_fast_variance

    def __call__(self, x: Any, use_running_average: bool | None = None) -> Array:
        """Normalise ``x``; in training mode, update ``mean``/``var`` in place.

        Args:
          x: input of shape ``(N, *spatial, C)`` (channels on ``channel_axis``), at least one
            spatial axis.
          use_running_average: overrides the attribute for this call.

        Returns:
          The normalised input, same shape, dtype ``dtype`` (or inferred).
        """
        if not self.track_running_stats and use_running_average is None:
            # Instance statistics either way; the attribute may be None (as in linen).
            use_running_average = bool(self.use_running_average)
        use_running_average = first_from(
            use_running_average,
            self.use_running_average,
            error_msg=(
                "InstanceNorm: no use_running_average was given. Pass it to the constructor, "
                "at call time, or set it with model.train()/model.eval() or nnx.view(model, "
                "use_running_average=...)."
            ),
        )
        x = jnp.asarray(x)
        channels = num_channels("InstanceNorm", x, self.channel_axis)
        if channels != self.num_features:
            raise ValueError(
                f"InstanceNorm: the input has {channels} channels on channel_axis "
                f"{self.channel_axis} (shape {tuple(x.shape)}) but the layer was built with "
                f"num_features={self.num_features}."
            )

        training = not use_running_average
        tracking = self.track_running_stats
        y, new_mean, new_var = normalize(
            "InstanceNorm",
            x,
            self.scale[...] if self.scale is not None else None,
            self.bias[...] if self.bias is not None else None,
            self.mean[...] if tracking else None,
            self.var[...] if tracking else None,
            training=training,
            momentum=self.momentum,
            epsilon=self.epsilon,
            channel_axis=self.channel_axis,
            axis_name=self.axis_name if tracking and training else None,
            dtype=self.dtype,
            use_fast_variance=self.use_fast_variance,
        )
        if tracking and training:
            self.mean[...] = new_mean
            self.var[...] = new_var
        return y

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: set ``use_running_average`` when given.

        Args:
          use_running_average: True for eval (running statistics), False for training.
        """
        if use_running_average is not None:
            self.use_running_average = use_running_average
