"""`lucid_jax.load` on hostile and malformed files: refused with the path named, nothing run.

Each hostile pickle is first shown to be live (plain `pickle.loads` runs its payload), so a
loader that ran it would fail here.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import DATA

import lucid_jax

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


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (_lucid_record({"w": np.ones(2)}, kind="Module"), r"holds type 'Module'"),
        (_lucid_record({"w": np.ones(2)}, version=1.0), r"format_version 1\.0.*only 1\.1"),
        (_lucid_record({"w": np.ones(2)}, version="1.1"), r"format_version '1\.1'"),
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
    "not object": (_safetensors(b"[1, 2]"), r"header is a JSON list"),
    "duplicate": (
        _safetensors(
            b'{"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}, "w": {}}', bytes(8)
        ),
        r"duplicate keys",
    ),
    "bad dtype": (
        _safetensors({"w": {**_F64x2, "dtype": "F128"}}, bytes(16)),
        r"tensor 'w' has dtype 'F128'",
    ),
    "bad shape": (_safetensors({"w": {**_F64x2, "shape": [-2]}}, bytes(16)), r"shape \[-2\]"),
    "extra field": (
        _safetensors({"w": {**_F64x2, "code": "x"}}, bytes(16)),
        r"exactly dtype, shape and data_offsets",
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
