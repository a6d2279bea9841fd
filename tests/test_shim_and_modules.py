"""The Lucid face: Buffer, the stateful shim and InstanceNorm1d/2d/3d modules."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, reference_instance_norm

import lucid_jax
import lucid_jax.nn.functional as F
from lucid_jax import Tensor
from lucid_jax.nn import Buffer, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, Parameter


def _x(rng, shape=(2, 3, 5)):
    return jnp.asarray(rng.normal(1.0, 2.0, shape), jnp.float32)


def test_buffer_behaves_like_an_array():
    buf = Buffer(jnp.array([1.0, 2.0]))
    assert buf.shape == (2,) and buf.dtype == jnp.float32 and buf.ndim == 1 and len(buf) == 2
    np.testing.assert_array_equal(np.asarray(buf), [1.0, 2.0])
    np.testing.assert_array_equal(jnp.asarray(buf), [1.0, 2.0])
    np.testing.assert_array_equal(buf + 1, [2.0, 3.0])
    np.testing.assert_array_equal(2 * buf, [2.0, 4.0])
    np.testing.assert_array_equal(buf.sum(), 3.0)
    assert float(buf[1]) == 2.0
    assert repr(buf) == "Buffer([1., 2.], dtype=float32)"
    buf.data = [5.0, 6.0]
    np.testing.assert_array_equal(buf.data, [5.0, 6.0])


def test_shim_updates_buffers_in_place_with_lucid_formula(rng):
    x = _x(rng)
    rm, rv = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))
    y = F.instance_norm(x, rm, rv, momentum=0.3)
    ref_y, ref_mean, ref_var = reference_instance_norm(x, np.zeros(3), np.ones(3), momentum=0.3)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm.data, ref_mean, rtol=1e-5)
    np.testing.assert_allclose(rv.data, ref_var, rtol=1e-5)


def test_plain_arrays_as_running_stats_are_left_as_they_are(rng):
    rm, rv = jnp.zeros(3), jnp.ones(3)
    F.instance_norm(_x(rng), rm, rv, momentum=0.5)
    np.testing.assert_array_equal(rm, np.zeros(3))
    np.testing.assert_array_equal(rv, np.ones(3))


def test_shim_does_not_write_buffers_when_not_training(rng):
    rm, rv = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3) * 2)
    before = rm.data, rv.data
    x = _x(rng)
    y = F.instance_norm(x, rm, rv, training=False)
    assert rm.data is before[0] and rv.data is before[1]
    expected = reference_instance_norm(x, np.zeros(3), np.ones(3) * 2, training=False)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
def test_shim_under_transformation_with_buffers_raises_and_keeps_buffers(rng, transform):
    x = _x(rng)
    rm, rv = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))

    def f(x):
        return F.instance_norm(x, rm, rv).sum()

    wrapped = {"jit": jax.jit(f), "vmap": jax.vmap(f), "grad": jax.grad(f)}[transform]
    arg = x[None] if transform == "vmap" else x
    with pytest.raises(TypeError, match=r"lucid_jax\.instance_norm"):
        wrapped(arg)
    np.testing.assert_array_equal(rm.data, np.zeros(3))
    np.testing.assert_array_equal(rv.data, np.ones(3))
    assert not isinstance(rm.data, jax.core.Tracer)


def test_shim_under_jit_is_fine_without_a_buffer_write(rng):
    x = _x(rng)
    rm, rv = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))
    y = jax.jit(lambda x: F.instance_norm(x, rm, rv, training=False))(x)
    np.testing.assert_allclose(y, F.instance_norm(x, rm, rv, training=False), rtol=1e-6)
    y = jax.jit(lambda x: F.instance_norm(x))(x)
    np.testing.assert_allclose(y, reference_instance_norm(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cls, ndim", [(InstanceNorm1d, 3), (InstanceNorm2d, 4), (InstanceNorm3d, 5)]
)
def test_module_defaults_and_rank_checks(cls, ndim):
    m = cls(4)
    assert isinstance(m.weight, Parameter) and isinstance(m.running_mean, Buffer)
    np.testing.assert_array_equal(m.weight.data, np.ones(4))
    np.testing.assert_array_equal(m.bias.data, np.zeros(4))
    np.testing.assert_array_equal(m.running_mean.data, np.zeros(4))
    np.testing.assert_array_equal(m.running_var.data, np.ones(4))
    assert m.training
    assert repr(m) == (
        f"{cls.__name__}(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )
    for wrong in (ndim - 1, ndim + 1):
        with pytest.raises(ValueError, match=f"expected a {ndim}-D input"):
            m(jnp.ones((2, 4) + (3,) * (wrong - 2)))
    plain = cls(4, affine=False, track_running_stats=False)
    assert plain.weight is None and plain.running_mean is None
    assert plain.state_dict() == {}


def test_module_train_eval_and_momentum_none(rng):
    m = InstanceNorm1d(3, momentum=None)
    x = _x(rng)
    m(x)
    _, ref_mean, ref_var = reference_instance_norm(x, np.zeros(3), np.ones(3), momentum=0.1)
    np.testing.assert_allclose(m.running_mean.data, ref_mean, rtol=1e-5)
    assert m.eval() is m and not m.training
    y = m(x)
    np.testing.assert_allclose(
        y, reference_instance_norm(x, ref_mean, ref_var, training=False)[0], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(m.running_mean.data, ref_mean, rtol=1e-5)  # unchanged in eval
    assert m.train().training


def test_module_weight_assignment_both_ways(rng):
    m = InstanceNorm1d(3)
    m.weight = jnp.array([1.0, 2.0, 3.0])
    assert isinstance(m.weight, Parameter)
    m.bias.data = jnp.array([0.5, 0.5, 0.5])
    x = _x(rng)
    y = m(x)
    ref = reference_instance_norm(x, weight=[1.0, 2.0, 3.0], bias=[0.5] * 3)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert [name for name, _ in m.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in m.named_buffers()] == ["running_mean", "running_var"]


def test_reset_running_stats_and_parameters(rng):
    m = InstanceNorm2d(3)
    m(_x(rng, (2, 3, 4, 4)))
    m.weight = jnp.full(3, 7.0)
    m.reset_running_stats()
    np.testing.assert_array_equal(m.running_mean.data, np.zeros(3))
    np.testing.assert_array_equal(m.weight.data, np.full(3, 7.0))
    m(_x(rng, (2, 3, 4, 4)))
    m.reset_parameters()
    np.testing.assert_array_equal(m.running_var.data, np.ones(3))
    np.testing.assert_array_equal(m.weight.data, np.ones(3))


def test_state_dict_round_trip(rng):
    m = InstanceNorm3d(2, momentum=0.5)
    m.weight = jnp.array([2.0, 3.0])
    m(_x(rng, (2, 2, 3, 3, 3)))
    state = m.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var"]
    other = InstanceNorm3d(2, momentum=0.5)
    other.load_state_dict(state)
    for key in state:
        np.testing.assert_array_equal(other.state_dict()[key], state[key])
    x = _x(rng, (1, 2, 3, 3, 3))
    np.testing.assert_array_equal(m.eval()(x), other.eval()(x))


def test_load_state_dict_checks_everything_before_changing_anything():
    m = InstanceNorm1d(2)
    bad = {
        "weight": jnp.full(2, 5.0),
        "bias": jnp.zeros(2),
        "running_mean": jnp.zeros(3),
        "running_var": jnp.ones(2),
    }
    with pytest.raises(ValueError, match="running_mean"):
        m.load_state_dict(bad)
    np.testing.assert_array_equal(m.weight.data, np.ones(2))
    with pytest.raises(KeyError, match="missing"):
        m.load_state_dict({"weight": jnp.ones(2)})
    m.load_state_dict({"weight": jnp.full(2, 5.0)}, strict=False)
    np.testing.assert_array_equal(m.weight.data, np.full(2, 5.0))


LUCID_TENSOR_DTYPES = json.loads((DATA / "lucid_2_14_5_tensor_dtypes.json").read_text())["cases"]


@pytest.mark.parametrize("case", LUCID_TENSOR_DTYPES, ids=lambda case: case["data"])
def test_tensor_dtypes_are_lucid_s(case):
    data = eval(case["data"], {"np": np})  # the recording's own expression
    dtype = case.get("dtype_argument")
    with jax.enable_x64(True):
        assert Tensor(data, dtype=dtype).dtype == np.dtype(case["dtype"])
    # Without x64, JAX's canonical dtype of Lucid's (float64 -> float32, int64 -> int32).
    assert Tensor(data, dtype=dtype).dtype == jax.dtypes.canonicalize_dtype(case["dtype"])


def test_tensor_takes_lucid_s_keywords_and_checks_them():
    x = Tensor([1.0], requires_grad=True, keep_grad=False, device="gpu")
    np.testing.assert_array_equal(x, [1.0])
    with pytest.raises(ValueError, match=r"device must be one of.*'tpu'"):
        Tensor([1.0], device="tpu")
    with pytest.raises(TypeError, match="requires_grad and keep_grad must be bools"):
        Tensor([1.0], requires_grad="yes")


def test_pure_and_shim_agree(rng):
    x = _x(rng)
    rm, rv = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))
    y = F.instance_norm(x, rm, rv, None, None, True, 0.2, 1e-3)
    out = lucid_jax.instance_norm(x, jnp.zeros(3), jnp.ones(3), momentum=0.2, eps=1e-3)
    np.testing.assert_array_equal(y, out.output)
    np.testing.assert_array_equal(rm.data, out.running_mean)
    np.testing.assert_array_equal(rv.data, out.running_var)
