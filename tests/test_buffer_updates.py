"""The shim's in-place Buffer updates: none lost under threads, and Lucid's dtype promotion."""

from __future__ import annotations

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA

import lucid_jax.nn.functional as F
from lucid_jax.nn import Buffer

THREADS, CALLS = 4, 200
# Small enough that the 800th update still moves the statistics by far more than float32
# rounding accumulates (see the last assertion of the test).
MOMENTUM = 0.0015


def test_concurrent_shim_calls_on_shared_buffers_keep_every_update():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(5.0, 1.0, (2, 3, 8)), jnp.float32)
    x64 = np.asarray(x, np.float64)
    batch_mean = x64.mean(axis=2).mean(axis=0)
    batch_var = x64.var(axis=2).mean(axis=0)
    running_mean, running_var = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))
    start = threading.Barrier(THREADS)

    def worker():
        start.wait()
        for _ in range(CALLS):
            F.instance_norm(x, running_mean, running_var, momentum=MOMENTUM)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)

    def after(updates):
        # new = m * batch + (1 - m) * old, n times over: a closed form in float64.
        keep = (1 - MOMENTUM) ** updates
        return keep * 0.0 + (1 - keep) * batch_mean, keep * 1.0 + (1 - keep) * batch_var

    expected_mean, expected_var = after(THREADS * CALLS)
    np.testing.assert_allclose(running_mean.data, expected_mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(running_var.data, expected_var, rtol=0, atol=1e-4)
    one_lost_mean, _ = after(THREADS * CALLS - 1)
    assert np.min(np.abs(one_lost_mean - expected_mean)) > 1e-3


def test_buffers_passed_in_opposite_orders_do_not_deadlock():
    a, b = Buffer(jnp.zeros(3)), Buffer(jnp.ones(3))
    x = jnp.ones((1, 3, 4))

    def worker(first, second):
        for _ in range(100):
            F.instance_norm(x, first, second)

    threads = [threading.Thread(target=worker, args=pair) for pair in ((a, b), (b, a)) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)


def test_the_same_buffer_as_both_statistics_is_locked_once():
    both = Buffer(jnp.zeros(3))
    F.instance_norm(jnp.ones((1, 3, 4)), both, both, momentum=0.5)
    # The variance update (of a constant input: 0) is written last, as in Lucid.
    np.testing.assert_array_equal(both.data, np.zeros(3))


_CASES = json.loads((DATA / "lucid_2_14_5_buffer_dtypes.json").read_text())["cases"]


@pytest.mark.parametrize(
    "case", _CASES, ids=[f"{c['input_dtype']}-input-{c['buffer_dtype']}-buffers" for c in _CASES]
)
@pytest.mark.parametrize("promotion", ["standard", "strict"])
def test_running_statistics_take_lucids_promoted_dtype(case, promotion):
    with jax.enable_x64(case["input_dtype"] == "float64"), jax.numpy_dtype_promotion(promotion):
        x = jnp.asarray(np.asarray(case["x"]), case["input_dtype"])
        running_mean = Buffer(jnp.asarray(case["running_mean_in"], case["buffer_dtype"]))
        running_var = Buffer(jnp.asarray(case["running_var_in"], case["buffer_dtype"]))
        y = F.instance_norm(x, running_mean, running_var, momentum=case["momentum"])
        assert y.dtype == np.dtype(case["output_dtype"])
        assert running_mean.dtype == np.dtype(case["running_dtype_out"])
        assert running_var.dtype == np.dtype(case["running_dtype_out"])
        # Lucid rounds `(1 - momentum) * running` to float16 when the Buffer is float16 (numpy
        # keeps a float16 array's dtype in a product with a Python float) and, for float16
        # input, the batch statistics too; lucid-jax computes the update in float32 at least.
        # So where float16 is involved the values agree to float16 rounding (2**-11 relative of
        # values below 2); the dtypes agree exactly.
        involves_float16 = "float16" in (case["input_dtype"], case["buffer_dtype"])
        tolerance = {"rtol": 0, "atol": 1e-3} if involves_float16 else {"rtol": 1e-6}
        for name, buffer in (("running_mean", running_mean), ("running_var", running_var)):
            np.testing.assert_allclose(
                np.asarray(buffer.data, np.float64), case[f"{name}_out"], **tolerance
            )
