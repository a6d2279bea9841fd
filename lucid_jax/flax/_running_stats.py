"""Checkpoints across the switch: Flax's layer (no running statistics) <-> Lucid's running ones.

A model built with Flax's `InstanceNorm` (or ours by default) has `params` only; the same
model built with `track_running_stats=True` also has running statistics (linen's
`batch_stats` `mean`/`var`, nnx's `nnx.BatchStat` `mean`/`var`). These helpers carry every
variable the two share and add freshly initialised statistics (mean 0, var 1, as `init`
leaves them) or drop them. Anything else that differs is refused, before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

__all__ = ["linen_variables_for", "load_nnx_state"]

#: A running statistic's name, and how a fresh one starts (as the layers initialise them).
_FRESH = {"mean": jnp.zeros, "var": jnp.ones}


def _is_running_stat(path: tuple, *, linen: bool) -> bool:
    return path[-1] in _FRESH and (not linen or path[0] == "batch_stats")


def _describe(paths: list[tuple]) -> str:
    return ", ".join("/".join(map(str, path)) for path in paths)


def _carry_over(
    caller: str, target: dict[tuple, Any], source: dict[tuple, Any], *, linen: bool
) -> dict[tuple, Any]:
    """`target`'s paths with `source`'s values, fresh running statistics for those it lacks.

    `target` maps paths to arrays or shape/dtype structs; `source` paths to arrays. Paths
    the source has and the target not are dropped when they are running statistics.
    """
    missing = [p for p in target if p not in source and not _is_running_stat(p, linen=linen)]
    extra = [p for p in source if p not in target and not _is_running_stat(p, linen=linen)]
    if missing or extra:
        raise ValueError(
            f"{caller}: the variables do not belong to the same model (only running "
            "statistics may differ):"
            + (f" missing {_describe(missing)};" if missing else "")
            + (f" unexpected {_describe(extra)};" if extra else "")
            + " check that the model is built as the checkpoint's, but for track_running_stats."
        )
    result = {}
    for path, spec in target.items():
        if path not in source:
            result[path] = _FRESH[path[-1]](spec.shape, spec.dtype)
            continue
        value = jnp.asarray(source[path])
        if value.shape != tuple(spec.shape):
            raise ValueError(
                f"{caller}: {_describe([path])} has shape {value.shape} in the variables given "
                f"but {tuple(spec.shape)} in the model."
            )
        result[path] = value
    return result


def linen_variables_for(
    model: Any, variables: Mapping[str, Any], *example_args: Any, **example_kwargs: Any
) -> dict[str, Any]:
    """`variables` of the same linen model built with or without running statistics, as `model`'s.

    Every variable the two share is carried over (the `params` and any other collection);
    the running statistics (`batch_stats` `mean`/`var`) `model` has and `variables` lacks
    are freshly initialised (mean 0, var 1, as `init` leaves them); those `variables` has and
    `model` lacks are dropped. So a checkpoint of a model built with Flax's `InstanceNorm`
    loads into one with `InstanceNorm(track_running_stats=True)` (or `InstanceNorm.lucid()`),
    and back. `model`'s variables are found with `jax.eval_shape` (nothing is computed).

    Args:
        model: the linen model whose variables are wanted.
        variables: the other model's variables (`{"params": ..., ...}`), e.g. a checkpoint.
        *example_args: what `model.init` takes after its key, e.g. an example input.
        **example_kwargs: `model.init`'s keyword arguments (e.g. `train=False`).

    Returns:
        `model`'s variables, a nested dict.

    Raises:
        TypeError: `variables` is not a mapping.
        ValueError: the two differ in anything but running statistics (a missing or extra
            variable, another shape).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from lucid_jax.flax import linen_variables_for
        >>> from lucid_jax.flax.linen import InstanceNorm
        >>> x = jnp.ones((2, 4, 4, 3))
        >>> flax_variables = nn.InstanceNorm().init(jax.random.key(0), x)  # Flax's layer
        >>> tracking = InstanceNorm.lucid()
        >>> variables = linen_variables_for(tracking, flax_variables, x, use_running_average=True)
        >>> jax.tree.map(jnp.shape, variables)["batch_stats"]
        {'mean': (3,), 'var': (3,)}
        >>> back = linen_variables_for(InstanceNorm(), variables, x)
        >>> sorted(back)
        ['params']
    """
    caller = "linen_variables_for"
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"{caller}: variables must be a mapping of collections (as model.init returns); "
            f"got {type(variables).__name__}."
        )
    template = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *example_args, **example_kwargs)
    )
    target = flatten_dict(unfreeze(template))
    source = flatten_dict(unfreeze(dict(variables)))
    return unflatten_dict(_carry_over(caller, target, source, linen=True))


def load_nnx_state(model: nnx.Module, source: Any) -> None:
    """Set an nnx model's variables from the same model built with or without running statistics.

    In place. `source` is the other model, its `nnx.state`, or that state's pure dict (e.g.
    a checkpoint restored with Orbax). Every variable the two share is copied; the running
    statistics (`mean`/`var`) `model` has and `source` lacks are freshly initialised (mean 0,
    var 1); those `source` has and `model` lacks are dropped. So a model built with Flax's
    `nnx.InstanceNorm` loads into one with `InstanceNorm(..., track_running_stats=True)` (or
    `InstanceNorm.lucid(...)`), and back. Everything is checked before anything changes.

    Args:
        model: the nnx model to update.
        source: an nnx model, an `nnx.State`, or a nested dict of arrays (a pure state).

    Raises:
        TypeError: `model` is not an nnx Module, or `source` none of the above.
        ValueError: the two differ in anything but running statistics.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lucid_jax.flax import load_nnx_state
        >>> from lucid_jax.flax.nnx import InstanceNorm
        >>> flax_layer = nnx.InstanceNorm(3, rngs=nnx.Rngs(0))          # Flax's layer
        >>> flax_layer.scale[...] = jnp.full(3, 2.0)
        >>> tracking = InstanceNorm.lucid(3, rngs=nnx.Rngs(1))
        >>> load_nnx_state(tracking, flax_layer)
        >>> tracking.scale[...].tolist(), tracking.var[...].tolist()
        ([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    """
    caller = "load_nnx_state"
    if not isinstance(model, nnx.Module):
        raise TypeError(f"{caller}: model must be an nnx.Module; got {type(model).__name__}.")
    if isinstance(source, nnx.Module):
        source = nnx.state(source)
    if isinstance(source, nnx.State):
        source = nnx.to_pure_dict(source)
    if not isinstance(source, Mapping):
        raise TypeError(
            f"{caller}: source must be an nnx model, an nnx.State or a pure dict of its "
            f"arrays; got {type(source).__name__}."
        )
    state = nnx.state(model)
    target: dict[tuple, Any] = flatten_dict(nnx.to_pure_dict(state))
    values = _carry_over(caller, target, flatten_dict(dict(source)), linen=False)
    values = {  # the model's dtypes (a key array, e.g. an rng stream's, is never cast)
        path: value if value.dtype == target[path].dtype else value.astype(target[path].dtype)
        for path, value in values.items()
    }
    nnx.replace_by_pure_dict(state, unflatten_dict(values))
    nnx.update(model, state)
