"""A minimal Lucid-style ``Module``: parameters, buffers, train/eval, state dicts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from lucid_jax.nn._buffer import Buffer, Parameter


class Module:
    """Base class for Lucid-style modules holding :class:`Parameter`\\ s and :class:`Buffer`\\ s.

    Assigning an array to an attribute that holds a Parameter (or Buffer) keeps it one, so
    ``m.weight = array`` and ``m.weight.data = array`` both work.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_state", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        state: OrderedDict[str, Buffer | None] = self.__dict__.get("_state")  # type: ignore[assignment]
        if state is not None and (isinstance(value, Buffer) or name in state):
            current = state.get(name)
            if value is not None and not isinstance(value, Buffer):
                if current is None:
                    raise TypeError(
                        f"{type(self).__name__}.{name} is None (disabled by the module's "
                        "options); it cannot be given an array."
                    )
                value = type(current)(value)
            state[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("_state", {})
        if name in state:
            return state[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Module:
        """Switch to training mode (``mode=False``: evaluation); returns the module."""
        object.__setattr__(self, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode; returns the module."""
        return self.train(False)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for name, value in self._state.items():
            if isinstance(value, Parameter):
                yield name, value

    def parameters(self) -> Iterator[Parameter]:
        return (value for _, value in self.named_parameters())

    def named_buffers(self) -> Iterator[tuple[str, Buffer]]:
        for name, value in self._state.items():
            if isinstance(value, Buffer) and not isinstance(value, Parameter):
                yield name, value

    def buffers(self) -> Iterator[Buffer]:
        return (value for _, value in self.named_buffers())

    def state_dict(self) -> OrderedDict[str, jax.Array]:
        """Parameters and buffers by name (arrays are immutable, so this is a snapshot)."""
        return OrderedDict(
            (name, value.data) for name, value in self._state.items() if value is not None
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load arrays by name; checks every key and shape before changing anything."""
        own = {name: value for name, value in self._state.items() if value is not None}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected "
                f"keys {unexpected}; expected exactly {sorted(own)}."
            )
        updates = {}
        for name in set(own) & set(state_dict):
            array = jnp.asarray(state_dict[name])
            if array.shape != own[name].shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {name!r} must have shape "
                    f"{own[name].shape}; got {tuple(array.shape)}."
                )
            updates[name] = array.astype(own[name].dtype)
        for name, array in updates.items():
            own[name].data = array
