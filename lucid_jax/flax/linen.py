"""`flax.linen` face of Lucid's instance norm: [`InstanceNorm`][lucid_jax.flax.linen.InstanceNorm].

Flax's `InstanceNorm` by default, Lucid's running statistics opt-in. A thin layer over
[`instance_norm`][lucid_jax.instance_norm]: it declares the variables (`params` and, when
tracking, `batch_stats`), converts Flax's conventions to Lucid's, and calls the pure function.
It computes no statistics itself.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Axes, Dtype, Initializer
from jax.nn import initializers
from jax.typing import ArrayLike

from lucid_jax.flax import _common
from lucid_jax.functional import statistics_dtype

Array = jax.Array

__all__ = ["InstanceNorm"]


class InstanceNorm(nn.Module):
    r"""`flax.linen.InstanceNorm`, with Lucid's running statistics as an option.

    Each sample is normalised per feature by its own statistics over every other axis but
    the batch axis 0 (the feature axes are `feature_axes`, channels last by default), with
    the biased variance:

    $$
    y_{n\ldots c} = \frac{x_{n\ldots c} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}}\,
    \gamma_c + \beta_c
    $$

    **By default it is Flax's layer**: the same fields and defaults (`epsilon=1e-6`), the
    same `params` (`scale`, `bias`) and nothing else, no train flag, Flax's checkpoints load,
    and an input with nothing left to normalise over (e.g. `(N, features)` after a Dense
    layer) gives the bias, as Flax's. One default differs: `use_fast_variance` is False, the
    two-pass variance, accurate at any mean; with `use_fast_variance=True` (Flax's default)
    the output equals Flax's bit for bit. The two differ by the variance's rounding only
    (see [Flax layers](../flax.md)). Masked statistics (`mask`) are not supported.

    **Running statistics** (Lucid's `track_running_stats`) are opt-in:
    `track_running_stats=True` adds a `batch_stats` collection (`mean` zeros, `var` ones),
    and `use_running_average`, from the constructor or the call (as `flax.linen.BatchNorm`),
    then chooses: False normalises with instance statistics and, when `batch_stats` is
    mutable, updates the running averages of the batch-averaged instance statistics with
    Flax's momentum convention (`m` is `momentum`, the weight of the *old* value):

    $$
    \text{mean} \leftarrow m\,\text{mean} + (1 - m)\,\tfrac1N \textstyle\sum_n \mu_{n},
    \qquad
    \text{var} \leftarrow m\,\text{var} + (1 - m)\,\tfrac1N \textstyle\sum_n \sigma^2_{n}
    $$

    True normalises with them (eval). `InstanceNorm.lucid(...)` builds Lucid's whole
    behaviour: `epsilon=1e-5`, running statistics, Lucid's momentum 0.1 (Flax's 0.9).
    [`linen_variables_for`][lucid_jax.flax.linen_variables_for] moves a checkpoint between
    the two. The work is done by [`instance_norm`][lucid_jax.instance_norm].

    Attributes:
      use_running_average: with running statistics: True normalises with `batch_stats`
        (eval), False with instance statistics, updating `batch_stats` (training). Give it
        here or at call time (not both), as `flax.linen.merge_param` requires. Without
        running statistics it may be omitted and changes nothing.
      momentum: Flax convention, the weight of the *old* running value (with running
        statistics). Lucid's (and PyTorch's) momentum is `1 - momentum`: Flax 0.99 (the
        default) is Lucid 0.01.
      epsilon: added to the variance; Flax's default 1e-6 (Lucid's is 1e-5).
      use_scale: learn a per-feature `scale` (initialised by `scale_init`, ones).
      use_bias: learn a per-feature `bias` (initialised by `bias_init`, zeros).
      track_running_stats: False (the default, Flax's layer): no `batch_stats`. True:
        keep Lucid's running statistics, `batch_stats` `mean` (zeros) and `var` (ones).
      feature_axes: the feature (channel) axes, one int or a sequence (Flax's meaning): the
        variables have their shape, and every other axis but 0 is normalised over.
        Default -1 (channels last).
      channel_axis: Lucid's name for one feature axis (e.g. 1 for Lucid's layout); give
        this or `feature_axes`, not both.
      axis_name: Flax's meaning: a `shard_map`/`pmap` axis over which every instance is
        split (each device holds an equal share of each instance, e.g. the spatial axes
        are sharded): the per-instance statistics are averaged over it (`lax.pmean`).
      axis_index_groups: `lax.pmean`'s groups of `axis_name`'s indices (with `axis_name`).
      batch_axis_name: a `shard_map`/`pmap` axis over which the *batch* is split: the batch
        averages feeding the running statistics are also averaged over it, so every shard
        stores the global-batch update. The output does not depend on it.
      dtype: the output dtype (default: inferred from input and params, as Flax).
      param_dtype: the dtype of `scale` and `bias` (running statistics are kept in at least
        float32).
      scale_init: initializer for `scale`.
      bias_init: initializer for `bias`.
      use_fast_variance: take the variance in one pass, `E[x²] - E[x]²`, Flax's formula
        (fastest; accurate only for data near zero). The default, False, takes the mean
        first and the moments around it: accurate at any mean.
      force_float32_reductions: Flax's switch for statistics in at least float32. True
        (the default) is what this layer always does; False, which lets Flax reduce
        half-precision input in half precision, is accepted and still reduces in float32
        (more accurate; the output dtype follows the same rules).

    Raises:
      ValueError: (at construction) `momentum` outside [0, 1], a negative `epsilon`, or
        both `feature_axes` and `channel_axis`.
      TypeError: (at construction) a `momentum` or `epsilon` that is not a number.

    Examples:
      Flax's layer, by default:

      >>> import jax, jax.numpy as jnp
      >>> from lucid_jax.flax.linen import InstanceNorm
      >>> x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2.0 + 1.0   # NHWC
      >>> layer = InstanceNorm()
      >>> variables = layer.init(jax.random.key(1), x)
      >>> jax.tree.map(jnp.shape, variables)
      {'params': {'bias': (3,), 'scale': (3,)}}
      >>> y = layer.apply(variables, x)
      >>> bool(jnp.allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5))
      True

      Lucid's running statistics, opt-in:

      >>> layer = InstanceNorm(track_running_stats=True, momentum=0.9)  # Lucid's 0.1
      >>> variables = layer.init(jax.random.key(1), x, use_running_average=False)
      >>> jax.tree.map(jnp.shape, variables)
      {'batch_stats': {'mean': (3,), 'var': (3,)}, 'params': {'bias': (3,), 'scale': (3,)}}
      >>> y, updates = layer.apply(
      ...     variables, x, use_running_average=False, mutable=["batch_stats"])
      >>> mean = updates["batch_stats"]["mean"]                  # 0.9 * 0 + 0.1 * batch mean
      >>> bool(jnp.allclose(mean, 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-6))
      True
      >>> variables = {**variables, **updates}
      >>> layer.apply(variables, x, use_running_average=True).shape   # eval: running stats
      (4, 5, 5, 3)
      >>> InstanceNorm.lucid().epsilon, InstanceNorm.lucid().momentum  # Lucid's behaviour
      (1e-05, 0.9)
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-6
    use_scale: bool = True
    use_bias: bool = True
    track_running_stats: bool = False
    channel_axis: int | None = None
    axis_name: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = initializers.ones
    bias_init: Initializer = initializers.zeros
    use_fast_variance: bool = False
    feature_axes: Axes = -1
    axis_index_groups: Any = None
    force_float32_reductions: bool = True
    batch_axis_name: str | None = None

    def __post_init__(self) -> None:
        _common.check_settings("InstanceNorm", momentum=self.momentum, epsilon=self.epsilon)
        _common.choose_feature_axes("InstanceNorm", self.feature_axes, self.channel_axis)
        super().__post_init__()

    @classmethod
    def lucid(cls, **overrides: Any) -> InstanceNorm:
        """The layer with Lucid's whole behaviour, for porting Lucid models.

        `epsilon=1e-5`, `track_running_stats=True` and `momentum=0.9` (Lucid's 0.1 in
        Flax's convention); every other field is Flax's default. `overrides` are fields with
        their usual (Flax) meaning, e.g. `channel_axis=1` for Lucid's channels-first layout
        or `momentum=flax_momentum_from_lucid(m)` for a Lucid momentum `m`.

        Args:
          **overrides: fields of the layer.

        Returns:
          The layer.

        Examples:
          >>> from lucid_jax.flax.linen import InstanceNorm
          >>> layer = InstanceNorm.lucid(channel_axis=1)
          >>> layer.epsilon, layer.track_running_stats, layer.momentum
          (1e-05, True, 0.9)
        """
        return cls(**{**_common.LUCID_PRESET, **overrides})

    @nn.compact
    def __call__(
        self, x: ArrayLike, use_running_average: bool | None = None, *, mask: Any = None
    ) -> Array:
        """Normalise `x`.

        Args:
          x: input with the batch on axis 0 and the features on `feature_axes`, e.g.
            `(N, H, W, C)`; every other axis is normalised over (with none, e.g.
            `(N, C)`, the output is the bias, as Flax's).
          use_running_average: as the attribute; give it here or there, not both.
          mask: Flax's masked statistics; only `None` is supported.

        Returns:
          The normalised input, same shape, dtype `dtype` (or inferred).

        Raises:
          ValueError: bad feature axes, a scalar input, a zero-size axis to normalise over,
            a mask, or `use_running_average` given twice or (with running statistics) not
            at all.
          TypeError: feature axes that are not ints.
        """
        x, feature_axes, _, _ = _common.check_call(
            "InstanceNorm", x, self.feature_axes, self.channel_axis, mask
        )
        use_running_average = self._merge_use_running_average(use_running_average)
        shape = _common.feature_shape(x, feature_axes)

        scale = (
            self.param("scale", self.scale_init, shape, self.param_dtype)
            if self.use_scale
            else None
        )
        bias = (
            self.param("bias", self.bias_init, shape, self.param_dtype) if self.use_bias else None
        )

        running_mean: Array | None = None
        running_var: Array | None = None
        # The batch_stats variables when this call writes them: training, not initialising,
        # and the collection mutable.
        to_update: tuple[nn.Variable[Any], nn.Variable[Any]] | None = None
        if self.track_running_stats:
            running_dtype = statistics_dtype(jnp.dtype(self.param_dtype))
            ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, running_dtype)
            ra_var = self.variable("batch_stats", "var", jnp.ones, shape, running_dtype)
            if (
                not use_running_average
                and not self.is_initializing()
                and self.is_mutable_collection("batch_stats")
            ):
                to_update = (ra_mean, ra_var)
            if use_running_average or to_update is not None:
                running_mean, running_var = ra_mean.value, ra_var.value

        y, new_mean, new_var = _common.normalize(
            x,
            scale,
            bias,
            running_mean,
            running_var,
            training=not use_running_average,
            momentum=self.momentum,
            epsilon=self.epsilon,
            feature_axes=feature_axes,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            # The batch axis need only exist when the running statistics are updated.
            batch_axis_name=self.batch_axis_name if to_update is not None else None,
            dtype=self.dtype,
            use_fast_variance=self.use_fast_variance,
        )
        if to_update is not None and new_mean is not None and new_var is not None:
            mean_variable, var_variable = to_update
            mean_variable.value = new_mean
            var_variable.value = new_var
        return y

    def _merge_use_running_average(self, call_value: bool | None) -> bool:
        if not self.track_running_stats and self.use_running_average is None and call_value is None:
            return False  # nothing to choose between: instance statistics either way
        return bool(nn.merge_param("use_running_average", self.use_running_average, call_value))
