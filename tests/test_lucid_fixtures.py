"""Parity with recordings of the real Lucid 2.14.5, through every face of lucid-jax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FUNCTIONAL_CASES, MODULE_CASES, case_id, host_array

import lucid_jax
import lucid_jax.nn.functional as F
from lucid_jax.nn import Buffer, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d

#: The parity claims are the formulas' (biased variance, the running-statistics update, what
#: happens to each kind of running statistic), at tolerances far above the rounding XLA's
#: optimisations can change, so the programs compile unoptimised (`conftest.xla_optimisations_off`:
#: the same HLO, less optimised machine code). Compiling is most of this module's time: 158
#: programs (each recording's shape, dtype and arguments), 11.5 s against 15.2 s optimised; on one
#: worker (the fixture's group), where split over two each compiled most of them (250 programs).
#: The optimised program's accuracy is test_numerics' (within 1e-6 of float64).
pytestmark = pytest.mark.usefixtures("unoptimised_module")

DTYPES = {"float32": dict(rtol=2e-4, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-10)}
MODULES = {
    "InstanceNorm1d": InstanceNorm1d,
    "InstanceNorm2d": InstanceNorm2d,
    "InstanceNorm3d": InstanceNorm3d,
}


def _assert_close(actual, expected, dtype):
    assert actual.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **DTYPES[dtype])


def _inputs(case, dtype):
    a = case["arrays"]
    cast = lambda name: host_array(a[name], dtype) if name in a else None  # noqa: E731
    return (
        cast("x"),
        cast("running_mean_in"),
        cast("running_var_in"),
        cast("weight"),
        cast("bias"),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FUNCTIONAL_CASES, ids=case_id)
def test_shim_matches_lucid(case, dtype):
    with jax.enable_x64(dtype == "float64"):
        x, rm, rv, w, b = _inputs(case, dtype)
        if case["stats"] == "buffer":
            rm, rv = Buffer(rm), Buffer(rv)
        y = F.instance_norm(x, rm, rv, w, b, case["training"], case["momentum"], case["eps"])
        _assert_close(y, case["arrays"]["y"], dtype)
        if case["stats"] == "buffer":
            # Lucid updated Buffers in place; so must we.
            _assert_close(rm.data, case["arrays"]["running_mean_out"], dtype)
            _assert_close(rv.data, case["arrays"]["running_var_out"], dtype)
        elif case["stats"] == "plain":
            # Lucid left plain tensors unchanged (the update is lost): the recording says so.
            np.testing.assert_array_equal(
                case["arrays"]["running_mean_out"], case["arrays"]["running_mean_in"]
            )
            _assert_close(rm, case["arrays"]["running_mean_in"], dtype)
            _assert_close(rv, case["arrays"]["running_var_in"], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FUNCTIONAL_CASES, ids=case_id)
def test_pure_function_matches_lucid(case, dtype):
    with jax.enable_x64(dtype == "float64"):
        x, rm, rv, w, b = _inputs(case, dtype)
        out = lucid_jax.instance_norm(
            x, rm, rv, w, b, case["training"], case["momentum"], case["eps"]
        )
        _assert_close(out.output, case["arrays"]["y"], dtype)
        if case["stats"] == "none":
            assert out.running_mean is None and out.running_var is None
        elif case["stats"] == "buffer" or not case["training"]:
            # The pure function returns what Lucid wrote into its Buffers.
            _assert_close(out.running_mean, case["arrays"]["running_mean_out"], dtype)
            _assert_close(out.running_var, case["arrays"]["running_var_out"], dtype)
        else:
            # Plain + training: Lucid lost the update; the pure function returns it.
            a = case["arrays"]
            batch_mean = a["x"].astype(np.float64).mean(axis=tuple(range(2, a["x"].ndim)))
            old = a["running_mean_in"].astype(np.float64)
            expected = case["momentum"] * batch_mean.mean(0) + (1 - case["momentum"]) * old
            _assert_close(out.running_mean, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MODULE_CASES, ids=case_id)
def test_modules_match_lucid(case, dtype):
    with jax.enable_x64(dtype == "float64"):
        a = case["arrays"]
        module = MODULES[case["module"]](
            case["shape"][1],
            eps=case["eps"],
            momentum=case["momentum"],
            affine=case["affine"],
            track_running_stats=case["track_running_stats"],
        )
        if case["affine"]:
            module.weight = host_array(a["weight"], dtype)
            module.bias.data = host_array(a["bias"], dtype)
        if case["track_running_stats"]:
            module.running_mean.data = host_array(module.running_mean.data, dtype)
            module.running_var.data = host_array(module.running_var.data, dtype)
        for step_index, step in enumerate(case["steps"]):
            module.train(step["training"])
            y = module(host_array(a[f"x{step_index}"], dtype))
            _assert_close(y, a[f"y{step_index}"], dtype)
            if case["track_running_stats"]:
                _assert_close(module.running_mean.data, a[f"running_mean{step_index}"], dtype)
                _assert_close(module.running_var.data, a[f"running_var{step_index}"], dtype)
            else:
                assert module.running_mean is None and module.running_var is None
