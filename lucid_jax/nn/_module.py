"""`Module`: Lucid's module system, children, parameters, buffers and dotted state dicts."""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lucid_jax.nn._buffer import Buffer, Parameter, holding_locks, read_together
from lucid_jax.nn._overrides import slot_of
from lucid_jax.nn._state_checks import loadable_state_value, split_state_keys

_REGISTRIES = ("_parameters", "_buffers", "_modules")


class Module:
    """Base class for Lucid-style modules, as `lucid.nn.Module`.

    Assigning a [`Parameter`][lucid_jax.nn.Parameter], a [`Buffer`][lucid_jax.nn.Buffer] or
    a `Module` to an attribute registers it, in assignment order; `state_dict()` then names
    every array by its dotted path (`"body.0.weight"`, `"norm.running_mean"`): the module's own
    parameters, its own buffers, then each child's, exactly as Lucid orders them.

    Assigning an array to an attribute that holds a Parameter (or Buffer) rebinds the name to
    a new Parameter (Buffer) holding that array, in its dtype: the name stays in `state_dict`
    (Lucid would drop it from the module), and a holder shared with another module is left to
    the other module. `m.weight.data = array` instead writes into the holder, shared or not.
    Assigning `None` unregisters the name, as in Lucid.

    Subclasses call `super().__init__()` first and define `forward`. To run a module as a pure
    function of its state (under `jax.jit`, `jax.grad`, `jax.vmap`) use
    [`functional_call`][lucid_jax.nn.functional_call].

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax import nn
      >>> class Scale(nn.Module):
      ...     def __init__(self, channels):
      ...         super().__init__()
      ...         self.scale = nn.Parameter(jnp.ones(channels))
      ...         self.norm = nn.InstanceNorm1d(channels, affine=False)
      ...     def forward(self, x):
      ...         return self.norm(x) * self.scale.data[:, None]
      >>> model = Scale(2)
      >>> list(model.state_dict())
      ['scale', 'norm.running_mean', 'norm.running_var']
      >>> model(jnp.arange(8.0).reshape(1, 2, 4)).shape
      (1, 2, 4)
    """

    training: bool

    def __init__(self) -> None:
        for registry in _REGISTRIES:
            object.__setattr__(self, registry, OrderedDict())
        object.__setattr__(self, "training", True)

    # Registration -----------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_modules" not in self.__dict__:
            if isinstance(value, (Buffer, Module)):
                raise AttributeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} {name!r} "
                    "before Module.__init__(); call super().__init__() first."
                )
            object.__setattr__(self, name, value)
            return
        if isinstance(value, Parameter):
            self._register(self._parameters, name, value)
        elif isinstance(value, Buffer):
            self._register(self._buffers, name, value)
        elif isinstance(value, Module):
            self._register(self._modules, name, value)
        else:
            holder = self._parameters.get(name, self._buffers.get(name))
            if holder is not None and _is_array_like(value):
                self._rebind(name, holder, value)
                return
            self._unregister(name)
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: registered entries live in the registries.
        for registry in _REGISTRIES:
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if not self._unregister(name):
            object.__delattr__(self, name)

    def _register(self, registry: OrderedDict[str, Any], name: str, value: Any) -> None:
        _check_name(type(self).__name__, name)
        for other in _REGISTRIES:
            entries = self.__dict__[other]
            if entries is not registry:
                entries.pop(name, None)
        self.__dict__.pop(name, None)
        registry[name] = value

    def _rebind(self, name: str, holder: Buffer, value: Any) -> None:
        slot = slot_of(holder)
        if slot is not None:
            # Within functional_call the module must not change: the call's value does.
            holder.data = value
            return
        array = jnp.asarray(value)
        registry = self._parameters if isinstance(holder, Parameter) else self._buffers
        registry[name] = type(holder)(array, dtype=array.dtype)

    def _unregister(self, name: str) -> bool:
        found = False
        for registry in _REGISTRIES:
            found = self.__dict__[registry].pop(name, None) is not None or found
        return found

    def add_module(self, name: str, module: Module | None) -> None:
        """Register `module` as the child `name` (`None` unregisters the name)."""
        self._register_checked("add_module", name, module, Module)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` under `name` (`None` leaves the name empty, as for `affine=False`)."""
        advice = " Wrap arrays in nn.Parameter(...)."
        self._register_checked("register_parameter", name, param, Parameter, advice)

    def _register_checked(
        self, method: str, name: str, value: Any, kind: type, advice: str = ""
    ) -> None:
        _check_name(type(self).__name__, name)
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"{type(self).__name__}.{method}: {name!r} must be a {kind.__name__} or None; "
                f"got {type(value).__name__}.{advice}"
            )
        setattr(self, name, value)

    def register_buffer(self, name: str, buffer: Any, dtype: Any = None) -> None:
        """Register `buffer` under `name`, wrapping an array in a Buffer (of `dtype` if given)."""
        _check_name(type(self).__name__, name)
        if buffer is not None and (not isinstance(buffer, Buffer) or isinstance(buffer, Parameter)):
            buffer = Buffer(buffer, dtype=dtype)
        setattr(self, name, buffer)

    # Traversal --------------------------------------------------------------------------------

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Parameters with their dotted names; one shared by several modules is listed once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield _join(module_name, name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The module's Parameters (and its descendants' when `recurse`), each once."""
        return (param for _, param in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Buffer]]:
        """Buffers with their dotted names, in `state_dict` order."""
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in modules:
            for name, buffer in module._buffers.items():
                yield _join(module_name, name), buffer

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        """The module's Buffers (and its descendants' when `recurse`)."""
        return (buffer for _, buffer in self.named_buffers(recurse=recurse))

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named `prefix`) and every descendant, depth first, with dotted names."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(_join(prefix, name))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct children with their names."""
        return iter(self._modules.items())

    def children(self) -> Iterator[Module]:
        """The direct children."""
        return iter(self._modules.values())

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call `fn` on this module, then on every descendant (Lucid's order); returns self."""
        fn(self)
        for child in self._modules.values():
            child.apply(fn)
        return self

    def count_parameters(self, recurse: bool = True) -> int:
        """The number of trainable scalars."""
        return sum(param.size for param in self.parameters(recurse=recurse))

    @property
    def parameter_size(self) -> int:
        """`count_parameters()` over the whole tree."""
        return self.count_parameters()

    # Mode and calling -------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode (`mode=False`: evaluation) here and in every descendant.

        `mode` may be an int, as in Lucid (`train(0)` is evaluation); `training` holds the bool.

        Returns:
          The module itself.

        Raises:
          TypeError: `mode` is not a bool or an int (Lucid would take `train("no")` as
            training, since the string is truthy).
        """
        if not isinstance(mode, (bool, np.bool_, numbers.Integral)):
            raise TypeError(
                f"{type(self).__name__}.train: mode must be a bool (or an int, as Lucid's "
                f"train(0)); got {type(mode).__name__}."
            )
        object.__setattr__(self, "training", bool(mode))
        for child in self._modules.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode here and in every descendant; returns the module."""
        return self.train(False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("The forward method must be implemented by the subclass.")

    # State ------------------------------------------------------------------------------------

    def state_dict(
        self,
        destination: OrderedDict[str, Any] | None = None,
        prefix: str = "",
        keep_vars: bool = False,
    ) -> OrderedDict[str, Any]:
        """Every Parameter and Buffer by dotted name, in Lucid's order.

        Args:
          destination: add the entries to this dict instead of a new one.
          prefix: put before every key.
          keep_vars: give the Parameter and Buffer objects instead of their arrays.

        Returns:
          An `OrderedDict`: own parameters, own buffers, then each child's entries. The arrays
          are immutable and read together under the holders' locks, so the dict is one
          snapshot: a `load_state_dict` or a running-stat update in another thread is in it
          whole or not at all.
        """
        if destination is None:
            destination = OrderedDict()
        holders = OrderedDict(self._named_holders(prefix))
        values = holders.values() if keep_vars else read_together(holders.values())
        destination.update(zip(holders, values, strict=True))
        return destination

    def _named_holders(self, prefix: str) -> Iterator[tuple[str, Buffer]]:
        for registry in (self._parameters, self._buffers):
            for name, holder in registry.items():
                yield prefix + name, holder
        for name, child in self._modules.items():
            yield from child._named_holders(prefix + name + ".")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load arrays by dotted name, as Lucid does; all are checked before any is changed.

        Each array must have its entry's shape and dtype family (floating or integer) and is
        converted to the entry's dtype, which must hold it: integers within its range, finite
        floats finite (infinities and NaN load as given). The arrays are swapped in together,
        under the locks that forwards and `state_dict()` read under, so another thread sees
        the old state or the new one, never a mix. Lucid checkpoints load with
        `model.load_state_dict(lucid_jax.load("model.lcd"))`.

        Args:
          state_dict: arrays (NumPy, JAX, Buffers, nested lists) by `state_dict` key.
          strict: refuse missing and unexpected keys; otherwise load what matches.

        Raises:
          KeyError: `strict` and keys are missing or unexpected (Lucid raises KeyError too).
          TypeError: `state_dict` is not a mapping, or a value is None, not numeric, of
            another dtype family (complex, bool, string, object), or traced (called under
            `jax.jit` or another transformation: use `functional_call` there).
          ValueError: a value has another shape than its entry, or its entry's dtype cannot
            hold it (an integer out of range, a finite float that would become inf).
        """
        where = f"{type(self).__name__}.load_state_dict"
        own = self.state_dict(keep_vars=True)
        missing, unexpected = split_state_keys(where, "state_dict", state_dict, own)
        if strict and (missing or unexpected):
            raise KeyError(
                f"{where}: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly {list(own)}."
            )
        updates = []
        for key in own:
            if key in state_dict:
                holder = own[key]
                updates.append((holder, loadable_state_value(where, key, state_dict[key], holder)))
        with holding_locks(holder for holder, _ in updates):
            for holder, array in updates:
                holder.data = array

    # Representation ---------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The part of the repr between the parentheses, before the children."""
        return ", ".join(
            f"{name}={value}"
            for name, value in vars(self).items()
            if not name.startswith("_") and name != "training"
        )

    def __repr__(self) -> str:
        extra = self.extra_repr()
        children = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        body = extra
        if children:
            body += ("\n" if extra else "") + "\n  " + "\n  ".join(children) + "\n"
        return f"{type(self).__name__}({body})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_name(owner: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{owner}: a registered name must be a str; got {type(name).__name__}.")
    if not name or "." in name:
        raise ValueError(
            f"{owner}: a registered name must be non-empty and without '.' (state_dict keys "
            f"are dotted paths); got {name!r}."
        )


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic, numbers.Number, list, tuple))
