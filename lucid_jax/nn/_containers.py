"""Lucid's module containers: `Sequential`, `ModuleList`, `ModuleDict`.

Children are named as in Lucid (`"0"`, `"1"`, ... or the given keys), so `state_dict` keys match
a Lucid checkpoint's (`"body.0.weight"`). Two Lucid slips are not copied: replacing an entry
(`seq[i] = m`) keeps its position instead of moving it last, and `del module_list[i]` removes
the entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

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

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
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


class ModuleDict(Module):
    """Modules by name, registered as children under their keys, as `lucid.nn.ModuleDict`.

    Examples:
      >>> from lucid_jax import nn
      >>> heads = nn.ModuleDict({"norm": nn.InstanceNorm1d(2, affine=False)})
      >>> list(heads.state_dict())
      ['norm.running_mean', 'norm.running_var']
    """

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules: Mapping[str, Module]) -> None:
        """Add or replace each entry of `modules`."""
        for key, module in modules.items():
            self[key] = module

    def clear(self) -> None:
        """Remove every entry."""
        self._modules.clear()

    def pop(self, key: str) -> Module:
        """Remove the entry `key` and return it."""
        return self._modules.pop(key)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict[{key!r}]: expected a Module; got {type(module).__name__}.")
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> KeysView[str]:
        return self._modules.keys()

    def values(self) -> ValuesView[Module]:
        return self._modules.values()

    def items(self) -> ItemsView[str, Module]:
        return self._modules.items()
