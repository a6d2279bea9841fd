"""`functional_call`: a module run as a pure function of its state, under JAX transformations.

References are the float64 numpy implementation in conftest (and finite differences of it for
gradients); every test also checks that the module object was left as it was.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import host_ones, reference_instance_norm

import lucid_jax.nn.functional as F
from lucid_jax import nn

MOMENTUM = 0.3


def _model():
    norm = nn.InstanceNorm1d(3, momentum=MOMENTUM)
    norm.load_state_dict(
        {
            "weight": np.array([1.5, -0.5, 2.0]),
            "bias": np.array([0.1, 0.2, -0.3]),
            "running_mean": np.array([0.5, -1.0, 2.0]),
            "running_var": np.array([2.0, 0.5, 1.5]),
        }
    )
    return norm


def _x(seed=0, shape=(2, 3, 5)):
    return jnp.asarray(np.random.default_rng(seed).normal(1.0, 2.0, shape), jnp.float32)


def _snapshot(module):
    return {key: np.asarray(value) for key, value in module.state_dict().items()}


def _assert_unchanged(module, snapshot):
    for key, value in module.state_dict().items():
        assert not isinstance(value, jax.core.Tracer), key
        np.testing.assert_array_equal(np.asarray(value), snapshot[key], err_msg=key)


def _expected(state, x, training=True):
    y, mean, var = reference_instance_norm(
        x,
        state["running_mean"],
        state["running_var"],
        state["weight"],
        state["bias"],
        training=training,
        momentum=MOMENTUM,
    )
    return y, {**state, "running_mean": mean, "running_var": var}


def test_given_keys_override_missing_keys_take_current_values_and_state_comes_back_full():
    model = _model()
    before = _snapshot(model)
    weight = jnp.array([3.0, 1.0, -1.0])
    x = _x()
    y, new_state = nn.functional_call(model, {"weight": weight}, x)
    ref_y, ref_state = _expected({**before, "weight": np.asarray(weight)}, x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    assert list(new_state) == ["weight", "bias", "running_mean", "running_var"]
    for key, value in new_state.items():
        np.testing.assert_allclose(value, ref_state[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert new_state["weight"] is weight
    _assert_unchanged(model, before)


def test_evaluation_mode_normalises_with_the_given_running_stats_and_keeps_them():
    model = _model().eval()
    before = _snapshot(model)
    state = {"running_mean": jnp.array([1.0, 2.0, 3.0]), "running_var": jnp.array([4.0, 1.0, 2.0])}
    x = _x(1)
    y, new_state = nn.functional_call(model, state, x)
    ref_y, _ = _expected({**before, **{k: np.asarray(v) for k, v in state.items()}}, x, False)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    assert new_state["running_mean"] is state["running_mean"]
    _assert_unchanged(model, before)


def test_under_jit():
    model = _model()
    before = _snapshot(model)
    x = _x(2)
    run = jax.jit(lambda state, x: nn.functional_call(model, state, x))
    y, new_state = run(model.state_dict(), x)
    ref_y, ref_state = _expected(before, x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["running_var"], ref_state["running_var"], rtol=1e-5)
    # A second step from the returned state: the running stats compose.
    _, second = run(new_state, x)
    _, ref_second = _expected(ref_state, x)
    np.testing.assert_allclose(second["running_mean"], ref_second["running_mean"], rtol=1e-5)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("transform", ["grad", "value_and_grad"])
def test_gradients_match_finite_differences_of_the_reference(transform):
    with jax.enable_x64(True):
        model = nn.Sequential(nn.InstanceNorm1d(3, momentum=MOMENTUM))
        model.load_state_dict({f"0.{k}": v for k, v in _snapshot(_model()).items()})
        before = _snapshot(model)
        x = jnp.asarray(np.random.default_rng(3).normal(1.0, 2.0, (2, 3, 5)))
        target = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 5)))
        params = {"0.weight": model[0].weight.data, "0.bias": model[0].bias.data}

        def loss(params):
            y, new_state = nn.functional_call(model, params, x)
            return jnp.mean((y - target) ** 2), new_state

        if transform == "grad":
            grads, new_state = jax.grad(loss, has_aux=True)(params)
        else:
            (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        _assert_unchanged(model, before)

    def reference_loss(weight, bias):
        y = reference_instance_norm(x, weight=weight, bias=bias)[0]
        return np.mean((y - np.asarray(target)) ** 2)

    w, b = before["0.weight"], before["0.bias"]
    step = 1e-6
    for name, index in (("0.weight", 0), ("0.bias", 1)):
        expected = np.zeros(3)
        for c in range(3):
            args_plus, args_minus = [w.copy(), b.copy()], [w.copy(), b.copy()]
            args_plus[index][c] += step
            args_minus[index][c] -= step
            expected[c] = (reference_loss(*args_plus) - reference_loss(*args_minus)) / (2 * step)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-6, atol=1e-9)
    if transform == "value_and_grad":
        np.testing.assert_allclose(value, reference_loss(w, b), rtol=1e-12)
    _, ref_state = _expected({k[2:]: v for k, v in before.items()}, x)
    np.testing.assert_allclose(new_state["0.running_mean"], ref_state["running_mean"], rtol=1e-12)


def test_under_vmap_over_a_batch_of_states():
    model = _model()
    before = _snapshot(model)
    weights = jnp.asarray(np.random.default_rng(5).normal(size=(4, 3)), jnp.float32)
    x = _x(6)
    ys, new_states = jax.vmap(lambda w: nn.functional_call(model, {"weight": w}, x))(weights)
    assert ys.shape == (4, 2, 3, 5) and new_states["running_mean"].shape == (4, 3)
    for i in range(4):
        ref_y, ref_state = _expected({**before, "weight": np.asarray(weights[i])}, x)
        np.testing.assert_allclose(ys[i], ref_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            new_states["running_mean"][i], ref_state["running_mean"], rtol=1e-5
        )
    _assert_unchanged(model, before)


class _Fails(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_a_call_that_raises_leaves_the_module_as_it_was():
    model = nn.Sequential(_model(), _Fails())
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        nn.functional_call(model, {"0.weight": jnp.zeros(3)}, _x())
    _assert_unchanged(model, before)
    model[0](_x())  # the Buffers still update in place outside functional_call
    with pytest.raises(AssertionError):
        _assert_unchanged(model, before)


class _Pause(nn.Module):
    """Runs its norm, then waits for the test to let it finish."""

    def __init__(self, reached, release):
        super().__init__()
        self.norm = _model()
        self.reached, self.release = reached, release

    def forward(self, x):
        y = self.norm(x)
        self.reached.set()
        assert self.release.wait(30)
        return y


def test_another_thread_sees_and_updates_the_modules_own_buffers_meanwhile():
    reached, release = threading.Event(), threading.Event()
    model = _Pause(reached, release)
    before = _snapshot(model)
    given = {"norm.running_mean": jnp.array([9.0, 9.0, 9.0])}
    x, other_x = _x(7), _x(8)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(out=nn.functional_call(model, given, x)), daemon=True
    )
    worker.start()
    assert reached.wait(30)
    # Mid-call in the worker: this thread reads the module's own arrays and updates them.
    np.testing.assert_array_equal(model.norm.running_mean.data, before["norm.running_mean"])
    model.norm(other_x)
    release.set()
    worker.join(30)
    _, new_state = result["out"]
    norm_before = {k[len("norm.") :]: v for k, v in before.items()}
    _, ref_call = _expected({**norm_before, "running_mean": np.full(3, 9.0)}, x)
    _, ref_own = _expected(norm_before, other_x)
    np.testing.assert_allclose(new_state["norm.running_mean"], ref_call["running_mean"], rtol=1e-5)
    np.testing.assert_allclose(model.norm.running_mean.data, ref_own["running_mean"], rtol=1e-5)
    np.testing.assert_allclose(model.norm.running_var.data, ref_own["running_var"], rtol=1e-5)


def test_a_shared_parameter_is_one_value():
    first, second = nn.InstanceNorm1d(3), nn.InstanceNorm1d(3)
    second.weight = first.weight
    model = nn.Sequential(first, second)
    weight = jnp.array([2.0, 2.0, 2.0])
    x = _x(9)
    y, new_state = nn.functional_call(model, {"1.weight": weight}, x)
    assert new_state["0.weight"] is weight and new_state["1.weight"] is weight
    inner = reference_instance_norm(x, weight=np.full(3, 2.0))[0]
    np.testing.assert_allclose(
        y, reference_instance_norm(inner, weight=np.full(3, 2.0))[0], atol=1e-4
    )
    with pytest.raises(ValueError, match=r"'0.weight' and '1.weight' are one shared entry"):
        nn.functional_call(model, {"0.weight": weight, "1.weight": weight + 1}, x)


@pytest.mark.parametrize(
    "module, state, error, message",
    [
        ("model", {"weights": host_ones(3)}, ValueError, r"keys \['weights'\] are not in"),
        ("model", {"weight": host_ones(4)}, ValueError, r"'weight' has shape \(4,\)"),
        ("model", {"weight": host_ones(3, bool)}, TypeError, "'weight' has dtype bool"),
        ("model", {"bias": host_ones(3, np.complex64)}, TypeError, "'bias' has dtype complex64"),
        ("model", {"bias": None}, TypeError, "'bias' is None"),
        ("model", [("weight", host_ones(3))], TypeError, "state must be a mapping .* got list"),
        (lambda x: x, {}, TypeError, "module must be a lucid_jax.nn.Module; got function"),
    ],
)
def test_bad_arguments_are_named(module, state, error, message):
    model = _model()
    before = _snapshot(model)
    with pytest.raises(error, match=message):
        nn.functional_call(model if module == "model" else module, state, _x())
    _assert_unchanged(model, before)


def test_the_shim_still_refuses_to_write_a_tracer_outside_functional_call():
    model = _model()
    before = _snapshot(model)
    with pytest.raises(TypeError, match=r"functional_call\(module, state, x\)"):
        jax.jit(model)(_x())
    _assert_unchanged(model, before)
    y = jax.jit(model.eval())(_x())  # no write in evaluation: fine
    np.testing.assert_allclose(y, _expected(before, _x(), training=False)[0], rtol=1e-5, atol=1e-5)


def test_buffers_and_parameters_pass_into_transformations_as_pytrees():
    param = nn.Parameter(jnp.array([1.0, 2.0]))
    doubled = jax.jit(lambda p: p * 2)(param)
    np.testing.assert_array_equal(doubled, [2.0, 4.0])
    grad = jax.grad(lambda p: jnp.sum(p.data**2))(param)
    assert isinstance(grad, nn.Parameter)
    np.testing.assert_array_equal(grad.data, [2.0, 4.0])
    rm, rv = nn.Buffer(jnp.zeros(3)), nn.Buffer(jnp.ones(3))
    with pytest.raises(TypeError, match="functional_call"):
        jax.jit(lambda x, rm, rv: F.instance_norm(x, rm, rv))(_x(), rm, rv)
    np.testing.assert_array_equal(rm.data, np.zeros(3))
    y = jax.jit(lambda x, rm, rv: F.instance_norm(x, rm, rv, training=False))(_x(), rm, rv)
    expected = reference_instance_norm(_x(), np.zeros(3), np.ones(3), training=False)[0]
    np.testing.assert_allclose(y, expected, atol=1e-5)


class _Reassigns(nn.Module):
    """Assigns its norm's weight inside forward, as Lucid code may."""

    def __init__(self):
        super().__init__()
        self.norm = _model()

    def forward(self, x):
        self.norm.weight = self.norm.weight.data * 2
        return self.norm(x)


def test_assignments_inside_forward_land_in_the_new_state_not_the_module():
    model = _Reassigns()
    before = _snapshot(model)
    y, new_state = nn.functional_call(model, {}, _x(10))
    np.testing.assert_allclose(new_state["norm.weight"], before["norm.weight"] * 2)
    norm_before = {k[len("norm.") :]: v for k, v in before.items()}
    ref_y, _ = _expected({**norm_before, "weight": norm_before["weight"] * 2}, _x(10))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    _assert_unchanged(model, before)


def test_nested_calls_see_the_outer_calls_values():
    outer = nn.Sequential(_model())
    before = _snapshot(outer)
    given = jnp.array([7.0, 8.0, 9.0])

    def inner_call(x):
        return nn.functional_call(outer[0], {}, x)

    class Outer(nn.Module):
        def forward(self, x):
            return inner_call(x)

    wrapper = Outer()
    wrapper.inner = outer
    (_, inner_state), outer_state = nn.functional_call(
        wrapper, {"inner.0.running_mean": given}, _x(11)
    )
    norm_before = {k[len("0.") :]: v for k, v in before.items()}
    _, ref = _expected({**norm_before, "running_mean": np.asarray(given)}, _x(11))
    np.testing.assert_allclose(inner_state["running_mean"], ref["running_mean"], rtol=1e-5)
    # The inner call is pure too: the outer call's value is left as given.
    assert outer_state["inner.0.running_mean"] is given
    _assert_unchanged(outer, before)
