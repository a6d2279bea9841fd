"""`flax.nnx` face of Lucid's instance norm: [`InstanceNorm`][lucid_jax.flax.nnx.InstanceNorm].

Flax's `nnx.InstanceNorm` by default, Lucid's running statistics opt-in. The same thin layer
as [`linen.InstanceNorm`][lucid_jax.flax.linen.InstanceNorm] (it shares its call into
[`instance_norm`][lucid_jax.instance_norm]), with state held the nnx way: `nnx.Param`
`scale` and `bias` and, with running statistics, `nnx.BatchStat` `mean` and `var`, updated in
place in training mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Axes, Dtype, Initializer, PromoteDtypeFn
from jax.typing import ArrayLike

from lucid_jax.flax import _common
from lucid_jax.functional import check_num_features, statistics_dtype

Array = jax.Array

__all__ = ["InstanceNorm"]


class InstanceNorm(nnx.Module):
    r"""`flax.nnx.InstanceNorm`, with Lucid's running statistics as an option.

    Each sample is normalised per feature by its own statistics over every other axis but
    the batch axis 0 (the feature axes are `feature_axes`, channels last by default), with
    the biased variance:

    $$
    y_{n\ldots c} = \frac{x_{n\ldots c} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}}\,
    \gamma_c + \beta_c
    $$

    **By default it is Flax's layer**: the same arguments and defaults (`epsilon=1e-6`), the
    same state (`nnx.Param` `scale`, `bias`, nothing else), so Flax nnx checkpoints load and
    `.train()`/`.eval()` change nothing (instance statistics always, as Flax's); an input with
    nothing left to normalise over (e.g. `(N, features)`) gives the bias, as Flax's. One
    default differs: `use_fast_variance` is False (two-pass variance, accurate at any
    mean); with `use_fast_variance=True` the output equals Flax's bit for bit. Masked
    statistics (`mask`) are not supported.

    **Running statistics** are opt-in: `track_running_stats=True` adds `nnx.BatchStat`
    `mean` (zeros) and `var` (ones). Training mode (`use_running_average=False`, set by
    `.train()`) then updates them in place with Flax's momentum convention (`m` is
    `momentum`, the weight of the *old* value):

    $$
    \text{mean} \leftarrow m\,\text{mean} + (1 - m)\,\tfrac1N \textstyle\sum_n \mu_{n},
    \qquad
    \text{var} \leftarrow m\,\text{var} + (1 - m)\,\tfrac1N \textstyle\sum_n \sigma^2_{n}
    $$

    and eval mode (`use_running_average=True`, set by `.eval()`) normalises with them.
    `InstanceNorm.lucid(num_features, rngs=...)` builds Lucid's whole behaviour
    (`epsilon=1e-5`, running statistics, Lucid's momentum 0.1, Flax's 0.9);
    [`load_nnx_state`][lucid_jax.flax.load_nnx_state] moves a checkpoint between the two.

    Args:
      num_features: the number of features: the size of the feature axis (of all of
        `feature_axes` together).
      momentum: Flax convention, the weight of the *old* running value (with running
        statistics). Lucid's (and PyTorch's) momentum is `1 - momentum`: Flax 0.9 is Lucid
        0.1, Flax 0.99 (the default) is Lucid 0.01.
      epsilon: added to the variance; Flax's default 1e-6 (Lucid's is 1e-5).
      use_running_average: with running statistics: True normalises with them (eval);
        False with instance statistics, updating them (training). `.train()`/`.eval()`
        and `nnx.view` set it; a value given at call time takes precedence. Without
        running statistics it changes nothing.
      use_scale: learn a per-feature `scale` (`nnx.Param`, initialised by `scale_init`).
      use_bias: learn a per-feature `bias` (`nnx.Param`, initialised by `bias_init`).
      track_running_stats: False (the default, Flax's layer): no running statistics.
        True: keep Lucid's, `nnx.BatchStat` `mean` (zeros) and `var` (ones).
      feature_axes: the feature (channel) axes, one int or a sequence (Flax's meaning);
        every other axis but 0 is normalised over. Default -1 (channels last).
      channel_axis: Lucid's name for one feature axis (e.g. 1 for Lucid's layout); give
        this or `feature_axes`, not both.
      axis_name: Flax's meaning: a `shard_map`/`pmap` axis over which every instance is
        split (each device holds an equal share of each instance, e.g. the spatial axes are
        sharded): the per-instance statistics are averaged over it (`lax.pmean`).
      axis_index_groups: `lax.pmean`'s groups of `axis_name`'s indices (with `axis_name`).
      batch_axis_name: a `shard_map`/`pmap` axis over which the *batch* is split: the batch
        averages feeding the running statistics are also averaged over it, so every shard
        stores the global-batch update.
      dtype: the output dtype (default: inferred from input and params, as Flax).
      param_dtype: the dtype of `scale` and `bias` (running statistics are kept in at least
        float32).
      scale_init: initializer for `scale` (ones).
      bias_init: initializer for `bias` (zeros).
      use_fast_variance: take the variance in one pass, `E[x²] - E[x]²`, Flax's formula
        (fastest; accurate only for data near zero). The default, False, is two-pass:
        accurate at any mean.
      promote_dtype: Flax's hook, called as `promote_dtype((x, scale, bias), dtype=dtype)`
        before normalising. The default is Flax's rule (all three cast to `dtype`, else to
        their common type), made to work under strict dtype promotion too.
      rngs: `nnx.Rngs` for the initializers (the `params` stream).
      bias_metadata: metadata for the `bias` `nnx.Param` (e.g. sharding).
      scale_metadata: metadata for the `scale` `nnx.Param`.

    Raises:
      ValueError: `num_features` that is not a positive int, `momentum` outside [0, 1], a
        negative `epsilon`, or both `feature_axes` and `channel_axis`.
      TypeError: a `momentum` or `epsilon` that is not a number.

    Examples:
      Flax's layer, by default:

      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from lucid_jax.flax.nnx import InstanceNorm
      >>> x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2.0 + 1.0   # NHWC
      >>> layer = InstanceNorm(3, rngs=nnx.Rngs(0))
      >>> sorted(nnx.to_pure_dict(nnx.state(layer)))
      ['bias', 'scale']
      >>> y = layer(x)
      >>> bool(jnp.allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5))
      True

      Lucid's running statistics, opt-in:

      >>> layer = InstanceNorm(3, track_running_stats=True, momentum=0.9, rngs=nnx.Rngs(0))
      >>> y = layer(x)                                              # training: updates stats
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
        epsilon: float = 1e-6,
        use_running_average: bool | None = False,
        use_scale: bool = True,
        use_bias: bool = True,
        track_running_stats: bool = False,
        feature_axes: Axes = -1,
        channel_axis: int | None = None,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
        batch_axis_name: str | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer = nnx.initializers.ones,
        bias_init: Initializer = nnx.initializers.zeros,
        use_fast_variance: bool = False,
        promote_dtype: PromoteDtypeFn = _common.promote_dtype,
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
        scale_metadata: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        self.num_features: int = check_num_features(num_features, "InstanceNorm")
        shape = (self.num_features,)
        _common.check_settings("InstanceNorm", momentum=momentum, epsilon=epsilon)
        _common.choose_feature_axes("InstanceNorm", feature_axes, channel_axis)

        self.scale: nnx.Param[Array] | None
        if use_scale:
            self.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype), **scale_metadata)
        else:
            self.scale = nnx.data(None)
        self.bias: nnx.Param[Array] | None
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype), **bias_metadata)
        else:
            self.bias = nnx.data(None)

        self.mean: nnx.BatchStat[Array] | None
        self.var: nnx.BatchStat[Array] | None
        if track_running_stats:
            running_dtype = statistics_dtype(jnp.dtype(param_dtype))
            self.mean = nnx.BatchStat(jnp.zeros(shape, running_dtype))
            self.var = nnx.BatchStat(jnp.ones(shape, running_dtype))
        else:  # no state: the layer's state is Flax's
            self.mean = nnx.data(None)
            self.var = nnx.data(None)

        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.use_scale = use_scale
        self.use_bias = use_bias
        self.track_running_stats = track_running_stats
        self.feature_axes = feature_axes
        self.channel_axis = channel_axis
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.batch_axis_name = batch_axis_name
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *, mask: Any = None
    ) -> Array:
        """Normalise `x`; in training mode, update `mean`/`var` in place.

        Args:
          x: input with the batch on axis 0 and the features on `feature_axes`, e.g.
            `(N, H, W, C)`; every other axis is normalised over (with none, e.g. `(N, C)`,
            the output is the bias, as Flax's).
          use_running_average: overrides the attribute for this call.
          mask: Flax's masked statistics; only `None` is supported.

        Returns:
          The normalised input, same shape, dtype `dtype` (or inferred).

        Raises:
          ValueError: bad feature axes, a scalar input, a zero-size axis to normalise over,
            features that do not match `num_features`, a mask, or no `use_running_average`
            (with running statistics).
          TypeError: feature axes that are not ints.
        """
        x, feature_axes, name, value = _common.check_call(
            "InstanceNorm", x, self.feature_axes, self.channel_axis, mask
        )
        if not self.track_running_stats and use_running_average is None:
            # Instance statistics either way; the attribute may be None (as in linen).
            use_running_average = bool(self.use_running_average)
        use_running_average = _common.first_given(
            use_running_average,
            self.use_running_average,
            error=(
                "InstanceNorm: no use_running_average was given. Pass it to the constructor, "
                "at call time, or set it with model.train()/model.eval() or nnx.view(model, "
                "use_running_average=...)."
            ),
        )
        features = math.prod(_common.feature_shape(x, feature_axes))
        if features != self.num_features:
            raise ValueError(
                f"InstanceNorm: the input has {features} channels on {name} {value!r} "
                f"(shape {tuple(x.shape)}) but the layer was built with "
                f"num_features={self.num_features}."
            )

        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        training = not use_running_average
        mean, var = self.mean, self.var
        tracking = mean is not None and var is not None
        y, new_mean, new_var = _common.normalize(
            x,
            scale,
            bias,
            mean[...] if mean is not None else None,
            var[...] if var is not None else None,
            training=training,
            momentum=self.momentum,
            epsilon=self.epsilon,
            feature_axes=feature_axes,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            batch_axis_name=self.batch_axis_name if tracking and training else None,
            dtype=self.dtype,
            use_fast_variance=self.use_fast_variance,
        )
        if mean is not None and var is not None and training:
            mean[...] = new_mean
            var[...] = new_var
        return y

    @classmethod
    def lucid(cls, num_features: int, *, rngs: nnx.Rngs, **overrides: Any) -> InstanceNorm:
        """The layer with Lucid's whole behaviour, for porting Lucid models.

        `epsilon=1e-5`, `track_running_stats=True` and `momentum=0.9` (Lucid's 0.1 in
        Flax's convention); every other argument is Flax's default. `overrides` are
        arguments with their usual (Flax) meaning, e.g. `channel_axis=1` for Lucid's
        channels-first layout or `momentum=flax_momentum_from_lucid(m)` for a Lucid
        momentum `m`.

        Args:
          num_features: the number of features.
          rngs: `nnx.Rngs` for the initializers.
          **overrides: other arguments of the layer.

        Returns:
          The layer.

        Examples:
          >>> from flax import nnx
          >>> from lucid_jax.flax.nnx import InstanceNorm
          >>> layer = InstanceNorm.lucid(3, channel_axis=1, rngs=nnx.Rngs(0))
          >>> layer.epsilon, layer.track_running_stats, layer.momentum
          (1e-05, True, 0.9)
        """
        return cls(num_features, rngs=rngs, **{**_common.LUCID_PRESET, **overrides})

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by `nnx.view`: set `use_running_average` when given.

        Args:
          use_running_average: True for eval (running statistics), False for training.
        """
        if use_running_average is not None:
            self.use_running_average = use_running_average
