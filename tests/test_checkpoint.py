"""`lucid_jax.load` / `lucid_jax.save` against files the real Lucid 2.14.5 wrote.

References: `tests/data/lucid_2_14_5_*.{lcd,lct,safetensors}` written by `lucid.save`, and the
arrays Lucid held before saving (`lucid_2_14_5_checkpoints.npz`), both recorded by
`tests/data/record_lucid_checkpoints.py`, which also checks with the real `lucid.load` the files
this module writes when `LUCID_JAX_CHECKPOINT_DIR` is set.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, host_ones, reference_instance_norm

import lucid_jax
from lucid_jax.io._pickle_reader import read_pickle

PREFIX = "lucid_2_14_5_"
with np.load(DATA / f"{PREFIX}checkpoints.npz") as _npz:
    EXPECTED = {key: _npz[key] for key in _npz.files}
KEY_ORDER = json.loads((DATA / f"{PREFIX}checkpoints.json").read_text())["key_order"]
STATE_FILES = sorted(KEY_ORDER)  # {instancenorm2d,sequential}.{lcd,safetensors}


def expected_state(stem: str) -> dict[str, np.ndarray]:
    prefix = f"{stem}/"
    return {k[len(prefix) :]: v for k, v in EXPECTED.items() if k.startswith(prefix)}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# --- reading what Lucid wrote -------------------------------------------------------------


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", STATE_FILES)
def test_load_state_dict_equals_what_lucid_saved(name):
    loaded = lucid_jax.load(DATA / name)
    expected = expected_state(Path(name).stem)
    assert type(loaded) is OrderedDict
    assert list(loaded) == KEY_ORDER[name]  # lucid.load's order: saved (.lcd), sorted (.st)
    assert sorted(loaded) == sorted(expected)
    for key, value in loaded.items():
        assert isinstance(value, jax.Array), key
        assert value.dtype == expected[key].dtype == np.float64, key
        np.testing.assert_array_equal(np.asarray(value), expected[key], err_msg=key)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("stem", ["tensor", "tensor_f32"])
def test_load_tensor_equals_what_lucid_saved(stem):
    loaded = lucid_jax.load(DATA / f"{PREFIX}{stem}.lct")
    expected = EXPECTED[f"{PREFIX}{stem}"]
    assert isinstance(loaded, jax.Array)
    assert loaded.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(loaded), expected)


def test_load_without_x64_rounds_float64_to_float32():
    assert not jax.config.read("jax_enable_x64")
    loaded = lucid_jax.load(DATA / f"{PREFIX}sequential.lcd")
    for key, expected in expected_state(f"{PREFIX}sequential").items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(loaded[key]), expected.astype(np.float32))


def test_load_without_x64_refuses_int64_that_int32_cannot_hold(tmp_path):
    fits = lucid_jax.save({"steps": np.array([2**31 - 1, -(2**31)])}, tmp_path / "fits.lcd")
    assert lucid_jax.load(fits)["steps"].tolist() == [2**31 - 1, -(2**31)]
    big = lucid_jax.save({"steps": np.array([2**40], np.int64)}, tmp_path / "big.lcd")
    with pytest.raises(ValueError, match=r"big\.lcd.*'steps' is int64.*jax_enable_x64"):
        lucid_jax.load(big)
    with jax.enable_x64(True):
        assert lucid_jax.load(big)["steps"].tolist() == [2**40]


def test_loaded_state_fits_lucid_jax_instancenorm2d():
    stem = f"{PREFIX}instancenorm2d"
    expected = expected_state(stem)
    for suffix in (".lcd", ".safetensors"):
        module = lucid_jax.nn.InstanceNorm2d(3, momentum=float(EXPECTED["momentum"]))
        module.load_state_dict(lucid_jax.load(DATA / f"{stem}{suffix}"))
        for key, value in module.state_dict().items():
            np.testing.assert_allclose(np.asarray(value), expected[key], rtol=1e-7)
        # The loaded module normalises as Lucid's would (float64 reference, Lucid semantics).
        x = EXPECTED["x"]
        y_ref, _, _ = reference_instance_norm(x, training=False, **expected)
        np.testing.assert_allclose(
            np.asarray(module.eval()(jnp.asarray(x, jnp.float32))), y_ref, rtol=2e-5, atol=2e-5
        )


@pytest.mark.usefixtures("x64")
def test_sequential_state_has_lucids_dotted_keys():
    loaded = lucid_jax.load(DATA / f"{PREFIX}sequential.lcd")
    assert list(loaded) == [
        *("0.weight", "0.bias"),
        *("1.weight", "1.bias", "1.running_mean", "1.running_var"),
    ]
    expected = expected_state(f"{PREFIX}sequential")
    assert {k: np.asarray(v).tolist() for k, v in loaded.items()} == {
        k: v.tolist() for k, v in expected.items()
    }


# --- writing what Lucid reads -------------------------------------------------------------


def _record(path: Path) -> dict:
    return read_pickle(path.read_bytes())


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("stem", ["instancenorm2d", "sequential"])
def test_save_lcd_is_structurally_lucids(tmp_path, stem):
    lucid_file = DATA / f"{PREFIX}{stem}.lcd"
    ours = lucid_jax.save(lucid_jax.load(lucid_file), tmp_path / stem)
    assert ours == (tmp_path / f"{stem}.lcd").resolve()
    theirs, mine = _record(lucid_file), _record(ours)
    assert set(mine) == set(theirs) == {"type", "format_version", "content"}
    assert mine["type"] == theirs["type"] == "OrderedDict"
    assert mine["format_version"] == theirs["format_version"] == 1.1
    assert type(mine["content"]) is type(theirs["content"]) is OrderedDict
    assert list(mine["content"]) == list(theirs["content"])
    for key, value in theirs["content"].items():
        assert type(mine["content"][key]) is np.ndarray
        assert mine["content"][key].dtype == value.dtype
        np.testing.assert_array_equal(mine["content"][key], value)
    assert ours.read_bytes()[:2] == lucid_file.read_bytes()[:2] == b"\x80\x04"  # protocol 4
    keep = os.environ.get("LUCID_JAX_CHECKPOINT_DIR")
    if keep:
        _keep_for_lucid(Path(keep), ours, expected_state(f"{PREFIX}{stem}"))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("stem", ["instancenorm2d", "sequential"])
def test_save_safetensors_is_byte_identical_to_lucids(tmp_path, stem):
    lucid_file = DATA / f"{PREFIX}{stem}.safetensors"
    ours = lucid_jax.save(lucid_jax.load(DATA / f"{PREFIX}{stem}.lcd"), tmp_path / stem, True)
    assert ours.name == f"{stem}.safetensors"
    assert ours.read_bytes() == lucid_file.read_bytes()


@pytest.mark.usefixtures("x64")
def test_save_tensor_is_structurally_lucids(tmp_path):
    lucid_file = DATA / f"{PREFIX}tensor.lct"
    ours = lucid_jax.save(lucid_jax.load(lucid_file), tmp_path / "t")
    theirs, mine = _record(lucid_file), _record(ours)
    assert ours.suffix == ".lct"
    assert {k: v for k, v in mine.items() if k != "content"} == {"type": "Tensor"} | {
        "format_version": 1.1
    }
    assert {k: v for k, v in theirs.items() if k != "content"} == {
        k: v for k, v in mine.items() if k != "content"
    }
    assert type(mine["content"]) is np.ndarray and mine["content"].dtype == np.float64
    np.testing.assert_array_equal(mine["content"], theirs["content"])


ROUND_TRIP = {
    "f64": np.linspace(-1.0, 1.0, 6).reshape(2, 3),
    "f32": np.arange(4, dtype=np.float32),
    "f16": np.array([0.5, -2.0], np.float16),
    "i32": np.array([[-3, 7]], np.int32),
    "u8": np.array([0, 255], np.uint8),
    "bool": np.array([True, False]),
    "scalar": np.array(3.25),
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("container", [OrderedDict, dict])
@pytest.mark.parametrize("safetensors", [False, True])
def test_round_trip_keeps_keys_dtypes_values(tmp_path, container, safetensors):
    state = container((k, jnp.asarray(v)) for k, v in ROUND_TRIP.items())
    if safetensors:
        state["bf16"] = jnp.asarray([1.5, -0.25], jnp.bfloat16)
        state["f8"] = jnp.asarray([[0.5], [-3.0]], jnp.float8_e4m3fn)
    path = lucid_jax.save(state, tmp_path / "state", safetensors=safetensors)
    loaded = lucid_jax.load(path)
    # lucid.load gives back the pickled mapping's type; safetensors always an OrderedDict.
    assert type(loaded) is (OrderedDict if safetensors else container)
    assert list(loaded) == (sorted(state) if safetensors else list(state))
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value), err_msg=key)
    keep = os.environ.get("LUCID_JAX_CHECKPOINT_DIR")
    if keep:  # lucid.load reads safetensors through numpy, which has no bfloat16 or float8
        portable = container(
            (k, np.asarray(v)) for k, v in state.items() if k not in ("bf16", "f8")
        )
        kept = lucid_jax.save(portable, tmp_path / "portable", safetensors=safetensors)
        _keep_for_lucid(Path(keep), kept, portable)


def _keep_for_lucid(folder: Path, path: Path, arrays: dict) -> None:
    """Copy a written file and its arrays where `record_lucid_checkpoints.py verify` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.stem}-{len(list(folder.iterdir()))}{path.suffix}"
    target.write_bytes(path.read_bytes())
    np.savez(target.with_name(target.name + ".npz"), **arrays)


@pytest.mark.usefixtures("x64")
def test_round_trip_module_buffer_and_array(tmp_path):
    module = lucid_jax.nn.InstanceNorm2d(3)
    module.load_state_dict(lucid_jax.load(DATA / f"{PREFIX}instancenorm2d.lcd"))
    state = lucid_jax.load(lucid_jax.save(module, tmp_path / "module"))
    assert list(state) == list(module.state_dict())
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(np.asarray(state[key]), np.asarray(value))
    buffer_path = lucid_jax.save(module.running_var, tmp_path / "running_var")
    assert buffer_path.suffix == ".lct"
    np.testing.assert_array_equal(lucid_jax.load(buffer_path), module.running_var.data)
    array = jnp.arange(6.0).reshape(2, 3)
    assert lucid_jax.load(lucid_jax.save(array, tmp_path / "a.lct")).tolist() == array.tolist()
    keep = os.environ.get("LUCID_JAX_CHECKPOINT_DIR")
    if keep:
        _keep_for_lucid(Path(keep), tmp_path / "a.lct", {"tensor": np.asarray(array)})


@pytest.mark.parametrize(
    ("obj", "name", "safetensors", "written"),
    [
        ("tensor", "t", False, "t.lct"),
        ("state", "s", False, "s.lcd"),
        ("module", "m", False, "m.lcd"),
        ("state", "s.lcd", True, "s.safetensors"),  # Lucid swaps any suffix
        ("module", "m.ckpt.lcd", False, "m.ckpt.lcd"),
        ("state", "s.bin", True, "s.safetensors"),
    ],
)
def test_save_chooses_the_suffix_as_lucid(tmp_path, obj, name, safetensors, written):
    objects = {
        "tensor": jnp.ones(2),
        "state": {"w": jnp.ones(2)},
        "module": lucid_jax.nn.InstanceNorm1d(2),
    }
    path = lucid_jax.save(objects[obj], tmp_path / name, safetensors=safetensors)
    assert path == (tmp_path / written).resolve()
    assert path.is_file()


@pytest.mark.parametrize(
    ("obj", "name", "safetensors", "error", "match"),
    [
        ({"w": host_ones(2)}, "s.lct", False, TypeError, r"\.lct file holds a tensor.*dict"),
        (host_ones(2), "t.lcd", False, TypeError, r"\.lcd file holds a state dict.*ArrayImpl"),
        (host_ones(2), "t", True, TypeError, r"\.safetensors file holds a state dict"),
        (3, "x", False, TypeError, r"cannot infer the file extension.*int"),
        ({"w": host_ones(2)}, "s.pt", False, ValueError, r"unsupported file extension '\.pt'"),
        ({1: host_ones(2)}, "s.lcd", False, TypeError, r"keys must be strings; got 1"),
        ({"w": [1.0]}, "s.lcd", False, TypeError, r"'w' must be an array.*list"),
        ({"w": host_ones(2, jnp.bfloat16)}, "s.lcd", False, TypeError, r"bfloat16.*\.lcd"),
        ({"w": np.array(["a"])}, "s", True, TypeError, r"'w' has dtype <U1.*safetensors"),
    ],
)
def test_save_refuses_what_lucid_cannot_read(tmp_path, obj, name, safetensors, error, match):
    with pytest.raises(error, match=match):
        lucid_jax.save(obj, tmp_path / name, safetensors=safetensors)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_existing_file(tmp_path):
    path = lucid_jax.save({"w": jnp.ones(2)}, tmp_path / "s.lcd")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        lucid_jax.save({"w": jnp.zeros(2), "b": "not an array"}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.lcd"]  # no temporary left behind
