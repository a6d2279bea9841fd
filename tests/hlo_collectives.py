"""The collectives of a compiled (SPMD-partitioned, per-device) HLO module.

One parser for the sharding tests (``tests/test_sharding_*.py``: nothing activation-sized may
cross devices) and the scaling benchmark (``benchmarks/scaling.py``: how many bytes a step
sends). ``collectives(hlo_text)`` returns one dict per collective instruction::

    {"name", "op" (as written, e.g. "all-reduce-start"), "kind" (e.g. "all-reduce"),
     "results": [array], "operands": [array], "attributes" (the text after the operands),
     "line" (the instruction, cut to 300 characters)}

with ``array = {"dtype", "shape", "elements", "bytes"}``; shapes are per device.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: HLO op -> the collective it is (async ``-start`` halves count, their ``-done`` do not).
COLLECTIVE_KINDS = {
    "all-reduce": "all-reduce",
    "all-reduce-start": "all-reduce",
    "all-gather": "all-gather",
    "all-gather-start": "all-gather",
    "all-to-all": "all-to-all",
    "ragged-all-to-all": "all-to-all",
    "collective-permute": "collective-permute",
    "collective-permute-start": "collective-permute",
    "collective-broadcast": "collective-broadcast",
    "reduce-scatter": "reduce-scatter",
}
_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4}
_ITEM_BYTES |= {"s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_DEFINITION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def _split_type(rest: str) -> tuple[str, str]:
    """``"(f32[2]{0}, f32[2]{0}) all-reduce(%a, %b), ..."`` -> (the type, the rest)."""
    if rest.startswith("("):
        depth = 0
        for i, char in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def arrays(type_text: str) -> list[dict[str, Any]]:
    """Every array of an HLO type: dtype, shape, element count and bytes."""
    out = []
    for dtype, dims in _ARRAY.findall(type_text):
        shape = [int(d) for d in dims.split(",") if d]
        elements = math.prod(shape)
        out.append(
            {
                "dtype": dtype,
                "shape": shape,
                "elements": elements,
                "bytes": elements * _ITEM_BYTES.get(dtype, 0),
            }
        )
    return out


def collectives(hlo_text: str) -> list[dict[str, Any]]:
    """Every collective instruction of ``hlo_text`` (see the module docstring).

    Operand shapes come from the operands' own definitions (newer HLO text prints operands by
    name only). An async start returns a tuple holding its operands too: only its results are
    kept.
    """
    types: dict[str, str] = {}
    pending = []
    for line in hlo_text.splitlines():
        match = _DEFINITION.match(line)
        if not match:
            continue
        name, rest = match.groups()
        type_text, rest = _split_type(rest)
        types[name] = type_text
        op = rest.split("(", 1)[0].strip()
        if op in COLLECTIVE_KINDS:
            operands, _, attributes = rest.split("(", 1)[1].partition(")")
            pending.append((name, op, type_text, operands, attributes, line.strip()[:300]))
    found = []
    for name, op, type_text, operands, attributes, line in pending:
        results = arrays(type_text)
        if op == "all-gather-start":
            results = results[len(results) // 2 :]
        elif op == "collective-permute-start":
            results = results[1:2]
        found.append(
            {
                "name": name,
                "op": op,
                "kind": COLLECTIVE_KINDS[op],
                "results": results,
                "operands": [
                    a
                    for n in re.findall(r"%([\w.\-]+)", operands)
                    for a in arrays(types.get(n, ""))
                ],
                "attributes": attributes,
                "line": line,
            }
        )
    return found
