"""`functional_call`: run a Lucid-style module as a pure function of its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from lucid_jax.nn._buffer import read_together
from lucid_jax.nn._module import Module
from lucid_jax.nn._overrides import Slot, overriding
from lucid_jax.nn._state_checks import checked_state_value, split_state_keys


def functional_call(
    module: Module, state: Mapping[str, Any], *args: Any, **kwargs: Any
) -> tuple[Any, dict[str, jax.Array]]:
    r"""Call `module(*args, **kwargs)` with the given state, purely; return output and new state.

    In the spirit of `torch.func.functional_call`: `state` maps `state_dict` keys to arrays;
    every key left out takes the module's current value (all read as one snapshot, so a
    `load_state_dict` in another thread is seen whole or not at all). The module runs with
    these values and its object is **not changed**, even if the call raises; another thread
    may use the module meanwhile and sees its own arrays. Every Buffer the module would
    update in place (the running statistics of an `InstanceNorm*` in training) comes back
    updated in the new state. So training steps compose with `jax.jit`, `jax.grad`,
    `jax.value_and_grad` and `jax.vmap`:

    $$(y, s') = f(s, x), \qquad
    \nabla_p \, \ell\big(f(p \cup b, x)\big) \text{ over the parameters } p.$$

    The module's mode applies: call `model.train()` or `model.eval()` before. Under
    `jax.jit`, values taken from the module (the keys left out of `state`) are read when the
    function is traced and stay fixed in the compiled program: pass every array that changes
    between calls, such as the running statistics of a training loop, in `state`.

    Args:
      module: the [`Module`][lucid_jax.nn.Module] to run.
      state: arrays (or tracers) by `state_dict` key; each of its entry's shape and dtype
        family (floating or integer). A Parameter shared under several keys may be given
        under one of them, or under several with the same object.
      *args: passed to the module.
      **kwargs: passed to the module.

    Returns:
      `(output, new_state)`: the module's output and a dict of every `state_dict` key (in
      `state_dict` order) to its value after the call.

    Raises:
      TypeError: `module` is not a Module, `state` not a mapping, or a value not an array of
        the entry's dtype family.
      ValueError: a key is not in the module's `state_dict`, a value has another shape, or
        shared entries are given different values.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from lucid_jax import nn
      >>> norm = nn.InstanceNorm1d(2)
      >>> params = {k: v for k, v in norm.state_dict().items() if "running" not in k}
      >>> def loss(params, x):
      ...     y, new_state = nn.functional_call(norm, params, x)
      ...     return jnp.mean(y**2), new_state
      >>> x = jnp.arange(8.0).reshape(1, 2, 4)
      >>> (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, x)
      >>> new_state["running_mean"]
      Array([0.15, 0.55], dtype=float32)
      >>> norm.running_mean  # unchanged
      Buffer([0., 0.], dtype=float32)
    """
    if not isinstance(module, Module):
        raise TypeError(
            f"functional_call: module must be a lucid_jax.nn.Module; got {type(module).__name__}."
        )
    holders = module.state_dict(keep_vars=True)
    _, unexpected = split_state_keys("functional_call", "state", state, holders)
    if unexpected:
        raise ValueError(
            f"functional_call: keys {unexpected} are not in {type(module).__name__}'s "
            f"state_dict; expected some of {list(holders)}."
        )
    # One slot per holder, so a Parameter shared under several keys stays one value. The
    # module's values are read as one snapshot, so a concurrent load_state_dict is seen whole.
    unique = list({id(holder): holder for holder in holders.values()}.values())
    slots = {
        id(holder): Slot(holder, value)
        for holder, value in zip(unique, read_together(unique), strict=True)
    }
    given_under: dict[int, str] = {}
    for key, value in state.items():
        holder = holders[key]
        checked = checked_state_value("functional_call", key, value, holder)
        first = given_under.setdefault(id(holder), key)
        if first != key and state[first] is not value:
            raise ValueError(
                f"functional_call: {first!r} and {key!r} are one shared entry of the module but "
                "were given different values; give it under one key."
            )
        slots[id(holder)].value = checked
    with overriding(slots):
        output = module(*args, **kwargs)
    new_state = {key: slots[id(holder)].value for key, holder in holders.items()}
    return output, new_state
