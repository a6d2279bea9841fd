"""Per-call values for Buffers: what lets `functional_call` run a module without changing it.

While a `functional_call` runs, every Buffer of its module reads and writes a `Slot` of that
call instead of its own array. The slots live in a `ContextVar`, so the override is seen only by
the thread (or task) that made the call: another thread using the same module meanwhile sees,
and updates, the Buffers' own arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any


class Slot:
    """The value one Buffer holds for the duration of one `functional_call`."""

    __slots__ = ("holder", "value")

    def __init__(self, holder: Any, value: Any) -> None:
        # The holder is kept so that its id, the key of the slot, cannot be reused meanwhile.
        self.holder = holder
        self.value = value


_SLOTS: ContextVar[Mapping[int, Slot] | None] = ContextVar("lucid_jax_buffer_slots", default=None)


def slot_of(holder: Any) -> Slot | None:
    """The slot overriding `holder` in the current context, if any."""
    slots = _SLOTS.get()
    return None if slots is None else slots.get(id(holder))


@contextlib.contextmanager
def overriding(slots: Mapping[int, Slot]) -> Iterator[None]:
    """Route reads and writes of the slots' holders to the slots, in this context only.

    Nested calls layer: a holder without a slot here keeps the one an outer call gave it.
    """
    outer = _SLOTS.get()
    token = _SLOTS.set({**outer, **slots} if outer else dict(slots))
    try:
        yield
    finally:
        _SLOTS.reset(token)
