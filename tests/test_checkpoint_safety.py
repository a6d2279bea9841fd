"""`lucid_jax.load` on hostile and malformed files: refused with the path named, nothing run.

Each hostile pickle is first shown to be live (plain `pickle.loads` runs its payload), so a
loader that ran it would fail here.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import tracemalloc
from collections import OrderedDict
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import DATA, run_python

import lucid_jax
from lucid_jax.io._pickle_reader import read_pickle

LUCID_STATE = DATA / "lucid_2_14_5_sequential.lcd"
LUCID_SAFETENSORS = DATA / "lucid_2_14_5_sequential.safetensors"


def _lucid_record(content, kind="OrderedDict", version=1.1) -> dict:
    return {"type": kind, "format_version": version, "content": content}


class _RunsShell:
    """Unpickles by calling `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _hostile_payloads(marker: Path) -> dict[str, bytes]:
    in_state = OrderedDict([("weight", np.ones(3)), ("bias", _RunsShell(f"touch {marker}"))])
    return {
        "os.system in the state dict": pickle.dumps(_lucid_record(in_state), protocol=4),
        "os.system as the record": pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2),
        "eval as the content": pickle.dumps(
            _lucid_record(_Reduce(eval, (f"open({str(marker)!r}, 'w')",))), protocol=0
        ),
    }


class _Reduce:
    def __init__(self, function, args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "payload", ["os.system in the state dict", "os.system as the record", "eval as the content"]
)
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "marker"
    data = _hostile_payloads(marker)[payload]
    path = tmp_path / "model.lcd"
    path.write_bytes(data)
    with pytest.raises(
        ValueError,
        match=r"refused .*model\.lcd at byte \d+: GLOBAL (posix\.system|__builtin__\.eval)",
    ):
        lucid_jax.load(path)
    assert not marker.exists()
    # The file is live: an unrestricted unpickler runs its payload.
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy", "load"),  # an allowed module, a name outside the list
        ("numpy.lib.format", "read_array"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("collections", "namedtuple"),
    ],
)
def test_any_global_outside_the_allow_list_is_refused(tmp_path, module, name):
    path = tmp_path / "x.lct"
    # GLOBAL 'module name', EMPTY_TUPLE, REDUCE: calls module.name() if allowed.
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(ValueError, match=rf"refused .*x\.lct.*{module}\.{name}"):
        lucid_jax.load(path)


def test_allowed_names_cannot_be_turned_against_the_loader(tmp_path):
    def refused(data: bytes, match: str) -> None:
        path = tmp_path / "x.lcd"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            lucid_jax.load(path)

    # numpy.ndarray is only an argument of _reconstruct, never a callable (no ndarray(shape)).
    refused(b"\x80\x02cnumpy\nndarray\nK\x10\x85R.", r"x\.lcd at byte 20: REDUCE calls numpy\.nd")
    # _reconstruct builds ndarrays only.
    refused(
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncbuiltins\ndict\nK\x00\x85C\x01b\x87R.",
        r"refused .*only _reconstruct\(numpy\.ndarray, \(0,\), b'b'\) is read",
    )
    # _codecs.encode, for protocol-2 bytes, only with latin1.
    refused(
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
        r"refused .*only encode\(str, 'latin1'\) is read",
    )


# numpy 1.x writes numpy.core.*; the text-framed GLOBAL opcodes of protocols 0-2 can be
# rewritten to those names exactly (from protocol 3 on the names are length-prefixed).
@pytest.mark.parametrize(
    ("protocol", "numpy_path"),
    [
        *((protocol, "numpy._core") for protocol in (0, 2, 4, 5)),
        *((protocol, "numpy.core") for protocol in (0, 2)),
    ],
)
def test_pickles_of_numpy_1_and_2_and_every_protocol_load(tmp_path, protocol, numpy_path):
    arrays = OrderedDict(
        [("w", np.linspace(0.0, 1.0, 6).reshape(2, 3)), ("n", np.array([1, 2], np.int32))]
    )
    data = pickle.dumps(_lucid_record(arrays), protocol=protocol)
    if numpy_path == "numpy.core":
        assert b"numpy._core." in data
        data = data.replace(b"numpy._core.", b"numpy.core.")
    path = tmp_path / "state.lcd"
    path.write_bytes(data)
    with jax.enable_x64(True):
        loaded = lucid_jax.load(path)
    assert list(loaded) == ["w", "n"]
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(np.asarray(loaded[key]), value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_numeric_dtype_in_either_byte_order_loads_as_native_jax(tmp_path, protocol):
    codes = ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
    arrays = OrderedDict()
    for code in codes:
        for order in "|" if code in ("b1", "i1", "u1") else "<>":
            dtype = np.dtype(order + code)
            arrays[dtype.str] = np.asfortranarray((np.arange(6).reshape(2, 3) % 2).astype(dtype))
    path = tmp_path / "dtypes.lcd"
    path.write_bytes(pickle.dumps(_lucid_record(arrays), protocol=protocol))
    with jax.enable_x64(True):
        loaded = lucid_jax.load(path)
    assert list(loaded) == list(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype.newbyteorder("="), key
        np.testing.assert_array_equal(np.asarray(loaded[key]), value, err_msg=key)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (_lucid_record({"w": np.ones(2)}, kind="Module"), r"holds type 'Module'"),
        (_lucid_record({"w": np.ones(2)}, version=1.0), r"format_version 1\.0.*only 1\.1"),
        (_lucid_record({"w": np.ones(2)}, version="1.1"), r"format_version '1\.1'"),
        (_lucid_record({"w": np.ones(2)}, version=np.ones(3)), r"format_version array\(\[1\."),
        (_lucid_record({"w": np.ones(2)}, kind=np.ones(3)), r"holds type array\(\[1\., 1\."),
        (_lucid_record({"w": np.ones(2)}, version="x" * 10**6), r"format_version 'xxx.*'\; Lu"),
        (_lucid_record([np.ones(2)]), r"content is a list; expected a mapping"),
        (_lucid_record({"w": "text"}), r"entry 'w': a str; expected"),
        (_lucid_record({"w": np.array([None])}), r"at byte \d+: numpy\.dtype\('O8', False"),
        (_lucid_record({3: np.ones(2)}), r"at byte \d+: dict key int 3 refused: keys are str"),
        (_lucid_record({"w": np.ones(2)}, kind="Tensor"), r"Tensor file whose content is a dict"),
        ({"type": "Tensor", "content": np.ones(2)}, r"got \['content', 'type'\]"),
        ([1, 2, 3], r"expected a dict with 'type'.*got list"),
    ],
)
def test_malformed_record_is_refused_naming_the_file(tmp_path, record, match):
    path = tmp_path / "broken.lcd"
    path.write_bytes(pickle.dumps(record, protocol=4))
    with pytest.raises(ValueError, match=r"broken\.lcd.*" + match):
        lucid_jax.load(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"at byte 0: the file ends before the pickle's STOP"),
        (LUCID_STATE.read_bytes()[:-40], r"at byte 2: FRAME of 655 bytes; 615 follow"),
        (b"PK\x03\x04 a zip file, not a pickle", r"at byte 0: PERSID"),
    ],
)
def test_truncated_or_foreign_file_is_refused_naming_it(tmp_path, data, match):
    path = tmp_path / "broken.lcd"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"refused .*broken\.lcd " + match):
        lucid_jax.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.lcd"):
        lucid_jax.load(tmp_path / "absent.lcd")


def _safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


_F64x2 = {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
_SAFETENSORS_CASES = {
    "short": (b"\x10\x00", r"fewer than the 8-byte header length"),
    "huge header": (
        _safetensors({}, length=2**62),
        r"header length field says 4611686018427387904",
    ),
    "header past end": (_safetensors({"w": _F64x2}, length=10_000), r"says 10000 bytes"),
    "not json": (_safetensors(b"{not json}"), r"header is not valid JSON"),
    "not object": (_safetensors(b"[1, 2]"), r"header is a JSON array"),
    "duplicate": (  # the crate keeps the last of a repeated name, but parses every one
        _safetensors(
            b'{"w": {}, "w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}', bytes(8)
        ),
        r"header entry 'w' lacks dtype, shape, data_offsets",
    ),
    "bad dtype": (
        _safetensors({"w": {**_F64x2, "dtype": "F128"}}, bytes(16)),
        r"tensor 'w' has dtype 'F128'",
    ),
    "bad shape": (_safetensors({"w": {**_F64x2, "shape": [-2]}}, bytes(16)), r"shape \[-2\]"),
    "missing field": (
        _safetensors({"w": {"dtype": "F64", "shape": [2]}}, bytes(16)),
        r"header entry 'w' lacks data_offsets",
    ),
    "size mismatch": (
        _safetensors({"w": {**_F64x2, "shape": [3]}}, bytes(16)),
        r"needs 24 bytes; its data_offsets \[0, 16\] give 16",
    ),
    "past the end": (
        _safetensors({"w": {**_F64x2, "shape": [4], "data_offsets": [0, 32]}}, bytes(16)),
        r"occupies bytes \[0, 32\) of the 16-byte data",
    ),
    "overlap": (
        _safetensors({"a": _F64x2, "b": {**_F64x2, "data_offsets": [8, 24]}}, bytes(24)),
        r"tensor 'b' occupies bytes \[8, 24\).*from byte 16",
    ),
    "trailing bytes": (_safetensors({"w": _F64x2}, bytes(24)), r"cover 16 of the 24 data bytes"),
    "bad metadata": (_safetensors({"__metadata__": {"k": 1}}), r"__metadata__ is not a mapping"),
}


@pytest.mark.parametrize("case", sorted(_SAFETENSORS_CASES))
def test_malformed_safetensors_is_refused_naming_the_file(tmp_path, case):
    data, match = _SAFETENSORS_CASES[case]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(data)
    with pytest.raises(
        ValueError, match=r"broken\.safetensors is not a valid safetensors.*" + match
    ):
        lucid_jax.load(path)


def test_well_formed_handmade_safetensors_loads(tmp_path):
    # The control for the cases above: the same builder, consistent, reads back.
    values = np.array([1.5, -2.0])
    path = tmp_path / "ok.safetensors"
    path.write_bytes(
        _safetensors({"__metadata__": {"format": "np"}, "w": _F64x2}, values.tobytes())
    )
    with jax.enable_x64(True):
        loaded = lucid_jax.load(path)
    assert list(loaded) == ["w"]
    np.testing.assert_array_equal(np.asarray(loaded["w"]), values)
    assert LUCID_SAFETENSORS.read_bytes()[8:9] == b"{"  # the real files have the same framing


# --- the attacks of issue 17, each with its bytes -------------------------------------------
# Each was harmful to the restricted unpickler load used before (memory corruption, a numpy
# changed for the rest of the process, gigabytes from a few bytes, uninitialised heap, a hang).
# None of these files is ever given to pickle.loads here: some crash the process.


def _op_text(text: str) -> bytes:  # SHORT_BINUNICODE
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _op_global(module: str, name: str) -> bytes:  # STACK_GLOBAL
    return _op_text(module) + _op_text(name) + b"\x93"


def _op_int(value: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", value)


def _op_dtype(code: str, state: bytes) -> bytes:
    """`dtype(code, False, True)` then `BUILD` with the tuple `state` (opcodes, MARK-framed)."""
    return _op_global("numpy", "dtype") + _op_text(code) + b"\x89\x88\x87R(" + state + b"tb"


def _op_shape(shape: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_op_int(n) for n in shape) + b"t"


def _op_array(shape: tuple[int, ...], dtype: bytes, raw: bytes | None, first=(0,)) -> bytes:
    """`_reconstruct(ndarray, first, b'b')`, then (if `raw`) `BUILD (1, shape, dtype, F, raw)`."""
    built = _op_global("numpy._core.multiarray", "_reconstruct") + _op_global("numpy", "ndarray")
    built += _op_shape(first) + b"C\x01b\x87R"
    if raw is None:
        return built
    return (
        built
        + b"(K\x01"
        + _op_shape(shape)
        + dtype
        + b"\x89B"
        + struct.pack("<I", len(raw))
        + raw
        + b"tb"
    )


def _op_record(content: bytes, kind: str = "Tensor") -> bytes:
    return (
        b"\x80\x04}("
        + _op_text("type")
        + _op_text(kind)
        + _op_text("format_version")
        + b"G"
        + struct.pack(">d", 1.1)
        + _op_text("content")
        + content
        + b"u."
    )


_SIMPLE_F8_STATE = b"K\x03" + _op_text("<") + b"NNN" + _op_int(-1) + _op_int(-1) + b"K\x00"


def _load_refused(tmp_path, data: bytes, match: str, name: str = "attack.lcd") -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"refused .*{re.escape(name)} at byte \d+: {match}"):
        lucid_jax.load(path)


def test_the_forgery_builder_makes_what_numpy_reads(tmp_path):
    # The control for the attacks below: the same builder with numpy's own values loads.
    raw = np.array([1.5, -2.0]).tobytes()
    data = _op_record(_op_array((2,), _op_dtype("f8", _SIMPLE_F8_STATE), raw))
    path = tmp_path / "forged.lct"
    path.write_bytes(data)
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(lucid_jax.load(path)), [1.5, -2.0])
    assert pickle.loads(data)["content"].tolist() == [1.5, -2.0]


def test_attack_object_dtype_state_with_flags_0_is_refused(tmp_path):
    # numpy's dtype.__setstate__ took flags 0 for an object dtype: the raw bytes became object
    # pointers. The reader never builds an object dtype, whatever its state says.
    object_state = b"K\x03" + _op_text("|") + b"NNN" + _op_int(-1) + _op_int(-1) + b"K\x00"
    data = _op_record(_op_array((1,), _op_dtype("O8", object_state), bytes(8)))
    _load_refused(tmp_path, data, r"numpy\.dtype\('O8', False, True\); only dtype\(code")
    # Nor does a numeric dtype take any state but numpy's own for it: flags 63 here.
    flagged = b"K\x03" + _op_text("<") + b"NNN" + _op_int(-1) + _op_int(-1) + b"K\x3f"
    data = _op_record(_op_array((1,), _op_dtype("f8", flagged), bytes(8)))
    _load_refused(tmp_path, data, r"numpy\.dtype\('f8'\) state .* only \(3, byte order")


def test_attack_field_offset_past_the_item_size_is_refused(tmp_path):
    # A structured dtype whose field lies a MiB past its 8-byte item: numpy wrote out of bounds.
    fields = (
        b"}" + _op_text("x") + b"(" + _op_dtype("f8", _SIMPLE_F8_STATE) + _op_int(2**20) + b"ts"
    )
    state = b"K\x03" + _op_text("|") + b"N(" + _op_text("x") + b"t" + fields
    state += _op_int(8) + _op_int(1) + b"K\x10"
    data = _op_record(_op_array((1,), _op_dtype("V8", state), bytes(8)))
    _load_refused(tmp_path, data, r"numpy\.dtype\('V8', False, True\)")
    # The same fields for a dtype the reader does build: a dtype is no value of a dict, and
    # a state with field names or offsets is refused at its BUILD.
    data = _op_record(_op_array((1,), _op_dtype("f8", state), bytes(8)))
    _load_refused(tmp_path, data, r"a tuple holding numpy\.dtype\('f8'\) cannot be in a dict")
    named = b"K\x03" + _op_text("<") + b"N(" + _op_text("x") + b"tN" + _op_int(8) + _op_int(1)
    data = _op_record(_op_array((1,), _op_dtype("f8", named + b"K\x10"), bytes(8)))
    _load_refused(tmp_path, data, r"numpy\.dtype\('f8'\) state \(3, '<', None, \('x',\)")


def test_attack_build_setting_attributes_on_an_allowed_name_changes_nothing(tmp_path):
    # BUILD (None, {...}) set np.frombuffer's __module__/__qualname__ to os/system, and numpy
    # could no longer pickle arrays for the rest of the process.
    attributes = b"}(" + _op_text("__module__") + _op_text("os")
    attributes += _op_text("__qualname__") + _op_text("system") + b"u"
    for module, name in [("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict")]:
        data = _op_record(_op_global(module, name) + b"N" + attributes + b"\x86b")
        _load_refused(tmp_path, data, r"BUILD on .*: state is given only to a new numpy")
    assert np.frombuffer.__module__ == "numpy"
    array = np.arange(3.0)
    assert pickle.loads(pickle.dumps(array, protocol=5)).tolist() == array.tolist()


def test_attack_memo_put_at_a_huge_index_costs_nothing(tmp_path):
    # 9 bytes: PROTO 2, NONE, LONG_BINPUT 2**26, STOP. The C unpickler sized its memo by the
    # index (1.2 GB); the reader's memo is a dict holding what the file put there.
    data = b"\x80\x02Nr" + struct.pack("<I", 2**26) + b"."
    assert len(data) == 9
    tracemalloc.start()
    try:
        assert read_pickle(data) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    path = tmp_path / "memo.lcd"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"memo\.lcd is not a Lucid checkpoint.*got NoneType"):
        lucid_jax.load(path)


def test_attack_reconstruct_with_a_big_shape_and_no_data_is_refused(tmp_path):
    # 150,000,000 elements asked for and no bytes given: a 2 GB "load" before.
    tracemalloc.start()
    try:
        _load_refused(
            tmp_path,
            _op_record(_op_array((), b"", None, first=(150_000_000,))),
            r"numpy's _reconstruct\(numpy\.ndarray, \(150000000,\), b'b'\); only",
        )
        _load_refused(
            tmp_path,
            _op_record(_op_array((150_000_000,), _op_dtype("f8", _SIMPLE_F8_STATE), b"")),
            r"array of shape \(150000000,\) and dtype <f8 needs 1200000000 bytes; the file gi",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_attack_lct_returning_uninitialised_memory_is_refused(tmp_path):
    # _reconstruct without its BUILD was an uninitialised array: heap bytes returned as weights.
    data = _op_record(_op_array((), b"", None, first=(512,)))
    _load_refused(tmp_path, data, r"numpy's _reconstruct.*\(512,\)", name="heap.lct")
    data = _op_record(_op_array((), b"", None))
    _load_refused(
        tmp_path, data, r"a numpy array awaiting its state cannot be in a dict", name="heap.lct"
    )


def test_attack_folder_is_refused(tmp_path):
    (tmp_path / "folder.lcd").mkdir()
    with pytest.raises(ValueError, match=r"refused .*folder\.lcd: it is a folder, not a file"):
        lucid_jax.load(tmp_path / "folder.lcd")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_attack_link_to_an_endless_device_is_refused_without_reading(tmp_path):
    (tmp_path / "zero.lcd").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"zero\.lcd: it is a character device, not a file"):
        lucid_jax.load(tmp_path / "zero.lcd")


@pytest.mark.long_running
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_attack_fifo_is_refused_without_hanging(tmp_path):
    # In a child with a timeout: a loader that opened the FIFO would wait for a writer forever.
    os.mkfifo(tmp_path / "pipe.lcd")
    script = (
        "import sys, lucid_jax\n"
        "try:\n    lucid_jax.load(sys.argv[1])\n"
        "except ValueError as error:\n    print(error)\n"
    )
    result = run_python("-c", script, str(tmp_path / "pipe.lcd"), cwd=tmp_path, timeout=120)
    assert re.search(r"refused .*pipe\.lcd: it is a FIFO \(named pipe\), not a file", result.stdout)


def test_attack_deep_nesting_is_a_value_error_not_a_recursion_error(tmp_path):
    depth = 100_000
    for content in (b"]" * depth + b"a" * (depth - 1), b"N" + b"\x85" * depth):
        _load_refused(tmp_path, _op_record(content), r"containers nest more than 100 levels")
    _load_refused(tmp_path, _op_record(b"(" * depth), r"MARKs nest more than 100 levels")


def _stat_with(result: os.stat_result, **changes: int) -> os.stat_result:
    fields = list(result[:10])
    names = ["st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return os.stat_result(fields)


def test_a_file_that_grows_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "growing.lcd"
    path.write_bytes(LUCID_STATE.read_bytes())
    real_fstat = os.fstat
    # The size when opened is all that is read: here the file is "written to" meanwhile.
    monkeypatch.setattr(os, "fstat", lambda fd: _stat_with(real_fstat(fd), st_size=100))
    with pytest.raises(ValueError, match=r"refused .*growing\.lcd: it grew while being read"):
        lucid_jax.load(path)


def test_a_path_swapped_between_check_and_open_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "swapped.lcd"
    path.write_bytes(LUCID_STATE.read_bytes())
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, **kw: _stat_with(real_stat(p, **kw), st_ino=1))
    with pytest.raises(ValueError, match=r"refused .*swapped\.lcd: it was replaced while being"):
        lucid_jax.load(path)
