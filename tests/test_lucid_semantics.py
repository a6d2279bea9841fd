"""Module details against the real Lucid 2.14.5 (`tests/data/lucid_2_14_5_module_semantics.json`).

Each test runs the recorded experiment on lucid-jax. Where lucid-jax matches Lucid it checks
the same answer; where it differs on purpose (`docs/semantics.md`, "Module details against
Lucid") it checks the recording still shows Lucid's behaviour and lucid-jax the documented one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lucid_jax import nn

RECORD = json.loads(
    (Path(__file__).parent / "data" / "lucid_2_14_5_module_semantics.json").read_text()
)


def _tolerance(*dtypes):
    # Lucid rounds some steps to float32 when any operand is float32 (numpy keeps `var + eps`
    # float32), so the result is float32-accurate unless everything is float64.
    if all(dtype == "float64" for dtype in dtypes):
        return {"rtol": 1e-12, "atol": 1e-12}
    return {"rtol": 1e-6, "atol": 1e-6}


@pytest.mark.parametrize(
    "case",
    RECORD["eval_dtypes"]["cases"],
    ids=lambda c: f"x_{c['input_dtype']}-stats_{c['stats_dtype']}-affine_{c['affine_dtype']}",
)
def test_output_dtype_promotes_as_lucids_in_eval_and_training(case):
    data = RECORD["eval_dtypes"]
    with jax.enable_x64(True):
        m = nn.InstanceNorm1d(2)
        m.running_mean.data = jnp.asarray(data["running_mean"], case["stats_dtype"])
        m.running_var.data = jnp.asarray(data["running_var"], case["stats_dtype"])
        m.weight.data = jnp.asarray(data["weight"], case["affine_dtype"])
        m.bias.data = jnp.asarray(data["bias"], case["affine_dtype"])
        x = jnp.asarray(data["x"], case["input_dtype"])
        y_eval = m.eval()(x)
        assert y_eval.dtype == case["eval_dtype"]
        dtypes = (case["input_dtype"], case["stats_dtype"], case["affine_dtype"])
        np.testing.assert_allclose(y_eval, case["eval_y"], **_tolerance(*dtypes))
        assert m.train()(x).dtype == case["train_dtype"]


def test_without_x64_every_output_is_float32():
    m = nn.InstanceNorm1d(2).eval()
    m.running_mean.data = np.zeros(2)  # float64 NumPy: float32 in JAX without x64
    assert m(np.asarray(RECORD["eval_dtypes"]["x"])).dtype == jnp.float32


def test_parameter_dtypes_are_lucids():
    recorded = RECORD["parameter_dtypes"]
    f64 = np.array([1.0, 2.0])
    with jax.enable_x64(True):
        ours = {
            # Lucid's Tensor is a JAX array here.
            "parameter_of_float64_tensor": nn.Parameter(jnp.asarray(f64)),
            "parameter_of_float64_tensor_dtype_float64": nn.Parameter(
                jnp.asarray(f64), dtype=jnp.float64
            ),
            "parameter_of_float32_tensor": nn.Parameter(jnp.asarray(f64, jnp.float32)),
            "parameter_of_int64_tensor": nn.Parameter(jnp.asarray([1, 2])),
            "parameter_of_parameter": nn.Parameter(nn.Parameter(f64, dtype=jnp.float64)),
            "parameter_of_buffer": nn.Parameter(nn.Buffer(jnp.asarray(f64))),
            "parameter_of_numpy_float64": nn.Parameter(f64),
            "parameter_of_list": nn.Parameter([1.0, 2.0]),
            "parameter_of_float": nn.Parameter(1.0),
            "buffer_of_float64_tensor": nn.Buffer(jnp.asarray(f64)),
        }
        assert {key: str(holder.dtype) for key, holder in ours.items()} == {
            key: recorded[key] for key in ours
        }
        copied = nn.Parameter(jnp.asarray(f64), dtype=jnp.float64)
        assert copy.deepcopy(copied).dtype == jnp.float64  # copies keep the dtype
        state = {key: str(v.dtype) for key, v in nn.InstanceNorm2d(3).state_dict().items()}
    # Running statistics as Lucid's; weight and bias stay float64 on purpose (docs/semantics.md).
    lucid_state = recorded["instancenorm2d_state"]
    assert {k: state[k] for k in ("running_mean", "running_var")} == {
        k: lucid_state[k] for k in ("running_mean", "running_var")
    }
    assert lucid_state["weight"] == lucid_state["bias"] == "float32"
    assert state["weight"] == state["bias"] == "float64"


def test_del_unregisters_the_name_where_lucid_keeps_a_dangling_key():
    recorded = RECORD["del_bias"]
    assert recorded["keys"] == ["weight", "bias", "running_mean", "running_var"]
    m = nn.InstanceNorm1d(2)
    del m.bias
    assert list(m.state_dict()) == [key for key in recorded["keys"] if key != "bias"]
    assert hasattr(m, "bias") == recorded["hasattr_bias"]
    with pytest.raises(AttributeError, match="bias"):  # recorded: AttributeError too
        m(jnp.asarray(RECORD["eval_dtypes"]["x"]))
    assert recorded["forward_error"] == "AttributeError"


def test_dotted_names_are_refused_where_lucid_accepts_them():
    assert RECORD["dotted_buffer"]["keys"] == ["a.b"]
    m = nn.Module()
    with pytest.raises(ValueError, match=r"without '\.'"):
        m.register_buffer("a.b", np.zeros(2))
    assert list(m.state_dict()) == []


def test_train_with_an_int_is_lucids_mode():
    recorded = RECORD["train_int"]
    assert recorded["training"] == "0"
    with jax.enable_x64(True):
        m = nn.InstanceNorm1d(2)
        m.train(0)
        assert m.training is False and all(not sub.training for sub in m.modules())
        y = m(jnp.asarray(RECORD["eval_dtypes"]["x"]))
        np.testing.assert_allclose(y, recorded["y"], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(m.running_mean.data, recorded["running_mean_after"])
        assert m.train(1).training is True


def test_assigning_an_array_rebinds_one_name_and_leaves_the_shared_buffer_alone():
    recorded = RECORD["shared_buffer_assignment"]
    a, b = nn.InstanceNorm1d(2), nn.InstanceNorm1d(2)
    b.running_mean = a.running_mean
    shared = a.running_mean
    a.running_mean = np.full(2, 5.0)
    # As Lucid: the other module keeps the shared Buffer, unchanged.
    assert list(b.state_dict()) == recorded["b_keys"]
    assert b.running_mean is shared
    np.testing.assert_array_equal(b.running_mean.data, recorded["b_running_mean"])
    np.testing.assert_array_equal(a.running_mean.data, recorded["a_attribute"])
    # Unlike Lucid (which drops the name from the module), it stays a registered Buffer.
    assert "running_mean" not in recorded["a_keys"]
    assert list(a.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert isinstance(a.running_mean, nn.Buffer)
    b.train()(jnp.ones((1, 2, 4)))  # b's training updates its own Buffer only
    np.testing.assert_array_equal(a.running_mean.data, [5.0, 5.0])


def _values(module):
    return [np.asarray(v).tolist() for v in module.state_dict().values()]


def test_parameter_list_and_dict_match_lucid():
    recorded = RECORD["parameter_containers"]
    with jax.enable_x64(True):
        plist = nn.ParameterList([nn.Parameter(np.zeros(2)), nn.Parameter(np.ones(3))])
        pdict = nn.ParameterDict({"w": nn.Parameter(np.zeros(1)), "a": nn.Parameter(np.ones(1))})
        holder = nn.Module()
        holder.gains = plist
        holder.scales = pdict
        assert list(holder.state_dict()) == recorded["keys"]
        assert [name for name, _ in holder.named_parameters()] == recorded["keys"]
        plist.append(nn.Parameter(np.full(1, 2.0)))
        assert _values(plist) == recorded["after_append"]
        plist.insert(0, nn.Parameter(np.full(1, 7.0)))
        assert list(plist.state_dict()) == recorded["insert_keys"]
        assert _values(plist) == recorded["after_insert"]
        del plist[1]
        assert list(plist.state_dict()) == recorded["delete_keys"]
        assert _values(plist) == recorded["after_delete"]
        assert [np.asarray(p.data).tolist() for p in plist[1:]] == recorded["slice"]
        assert isinstance(plist[1:], nn.ParameterList)
        assert np.asarray(plist[-1].data).tolist() == recorded["last"]
        plist[0] = nn.Parameter(np.full(1, 9.0))
        # Lucid moves the replaced entry last; here it keeps its position (docs/semantics.md).
        assert recorded["replace_keys"] == ["1", "2", "0"]
        assert list(plist.state_dict()) == ["0", "1", "2"]
        assert sorted(_values(plist)) == sorted(recorded["after_replace"])
        pdict["a"] = nn.Parameter(np.full(1, 3.0))
        pdict["z"] = nn.Parameter(np.full(1, 4.0))
        assert list(pdict.state_dict()) == recorded["dict_keys"]
        assert np.asarray(pdict.pop("w").data).tolist() == recorded["dict_pop"]
        assert {k: np.asarray(v.data).tolist() for k, v in pdict.items()} == recorded[
            "dict_after_pop"
        ]
        assert [len(plist), len(pdict)] == recorded["len"]
        assert "a" in pdict and "w" not in pdict
    assert recorded["errors"] == {"list_append_array": "TypeError", "dict_set_array": "TypeError"}
    with pytest.raises(TypeError, match=r"append: expected a Parameter; got ndarray"):
        plist.append(np.zeros(1))
    with pytest.raises(TypeError, match=r"__setitem__: expected a Parameter; got ndarray"):
        pdict["q"] = np.zeros(1)
    with pytest.raises(TypeError, match="index must be an int or a slice; got str"):
        plist["x"]  # Lucid returns (does not raise) a TypeError here
    with pytest.raises(IndexError, match="out of range"):
        plist[3]
    with pytest.raises(ValueError, match=r"without '\.'"):
        pdict["a.b"] = nn.Parameter(np.zeros(1))
    assert list(pdict) == ["a", "z"]


def test_parameter_lists_run_under_functional_call_and_load_state_dicts():
    class Gains(nn.Module):
        def __init__(self):
            super().__init__()
            self.gains = nn.ParameterList([nn.Parameter(jnp.ones(2)) for _ in range(2)])

        def forward(self, x):
            for gain in self.gains:
                x = x * gain.data
            return x

    model = Gains()
    model.load_state_dict({"gains.0": np.array([2.0, 3.0]), "gains.1": np.array([0.5, 1.0])})
    np.testing.assert_array_equal(model(jnp.ones(2)), [1.0, 3.0])
    grads = jax.grad(lambda s: nn.functional_call(model, s, jnp.ones(2))[0].sum())(
        {"gains.0": jnp.array([2.0, 3.0])}
    )
    np.testing.assert_array_equal(grads["gains.0"], [0.5, 1.0])


def test_subnormal_running_statistics_agree_up_to_flushing():
    """numpy keeps subnormal numbers; XLA on CPU flushes them to zero: equal up to `tiny`."""
    recorded = RECORD["subnormal_running_stats"]
    assert recorded["running_mean_after_step"] != 0.0  # Lucid kept the subnormal
    tiny = float(np.finfo(np.float64).tiny)
    with jax.enable_x64(True):
        m = nn.InstanceNorm1d(1, momentum=recorded["momentum"])
        m.running_mean.data = jnp.asarray([recorded["running_mean_in"]])
        x = jnp.zeros((1, 1, 2))
        eval_y = np.asarray(m.eval()(x))
        m.train()(x)
        after = float(m.running_mean.data[0])
    np.testing.assert_allclose(eval_y, recorded["eval_y"], rtol=0, atol=tiny)
    assert abs(after - recorded["running_mean_after_step"]) <= tiny
