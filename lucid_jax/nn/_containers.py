"""Lucid's containers: `Sequential`, `ModuleList`, `ModuleDict`, `ParameterList`, `ParameterDict`.

Entries are named as in Lucid (`"0"`, `"1"`, ... or the given keys), so `state_dict` keys match
a Lucid checkpoint's (`"body.0.weight"`, `"gains.1"`). Two Lucid slips are not copied: replacing
an entry (`seq[i] = m`, `params[i] = p`) keeps its position instead of moving it last, and
`del module_list[i]` removes the entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, ClassVar, Generic, TypeVar, overload

from lucid_jax.nn._buffer import Parameter
from lucid_jax.nn._module import Module


def _position(owner: Module, index: Any, length: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(
            f"{type(owner).__name__}: index must be an int or a slice; got {type(index).__name__}."
        )
    position = index + length if index < 0 else index
    if not 0 <= position < length:
        raise IndexError(f"{type(owner).__name__}: index {index} out of range for {length}.")
    return position


def _replace(owner: Module, position: int, module: Module) -> None:
    if not isinstance(module, Module):
        raise TypeError(
            f"{type(owner).__name__}: entries must be Modules; got {type(module).__name__}."
        )
    items = list(owner._modules.items())
    items[position] = (items[position][0], module)
    owner._modules.clear()
    owner._modules.update(items)


class _NumberedModules(Module):
    """What Sequential and ModuleList share: children named by position, `"0"`, `"1"`, ..."""

    def __setitem__(self, index: int, module: Module) -> None:
        _replace(self, _position(self, index, len(self)), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> None:
        """Add `module` at the end, named by the current length."""
        self.add_module(str(len(self._modules)), module)

    def extend(self, modules: Iterable[Module]) -> None:
        """Append each of `modules`."""
        for module in modules:
            self.append(module)


class Sequential(_NumberedModules):
    """Modules called in order, each on the previous one's output, as `lucid.nn.Sequential`.

    Args:
      *modules: the modules, named `"0"`, `"1"`, ...; or a single `OrderedDict` of name to
        module.

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax import nn
      >>> seq = nn.Sequential(nn.InstanceNorm1d(2), nn.InstanceNorm1d(2, affine=False))
      >>> list(seq.state_dict())[:3]
      ['0.weight', '0.bias', '0.running_mean']
      >>> seq(jnp.arange(8.0).reshape(1, 2, 4)).shape
      (1, 2, 4)
    """

    @overload
    def __init__(self, *modules: Module) -> None: ...
    @overload
    def __init__(self, modules: OrderedDict[str, Module], /) -> None: ...

    def __init__(self, *modules: Any) -> None:
        # Each entry is checked by add_module (a Module, or a TypeError naming it).
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, input_: Any) -> Any:
        for module in self._modules.values():
            input_ = module(input_)
        return input_

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[_position(self, index, len(self))]

    def __delitem__(self, index: int) -> None:
        del self._modules[list(self._modules)[_position(self, index, len(self))]]


class ModuleList(_NumberedModules):
    """A list of modules, registered as children `"0"`, `"1"`, ..., as `lucid.nn.ModuleList`.

    Examples:
      >>> from lucid_jax import nn
      >>> blocks = nn.ModuleList([nn.InstanceNorm1d(2) for _ in range(2)])
      >>> [name for name, _ in blocks.named_parameters()]
      ['0.weight', '0.bias', '1.weight', '1.bias']
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[_position(self, index, len(self))]

    def __delitem__(self, index: int) -> None:
        modules = list(self._modules.values())
        del modules[_position(self, index, len(self))]
        self._renumber(modules)

    def insert(self, index: int, module: Module) -> None:
        """Insert `module` before `index` (clamped to the list, as Lucid) and renumber."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"ModuleList.insert: index must be an int; got {type(index).__name__}.")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.insert: expected a Module; got {type(module).__name__}.")
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def _renumber(self, modules: list[Module]) -> None:
        self._modules.clear()
        for position, module in enumerate(modules):
            self._modules[str(position)] = module


EntryT = TypeVar("EntryT", Module, Parameter)


class _EntriesByName(Module, Generic[EntryT]):
    """A mapping of names to the entries of one registry (`_REGISTRY`): ModuleDict's children,
    ParameterDict's parameters. Subclasses say how an entry is checked and registered
    (`__setitem__`)."""

    _REGISTRY: ClassVar[str]

    def __init__(self, entries: Mapping[str, EntryT] | None = None) -> None:
        super().__init__()
        if entries is not None:
            self.update(entries)

    @property
    def _entries(self) -> OrderedDict[str, EntryT]:
        return self.__dict__[self._REGISTRY]

    def __setitem__(self, key: str, entry: EntryT) -> None:
        raise NotImplementedError

    def update(self, entries: Mapping[str, EntryT]) -> None:
        """Add or replace each entry of `entries`."""
        for key, entry in entries.items():
            self[key] = entry

    def clear(self) -> None:
        """Remove every entry."""
        self._entries.clear()

    def pop(self, key: str) -> EntryT:
        """Remove the entry `key` and return it."""
        return self._entries.pop(key)

    def __getitem__(self, key: str) -> EntryT:
        return self._entries[key]

    def __delitem__(self, key: str) -> None:
        del self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> KeysView[str]:
        return self._entries.keys()

    def values(self) -> ValuesView[EntryT]:
        return self._entries.values()

    def items(self) -> ItemsView[str, EntryT]:
        return self._entries.items()


class ModuleDict(_EntriesByName[Module]):
    """Modules by name, registered as children under their keys, as `lucid.nn.ModuleDict`.

    Examples:
      >>> from lucid_jax import nn
      >>> heads = nn.ModuleDict({"norm": nn.InstanceNorm1d(2, affine=False)})
      >>> list(heads.state_dict())
      ['norm.running_mean', 'norm.running_var']
    """

    _REGISTRY = "_modules"

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__(modules)

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict[{key!r}]: expected a Module; got {type(module).__name__}.")
        self.add_module(key, module)


def _checked_parameter(owner: Module, method: str, param: Any) -> Parameter:
    if not isinstance(param, Parameter):
        raise TypeError(
            f"{type(owner).__name__}.{method}: expected a Parameter; got {type(param).__name__}. "
            "Wrap arrays in nn.Parameter(...)."
        )
    return param


def _entries_repr(owner: Module) -> str:
    lines = [
        f"({name}): " + repr(param).replace("\n", "\n  ")
        for name, param in owner._parameters.items()
    ]
    body = "\n  " + "\n  ".join(lines) + "\n" if lines else ""
    return f"{type(owner).__name__}({body})"


class ParameterList(Module):
    """A list of Parameters, registered as `"0"`, `"1"`, ..., as `lucid.nn.ParameterList`.

    Its `state_dict` keys are the positions (`"gains.0"` inside a module), as in Lucid.
    `del plist[i]` and `insert` renumber the entries; `plist[i] = p` keeps the position.

    Args:
      parameters: the initial Parameters.

    Raises:
      TypeError: an entry is not a Parameter (wrap arrays in `nn.Parameter`), or an index is
        not an int (or a slice, to read).

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax import nn
      >>> gains = nn.ParameterList([nn.Parameter(jnp.ones(2)), nn.Parameter(jnp.zeros(3))])
      >>> gains.append(nn.Parameter(jnp.full(1, 2.0)))
      >>> list(gains.state_dict()), len(gains), gains[-1]
      (['0', '1', '2'], 3, Parameter([2.], dtype=float32))
    """

    def __init__(self, parameters: Iterable[Parameter] | None = None) -> None:
        super().__init__()
        if parameters is not None:
            self.extend(parameters)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ParameterList(list(self._parameters.values())[index])
        return list(self._parameters.values())[_position(self, index, len(self))]

    def __setitem__(self, index: int, param: Parameter) -> None:
        position = _position(self, index, len(self))
        self._parameters[str(position)] = _checked_parameter(self, "__setitem__", param)

    def __delitem__(self, index: int) -> None:
        params = list(self._parameters.values())
        del params[_position(self, index, len(self))]
        self._renumber(params)

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._parameters.values())

    def append(self, param: Parameter) -> None:
        """Add `param` at the end, named by the current length."""
        self.register_parameter(str(len(self)), _checked_parameter(self, "append", param))

    def extend(self, parameters: Iterable[Parameter]) -> None:
        """Append each of `parameters`."""
        for param in parameters:
            self.append(param)

    def insert(self, index: int, param: Parameter) -> None:
        """Insert `param` before `index` (clamped to the list, as Lucid) and renumber."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(
                f"ParameterList.insert: index must be an int; got {type(index).__name__}."
            )
        params = list(self._parameters.values())
        params.insert(index, _checked_parameter(self, "insert", param))
        self._renumber(params)

    def _renumber(self, params: list[Parameter]) -> None:
        self._parameters.clear()
        for position, param in enumerate(params):
            self._parameters[str(position)] = param

    def __repr__(self) -> str:
        return _entries_repr(self)


class ParameterDict(_EntriesByName[Parameter]):
    """Parameters by name, registered under their keys, as `lucid.nn.ParameterDict`.

    Args:
      parameters: the initial Parameters by name (names without `.`).

    Raises:
      TypeError: a value is not a Parameter (wrap arrays in `nn.Parameter`).
      ValueError: a key is empty or holds a `.`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from lucid_jax import nn
      >>> scales = nn.ParameterDict({"a": nn.Parameter(jnp.ones(2))})
      >>> scales["b"] = nn.Parameter(jnp.zeros(1))
      >>> list(scales.state_dict()), "b" in scales
      (['a', 'b'], True)
    """

    _REGISTRY = "_parameters"

    def __init__(self, parameters: Mapping[str, Parameter] | None = None) -> None:
        super().__init__(parameters)

    def __setitem__(self, key: str, param: Parameter) -> None:
        self.register_parameter(key, _checked_parameter(self, "__setitem__", param))

    def __repr__(self) -> str:
        return _entries_repr(self)
