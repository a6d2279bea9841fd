"""Hypothesis fuzzing of the checkpoint pickle reader, run by `tests/test_checkpoint_fuzz.py`.

`python tests/fuzz_pickle_reader.py EXAMPLES` mutates Lucid's recorded checkpoints, numpy's own
pickles and hand-forged array/dtype states (byte flips, truncations, deletions, inserted
opcodes, chunks spliced from another file) and reads each mutant with
`lucid_jax/io/_pickle_reader.py`, loaded from its file: only numpy and the reader are imported
(JAX reserves far more address space than the memory limit set here). Each mutant must read to
plain data and numeric arrays or be refused with `ValueError`; anything else (another
exception, a crash, memory beyond the limit) fails. It prints one JSON line of counts.

Nothing happens on import (pytest imports this file for its doctests).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import resource
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def reader_path() -> Path:
    """The installed (or, in a clone, the source tree's) `lucid_jax/io/_pickle_reader.py`,
    found without importing `lucid_jax` (which would import JAX)."""
    spec = importlib.util.find_spec("lucid_jax")
    assert spec is not None and spec.submodule_search_locations, "lucid_jax is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "io" / "_pickle_reader.py"


#: The child's address-space limit: far above what any mutant (at most a few kB) may cost.
ADDRESS_SPACE_LIMIT = 2 * 2**30


def _text(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _global(module: str, name: str) -> bytes:
    return _text(module) + _text(name) + b"\x93"


_RECONSTRUCT = _global("numpy._core.multiarray", "_reconstruct")
_DTYPE_STATE = b"(K\x03" + _text("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"


def _dtype(code: str, state: bytes = _DTYPE_STATE) -> bytes:
    return _global("numpy", "dtype") + _text(code) + b"\x89\x88\x87R" + state


def _forged() -> list[bytes]:
    """Hand-made array and dtype states around the ones numpy writes."""
    array = _RECONSTRUCT + _global("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
    eight = b"C\x08" + bytes(8)
    return [
        b"\x80\x04" + array + b"(K\x01K\x01\x85" + _dtype("f8") + b"\x89" + eight + b"tb.",
        b"\x80\x04" + array + b"(K\x01K\x01\x85" + _dtype("O8") + b"\x89" + eight + b"tb.",
        b"\x80\x04" + array + b"(K\x01K\x02\x85" + _dtype("f4") + b"\x88" + eight + b"tb.",
        b"\x80\x04"
        + _global("numpy._core.multiarray", "scalar")
        + _dtype("c8")
        + eight
        + b"\x86R.",
        b"\x80\x05"
        + _global("numpy._core.numeric", "_frombuffer")
        + b"(\x96"
        + struct.pack("<Q", 8)
        + bytes(8)
        + _dtype("i2")
        + b"K\x02K\x02\x86"
        + _text("F")
        + b"tR.",
        b"\x80\x04" + _global("numpy._core.numeric", "_frombuffer") + b"N}\x86b.",
        b"\x80\x02Nr\x00\x00\x00\x04.",
        b"\x80\x04" + _global("collections", "OrderedDict") + b")R(" + _text("k") + b"]u.",
    ]


def _numpy_pickles() -> list[bytes]:
    import numpy as np

    values: list[Any] = [
        np.arange(6.0).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3)),
        np.array([True, False]),
        np.array(1.5, np.float16),
        np.zeros((0, 2), np.complex64),
        np.uint64(7),
        np.arange(8, dtype=np.uint8)[::2],
        OrderedDict(a=np.ones(2, np.int64), b=[1, "x", b"y", (2.5, None)]),
    ]
    return [pickle.dumps(v, protocol=p) for v in values for p in range(6)]


def seeds() -> list[bytes]:
    recorded = sorted((HERE / "data").glob("lucid_2_14_5_*.lc[dt]"))
    return [path.read_bytes() for path in recorded] + _numpy_pickles() + _forged()


#: Opcodes and short opcode sequences to insert: what a hostile file would try.
TOKENS = [
    *(bytes([c]) for c in b"()]}N012aestldu\x85\x86\x87Rb\x93\x94.\x88\x89\x97\x98\x81o"),
    b"h\x00",
    b"h\x05",
    b"j\xff\xff\xff\x7f",
    b"r\x00\x00\x00\x04",
    b"q\x00",
    b"K\x00",
    b"K\x01",
    b"K\x03",
    b"J\xff\xff\xff\xff",
    b"J\x00\xe1\xf5\x05",
    b"\x8a\x08" + b"\xff" * 8,
    b"G" + struct.pack(">d", 1.1),
    b"C\x01b",
    b"C\x08" + bytes(8),
    b"B\xff\xff\xff\x7f",
    b"\x8e" + struct.pack("<Q", 2**62),
    b"\x96" + struct.pack("<Q", 4) + b"abcd",
    b"\x95" + struct.pack("<Q", 2**40),
    b"\x80\x05",
    b"I01\n",
    b"V\\u0041\n",
    b"cos\nsystem\n",
    b"c__builtin__\neval\n",
    _text("<"),
    _text(">"),
    _text("|"),
    _text("f8"),
    _text("O8"),
    _text("V8"),
    _text("C"),
    _text("F"),
    _text("latin1"),
    _global("numpy", "dtype"),
    _global("numpy", "ndarray"),
    _RECONSTRUCT,
    _global("numpy._core.multiarray", "scalar"),
    _global("numpy._core.numeric", "_frombuffer"),
    _global("collections", "OrderedDict"),
    _global("_codecs", "encode"),
    _DTYPE_STATE,
    _dtype("f8"),
]


def _valid(value: Any, codes: frozenset[str]) -> None:
    """Raise AssertionError unless `value` is plain data and numeric arrays."""
    import numpy as np

    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in (dict, OrderedDict):
            assert all(type(key) is str for key in item), item
            pending.extend(item.values())
        elif kind in (list, tuple):
            pending.extend(item)
        elif isinstance(item, (np.ndarray, np.generic)):
            assert item.dtype.str[1:] in codes, item.dtype
            assert item.dtype.kind != "b" or item.view(np.uint8).max(initial=0) <= 1
            item.tobytes()  # every byte of it is readable
        else:
            assert kind in (str, bytes, int, float, bool, type(None)), kind


def _mutate(data: bytes, mutations: list[tuple[Any, ...]], others: list[bytes]) -> bytes:
    for kind, where, *rest in mutations:
        at = int(where * len(data))
        if kind == "flip":
            if data:
                at = min(at, len(data) - 1)
                data = data[:at] + bytes([data[at] ^ rest[0]]) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + rest[0] + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + rest[0] :]
        elif kind == "splice":
            other = others[rest[0] % len(others)]
            start = int(rest[1] * len(other))
            data = data[:at] + other[start : start + rest[2]] + data[at:]
    return data


def reframe(data: bytes) -> bytes:
    """`data` with its first FRAME's length made to fit again after a mutation changed it.

    Without this, nearly every insertion or deletion would be refused at the FRAME opcode
    and the opcodes after it would go untested.
    """
    if data[2:3] != b"\x95" or len(data) < 11:
        return data
    return data[:3] + struct.pack("<Q", len(data) - 11) + data[11:]


def main(examples: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
        limited = True
    except (ValueError, OSError):  # macOS refuses RLIMIT_AS below its current value
        limited = False
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = importlib.util.spec_from_file_location("_pickle_reader", reader_path())
    assert spec is not None and spec.loader is not None
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)

    corpus = seeds()
    fraction = st.floats(0.0, 1.0)
    mutation = st.one_of(
        st.tuples(st.just("flip"), fraction, st.integers(1, 255)),
        st.tuples(st.just("truncate"), fraction),
        st.tuples(st.just("insert"), fraction, st.sampled_from(TOKENS) | st.binary(max_size=9)),
        st.tuples(st.just("delete"), fraction, st.integers(1, 16)),
        st.tuples(st.just("splice"), fraction, st.integers(0, 99), fraction, st.integers(1, 64)),
    )
    counts = {"examples": 0, "read": 0, "refused": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(corpus), st.lists(mutation, min_size=1, max_size=3), st.booleans())
    def read_mutant(seed: bytes, mutations: list[tuple[Any, ...]], fit_frame: bool) -> None:
        data = _mutate(seed, mutations, corpus)
        if fit_frame:
            data = reframe(data)
        counts["examples"] += 1
        try:
            value = reader.read_pickle(data)
        except ValueError as error:
            assert isinstance(error, reader.PickleRefused), repr(error)
            counts["refused"] += 1
            return
        _valid(value, reader.ARRAY_TYPE_CODES)
        counts["read"] += 1

    read_mutant()
    for seed in corpus:  # the unmutated corpus, as a control of the validity check
        try:
            _valid(reader.read_pickle(seed), reader.ARRAY_TYPE_CODES)
        except reader.PickleRefused:
            counts["refused seeds"] = counts.get("refused seeds", 0) + 1
    counts["address_space_limited"] = limited
    counts["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps(counts))


if __name__ == "__main__":
    main(int(sys.argv[1]))
