r"""A Lucid `InstanceNorm` state dict as the Flax layers' variables, and Lucid's momentum as Flax's.

Lucid names an instance norm's state `weight`, `bias` (the affine parameters) and
`running_mean`, `running_var` (the buffers); the Flax layers name the same arrays `scale`,
`bias` (linen's `params` collection, nnx's `nnx.Param`) and `mean`, `var` (linen's
`batch_stats`, nnx's `nnx.BatchStat`). They are per-channel vectors in either layout.

The momenta weigh opposite terms. Lucid:
$\text{new} = m_\text{Lucid}\,\text{batch} + (1 - m_\text{Lucid})\,\text{old}$;
Flax: $\text{new} = m_\text{Flax}\,\text{old} + (1 - m_\text{Flax})\,\text{batch}$; so
$m_\text{Flax} = 1 - m_\text{Lucid}$.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lucid_jax.flax._common import check_momentum

__all__ = ["flax_momentum_from_lucid", "linen_variables_from_lucid", "load_lucid_into_nnx"]

#: Lucid state dict name -> (Flax variable name, linen collection).
_FLAX_NAMES = {
    "weight": ("scale", "params"),
    "bias": ("bias", "params"),
    "running_mean": ("mean", "batch_stats"),
    "running_var": ("var", "batch_stats"),
}


def flax_momentum_from_lucid(momentum: float | None = 0.1) -> float:
    r"""The Flax layers' `momentum` that updates running statistics as Lucid's `momentum` does.

    Lucid weighs the new batch statistic by `momentum`, Flax the old running value:
    $m_\text{Flax} = 1 - m_\text{Lucid}$. `None` is Lucid's module default, 0.1.

    Args:
        momentum: Lucid's momentum, in $[0, 1]$, or None.

    Returns:
        Flax's momentum.

    Raises:
        TypeError: `momentum` is not a real number or None.
        ValueError: `momentum` is outside $[0, 1]$.

    Examples:
        >>> from lucid_jax.flax import flax_momentum_from_lucid
        >>> flax_momentum_from_lucid(0.1)
        0.9
    """
    if momentum is None:
        momentum = 0.1
    if isinstance(momentum, jax.Array):  # a number only: the result is a layer's setting
        raise TypeError(
            "flax_momentum_from_lucid: momentum must be a Python real number in [0, 1] or "
            f"None; got {type(momentum).__name__} {momentum!r}."
        )
    check_momentum("flax_momentum_from_lucid", momentum, convention="lucid")
    return 1.0 - float(momentum)


def _key_prefix(caller: str, prefix: Any) -> str:
    """`prefix` as it starts the keys: `"1"` and `"1."` both give `"1."`."""
    if not isinstance(prefix, str):
        raise TypeError(f"{caller}: prefix must be a str such as '1.'; got {prefix!r}.")
    return prefix + "." if prefix and not prefix.endswith(".") else prefix


def _lucid_instance_norm_state(
    caller: str, state_dict: Mapping[str, ArrayLike], prefix: str
) -> dict[str, jax.Array]:
    """The instance norm's entries of `state_dict` under `prefix`, checked, by Lucid name."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{caller}: state_dict must be a mapping of names to arrays (as lucid_jax.load "
            f"returns); got {type(state_dict).__name__}."
        )
    prefix = _key_prefix(caller, prefix)
    found = {
        key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)
    }
    unknown = sorted(set(found) - set(_FLAX_NAMES))
    if unknown or not found:
        raise ValueError(
            f"{caller}: expected the keys of a Lucid InstanceNorm under prefix {prefix!r} "
            f"({', '.join(prefix + name for name in _FLAX_NAMES)}); "
            + (f"got unexpected {[prefix + n for n in unknown]}." if unknown else "found none.")
            + f" The state dict has {sorted(state_dict)}."
        )
    for pair in (("weight", "bias"), ("running_mean", "running_var")):
        if (pair[0] in found) != (pair[1] in found):
            raise ValueError(
                f"{caller}: a Lucid InstanceNorm has both {prefix}{pair[0]} and "
                f"{prefix}{pair[1]} or neither; the state dict has only one of them."
            )
    arrays = {name: jnp.asarray(value) for name, value in found.items()}
    shapes = {name: array.shape for name, array in arrays.items()}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(
            f"{caller}: a Lucid InstanceNorm's entries are vectors of one length (the channel "
            f"count); got shapes { {prefix + n: s for n, s in shapes.items()} }."
        )
    return arrays


def linen_variables_from_lucid(
    state_dict: Mapping[str, ArrayLike], prefix: str = ""
) -> dict[str, dict[str, jax.Array]]:
    r"""A Lucid `InstanceNorm` state dict as the variables of a linen `InstanceNorm`.

    The layer is [`linen.InstanceNorm`][lucid_jax.flax.linen.InstanceNorm].

    `weight`, `bias` become `params` `scale`, `bias`; `running_mean`, `running_var` become
    `batch_stats` `mean`, `var`. Arrays keep their dtype (Lucid's float64 when JAX's x64 mode
    is on); a collection the state dict has nothing for is left out, matching a layer built with
    `use_scale=use_bias=False` or without running statistics. Build the layer with
    `InstanceNorm.lucid(channel_axis=1)` (Lucid's eps, running statistics and momentum 0.1,
    channels first), or give `momentum=flax_momentum_from_lucid(lucid_momentum)` and
    `epsilon` for other Lucid settings.

    Args:
        state_dict: a Lucid state dict, e.g. from [`load`][lucid_jax.load].
        prefix: the instance norm's name in its parent (`"1"` or `"1."` for the keys
            `1.weight`, ...); empty for a layer's own state dict.

    Returns:
        `{"params": {"scale", "bias"}, "batch_stats": {"mean", "var"}}` (collections present in
        the state dict only), for `layer.apply(variables, x, ...)`.

    Raises:
        TypeError: `state_dict` is not a mapping or `prefix` not a str.
        ValueError: no instance norm entries under `prefix`, unexpected ones, half of a pair,
            or entries that are not vectors of one length.

    Examples:
        >>> import jax.numpy as jnp
        >>> from lucid_jax.flax import linen, linen_variables_from_lucid
        >>> state = {"1.weight": jnp.ones(3), "1.bias": jnp.zeros(3),
        ...          "1.running_mean": jnp.zeros(3), "1.running_var": jnp.ones(3)}
        >>> variables = linen_variables_from_lucid(state, prefix="1")
        >>> sorted(variables["params"]), sorted(variables["batch_stats"])
        (['bias', 'scale'], ['mean', 'var'])
        >>> layer = linen.InstanceNorm.lucid(channel_axis=1)
        >>> layer.apply(variables, jnp.ones((2, 3, 4, 4)), use_running_average=True).shape
        (2, 3, 4, 4)
    """
    arrays = _lucid_instance_norm_state("linen_variables_from_lucid", state_dict, prefix)
    variables: dict[str, dict[str, jax.Array]] = {}
    for lucid_name, array in arrays.items():
        flax_name, collection = _FLAX_NAMES[lucid_name]
        variables.setdefault(collection, {})[flax_name] = array
    return variables


def load_lucid_into_nnx(layer: Any, state_dict: Mapping[str, ArrayLike], prefix: str = "") -> None:
    r"""Set the variables of an nnx `InstanceNorm` from a Lucid state dict, in place.

    The layer is an [`nnx.InstanceNorm`][lucid_jax.flax.nnx.InstanceNorm].

    `weight`, `bias` go to the `nnx.Param`s `scale`, `bias`; `running_mean`, `running_var` to
    the `nnx.BatchStat`s `mean`, `var`, cast to the dtypes the layer holds. The layer must have
    exactly the variables the state dict has (same `use_scale`/`use_bias`,
    `track_running_stats` and channel count); everything is checked before anything changes.
    The momentum is the layer's own: `InstanceNorm.lucid(...)` has Lucid's 0.1; for another
    Lucid momentum, give `momentum=flax_momentum_from_lucid(lucid_momentum)`.

    Args:
        layer: the `lucid_jax.flax.nnx.InstanceNorm` to update in place.
        state_dict: a Lucid state dict, e.g. from [`load`][lucid_jax.load].
        prefix: the instance norm's name in its parent (`"1"` or `"1."`); empty for a layer's
            own state dict.

    Raises:
        TypeError: `state_dict` is not a mapping or `prefix` not a str.
        ValueError: the state dict's instance norm entries do not match the layer's variables
            (missing, extra, or of another shape), or are malformed.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lucid_jax.flax import load_lucid_into_nnx
        >>> from lucid_jax.flax.nnx import InstanceNorm
        >>> layer = InstanceNorm.lucid(3, channel_axis=1, rngs=nnx.Rngs(0))
        >>> load_lucid_into_nnx(layer, {"weight": jnp.full(3, 2.0), "bias": jnp.ones(3),
        ...                             "running_mean": jnp.zeros(3), "running_var": jnp.ones(3)})
        >>> layer.scale[...].tolist()
        [2.0, 2.0, 2.0]
    """
    from lucid_jax.flax.nnx import InstanceNorm

    caller = "load_lucid_into_nnx"
    if not isinstance(layer, InstanceNorm):
        raise TypeError(
            f"{caller}: layer must be a lucid_jax.flax.nnx.InstanceNorm; got "
            f"{type(layer).__name__} (for linen, use linen_variables_from_lucid)."
        )
    arrays = _lucid_instance_norm_state(caller, state_dict, prefix)
    prefix = _key_prefix(caller, prefix)
    targets = {}
    for lucid_name, (flax_name, _) in _FLAX_NAMES.items():
        variable = getattr(layer, flax_name, None)
        if (variable is None) != (lucid_name not in arrays):
            raise ValueError(
                f"{caller}: the layer {'lacks' if variable is None else 'has'} {flax_name!r} "
                f"but the state dict {'has' if variable is None else 'lacks'} "
                f"{prefix}{lucid_name}: build the layer with the options of the Lucid module "
                "(affine -> use_scale/use_bias, track_running_stats)."
            )
        if variable is None:
            continue
        current = variable[...]
        if current.shape != arrays[lucid_name].shape:
            raise ValueError(
                f"{caller}: the layer's {flax_name!r} has shape {current.shape}; the state "
                f"dict's {prefix}{lucid_name} has {arrays[lucid_name].shape}."
            )
        targets[flax_name] = (variable, arrays[lucid_name].astype(current.dtype))
    for variable, value in targets.values():
        variable[...] = value
