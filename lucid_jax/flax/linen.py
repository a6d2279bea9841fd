"""``flax.linen`` face of Lucid's instance norm: :class:`InstanceNorm`.

A thin layer over :func:`lucid_jax.instance_norm`: it declares the variables (``params`` and,
when tracking, ``batch_stats``), converts Flax's conventions to Lucid's, and calls the pure
function. It computes no statistics itself.

Conventions (Flax's, as :class:`flax.linen.BatchNorm`)::

    training (use_running_average=False):
        y = (x - mean_nc) / sqrt(var_nc + epsilon) * scale_c + bias_c     (instance stats)
        mean <- momentum * mean + (1 - momentum) * mean_n(mean_nc)         (Flax momentum)
        var  <- momentum * var  + (1 - momentum) * mean_n(var_nc)          (biased variance)
    eval (use_running_average=True):
        y = (x - mean) / sqrt(var + epsilon) * scale_c + bias_c            (running stats)

Flax's ``momentum`` is the weight of the *old* value, Lucid's the weight of the *new* batch
statistic: ``lucid_momentum = 1 - flax_momentum`` (Flax 0.9 is Lucid/PyTorch's 0.1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer
from jax.nn import initializers

from lucid_jax._core import statistics_dtype
from lucid_jax.flax._common import normalize, num_channels

Array = jax.Array

__all__ = ["InstanceNorm"]


# --- the linen module ----------------------------------------------------------------------


class InstanceNorm(nn.Module):
    """Instance normalisation with Lucid's running statistics, as a ``flax.linen`` Module.

    Each sample's channels are normalised by their own statistics over the spatial axes
    (every axis but the batch axis 0 and ``channel_axis``)::

        y[n, ..., c] = (x[n, ..., c] - mean[n, c]) / sqrt(var[n, c] + epsilon) * scale[c] + bias[c]

    with the biased variance. When ``track_running_stats``, training mode also keeps running
    averages of the batch-averaged instance statistics in the ``batch_stats`` collection, with
    Flax's momentum convention::

        batch_stats.mean <- momentum * batch_stats.mean + (1 - momentum) * mean_n(mean[n, :])
        batch_stats.var  <- momentum * batch_stats.var  + (1 - momentum) * mean_n(var[n, :])

    and eval mode (``use_running_average=True``) normalises with them instead. The work is done
    by :func:`lucid_jax.instance_norm` (Lucid 2.14.5 semantics), called with
    ``momentum=1 - self.momentum``.

    Like :class:`flax.linen.BatchNorm`, ``init`` leaves ``batch_stats`` at zeros/ones, and a
    training-mode ``apply`` updates them when ``batch_stats`` is mutable
    (``mutable=['batch_stats']``); when it is not, the output is the same (instance
    statistics) and the stored statistics are left as they are.

    With ``track_running_stats=False`` there is no ``batch_stats`` collection, the output always
    uses instance statistics, ``use_running_average`` may be omitted, and the layer is a drop-in
    for ``flax.linen.InstanceNorm(feature_axes=channel_axis, use_fast_variance=False)``: same
    ``params`` names and shapes, same output (note the different default ``epsilon``: Flax's
    is 1e-6).

    Attributes:
      use_running_average: if True, normalise with ``batch_stats`` (eval); if False, with
        instance statistics, updating ``batch_stats`` (training). Give it here or at call time
        (not both), as :func:`flax.linen.merge_param` requires. With
        ``track_running_stats=False``, True falls back to instance statistics (as Lucid).
      momentum: Flax convention, the weight of the *old* running value:
        ``new = momentum * old + (1 - momentum) * batch``. Lucid's (and PyTorch's) momentum is
        ``1 - momentum``: Flax 0.9 is Lucid 0.1, Flax 0.99 (the default) is Lucid 0.01.
      epsilon: added to the variance (Lucid's ``eps``).
      use_scale: learn a per-channel ``scale`` (initialised by ``scale_init``, ones).
      use_bias: learn a per-channel ``bias`` (initialised by ``bias_init``, zeros).
      track_running_stats: keep ``batch_stats`` ``mean`` (zeros) and ``var`` (ones).
      channel_axis: the channel axis (Flax layout: -1, the default; Lucid's layout: 1). Not 0.
      axis_name: a ``shard_map``/``pmap`` axis name: the batch averages feeding the running
        statistics are also averaged over it, so every shard stores the global-batch update.
        The output is per sample and needs no synchronisation.
      dtype: the output dtype (default: inferred from input and params, as Flax).
      param_dtype: the dtype of ``scale`` and ``bias`` (running statistics are kept in at least
        float32).
      scale_init: initializer for ``scale``.
      bias_init: initializer for ``bias``.
      use_fast_variance: take the variance in one pass, ``E[x²] - E[x]²`` (fastest; accurate
        only for data near zero). The default, False, takes the mean first and the moments
        around it: accurate at any mean (Flax's ``use_fast_variance=False`` is also
        two-pass, but centres on its rounded float32 mean).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lucid_jax.flax.linen import InstanceNorm
      >>> x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2.0 + 1.0   # NHWC
      >>> layer = InstanceNorm(momentum=0.9)                  # Flax 0.9 == Lucid 0.1
      >>> variables = layer.init(jax.random.key(1), x, use_running_average=False)
      >>> jax.tree.map(jnp.shape, variables)
      {'batch_stats': {'mean': (3,), 'var': (3,)}, 'params': {'bias': (3,), 'scale': (3,)}}
      >>> y, updates = layer.apply(
      ...     variables, x, use_running_average=False, mutable=["batch_stats"])
      >>> bool(jnp.allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5))
      True
      >>> mean = updates["batch_stats"]["mean"]                  # 0.9 * 0 + 0.1 * batch mean
      >>> bool(jnp.allclose(mean, 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-6))
      True
      >>> variables = {**variables, **updates}
      >>> layer.apply(variables, x, use_running_average=True).shape   # eval: running stats
      (4, 5, 5, 3)
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    track_running_stats: bool = True
    channel_axis: int = -1
    axis_name: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = initializers.ones
    bias_init: Initializer = initializers.zeros
    use_fast_variance: bool = False

    @nn.compact
    def __call__(self, x: Any, use_running_average: bool | None = None) -> Array:
        """Normalise ``x``.

        Args:
          x: input of shape ``(N, *spatial, C)`` (channels on ``channel_axis``), at least one
            spatial axis.
          use_running_average: as the attribute; give it here or there, not both.

        Returns:
          The normalised input, same shape, dtype ``dtype`` (or inferred).
        """
        use_running_average = self._merge_use_running_average(use_running_average)
        x = jnp.asarray(x)
        feature_shape = (num_channels("InstanceNorm", x, self.channel_axis),)

        scale = (
            self.param("scale", self.scale_init, feature_shape, self.param_dtype)
            if self.use_scale
            else None
        )
        bias = (
            self.param("bias", self.bias_init, feature_shape, self.param_dtype)
            if self.use_bias
            else None
        )

        running_mean = running_var = None
        update = False
        if self.track_running_stats:
            running_dtype = statistics_dtype(self.param_dtype)
            ra_mean = self.variable(
                "batch_stats", "mean", lambda s: jnp.zeros(s, running_dtype), feature_shape
            )
            ra_var = self.variable(
                "batch_stats", "var", lambda s: jnp.ones(s, running_dtype), feature_shape
            )
            update = (
                not use_running_average
                and not self.is_initializing()
                and self.is_mutable_collection("batch_stats")
            )
            if use_running_average or update:
                running_mean, running_var = ra_mean.value, ra_var.value

        y, new_mean, new_var = normalize(
            "InstanceNorm",
            x,
            scale,
            bias,
            running_mean,
            running_var,
            training=not use_running_average,
            momentum=self.momentum,
            epsilon=self.epsilon,
            channel_axis=self.channel_axis,
            # The named axis need only exist when the running statistics are updated.
            axis_name=self.axis_name if update else None,
            dtype=self.dtype,
            use_fast_variance=self.use_fast_variance,
        )
        if update:
            ra_mean.value = new_mean
            ra_var.value = new_var
        return y

    def _merge_use_running_average(self, call_value: bool | None) -> bool:
        if not self.track_running_stats and self.use_running_average is None and call_value is None:
            return False  # nothing to choose between: instance statistics either way
        return bool(nn.merge_param("use_running_average", self.use_running_average, call_value))
