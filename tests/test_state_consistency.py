"""State that cannot tear or lie: `load_state_dict` against concurrent forwards, and its refusals.

The thread experiments count outputs; each must be the output of one whole state. The states are
chosen far apart, so a mix of them (weight from one, running mean from the other) is far from
both, and the comparison needs no last-bit equality.
"""

from __future__ import annotations

import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import host_array

from lucid_jax import nn

CALLS = int(os.environ.get("LUCID_JAX_TORN_CALLS", "2000"))

# var - mean == 1 in both states, and the input below has batch var - batch mean == 1 too, so
# every running-stat update keeps var - mean == 1: a torn (mean, var) pair breaks it.
STATE_A = {"weight": [1.0, 1.0], "bias": [0.0, 0.0], "running_mean": [0.0, 0.0]}
STATE_B = {"weight": [2.0, -3.0], "bias": [3.0, 5.0], "running_mean": [10.0, 30.0]}
for _state in (STATE_A, STATE_B):
    _state["running_var"] = [m + 1.0 for m in _state["running_mean"]]
X = host_array([[[-1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, -1.0]]])  # mean 0, biased var 1


def _state(values):
    return {key: jnp.asarray(value, jnp.float32) for key, value in values.items()}


def _classify(output, expected_a, expected_b):
    if np.allclose(output, expected_a, rtol=1e-5, atol=1e-5):
        return "A"
    if np.allclose(output, expected_b, rtol=1e-5, atol=1e-5):
        return "B"
    return "torn"


def _reference_outputs(module):
    outputs = []
    for values in (STATE_A, STATE_B):
        module.load_state_dict(_state(values))
        outputs.append(np.asarray(module(X)))
    return outputs


def _hammer(module, stop):
    states = [_state(STATE_A), _state(STATE_B)]
    loads = 0
    while not stop.is_set():
        module.load_state_dict(states[loads % 2])
        loads += 1
    return loads


def _run_against_loads(module, step):
    """Run `step()` CALLS times while another thread loads A and B in turn; count the verdicts.

    The threads switch every 0.1 ms instead of Python's 5 ms: the loader, looping in Python,
    would hold the interpreter 5 ms at a time, and each forward (which releases it inside JAX)
    would wait that long to go on. The finer switching halves the experiment's time and finds
    as many torn states: with the locks of one kind taken out (`holding_locks` a no-op in
    `nn/_buffer.py`, `nn/_module.py` or `nn/functional.py`), 8-215 torn of 2000 per test,
    against 10-203 at 5 ms.
    """
    stop = threading.Event()
    loads = []
    loader = threading.Thread(target=lambda: loads.append(_hammer(module, stop)))
    counts = {"A": 0, "B": 0, "torn": 0}
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    loader.start()
    try:
        for _ in range(CALLS):
            counts[step()] += 1
    finally:
        stop.set()
        loader.join()
        sys.setswitchinterval(interval)
    return counts, loads[0]


@pytest.mark.long_running
def test_eval_forwards_see_a_concurrent_load_whole_or_not_at_all():
    module = nn.InstanceNorm1d(2).eval()
    expected_a, expected_b = _reference_outputs(module)
    assert (
        _classify(expected_a, expected_a, expected_b)
        == "A"
        != _classify(expected_b, expected_a, expected_b)
    )
    calls = iter(range(CALLS))

    def step():
        # Alternately the module itself and functional_call (which reads the state it is not
        # given as one snapshot).
        if next(calls) % 2:
            return _classify(np.asarray(module(X)), expected_a, expected_b)
        output, _ = nn.functional_call(module, {}, X)
        return _classify(np.asarray(output), expected_a, expected_b)

    counts, loads = _run_against_loads(module, step)
    print(f"eval: {counts['torn']} torn of {CALLS} ({counts}), {loads} loads")
    assert counts["torn"] == 0, counts
    assert loads > 0 and counts["A"] > 0 and counts["B"] > 0  # the loads were seen


@pytest.mark.long_running
def test_training_updates_are_atomic_against_a_concurrent_load():
    module = nn.InstanceNorm1d(2, momentum=0.25)
    expected_a, expected_b = _reference_outputs(module)

    def step():
        verdict = _classify(np.asarray(module(X)), expected_a, expected_b)
        state = module.state_dict()  # one consistent snapshot
        if not np.allclose(state["running_var"] - state["running_mean"], 1.0, atol=1e-3):
            return "torn"
        return verdict

    counts, loads = _run_against_loads(module, step)
    print(f"train: {counts['torn']} torn of {CALLS} ({counts}), {loads} loads")
    assert counts["torn"] == 0, counts
    assert loads > 0 and counts["A"] > 0 and counts["B"] > 0  # the loads were seen


def test_a_torn_state_would_be_detected():
    """The classifier is not blind: every mix of A and B is torn."""
    module = nn.InstanceNorm1d(2).eval()
    expected_a, expected_b = _reference_outputs(module)
    for key in STATE_A:
        mixed = {**STATE_A, key: STATE_B[key]}
        module.load_state_dict(_state(mixed))
        assert _classify(np.asarray(module(X)), expected_a, expected_b) == "torn", key
    module.load_state_dict(_state({**STATE_A, "running_mean": STATE_B["running_mean"]}))
    state = module.state_dict()
    assert not np.allclose(state["running_var"] - state["running_mean"], 1.0, atol=1e-3)


# Refusals -----------------------------------------------------------------------------------


class _Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(jnp.ones(2))
        self.register_buffer("steps", jnp.zeros(2, jnp.int32))


def _unchanged(module, before):
    after = module.state_dict()
    assert list(after) == list(before)
    for key in before:
        assert after[key].dtype == before[key].dtype
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("steps", np.array([2**40 + 7, 1], np.int64), r"'steps' holds 1099511627783 .* int32"),
        ("steps", np.array([1, -(2**31) - 1], np.int64), r"'steps' holds -2147483649 .* int32"),
        ("steps", np.array([0, 2**63], np.uint64), r"'steps' holds 9223372036854775808"),
        ("scale", np.array([1e300, 1.0]), r"'scale' holds 1e\+300 .* overflows float32"),
        ("scale", np.array([1.0, -3.5e38]), r"'scale' holds -3.5e\+38 .* overflows float32"),
    ],
)
@pytest.mark.parametrize("x64", [False, True], ids=["x64_off", "x64_on"])
def test_load_state_dict_refuses_lossy_conversions_and_changes_nothing(key, value, message, x64):
    # Without x64 JAX itself would wrap int64 to int32 and overflow float64 to inf silently:
    # the check must run before JAX converts anything.
    with jax.enable_x64(x64):
        module = _Counter()
        assert module.scale.dtype == jnp.float32  # a float64 JAX array gives float32, as Lucid
        before = module.state_dict()
        state = {**before, "scale": jnp.full(2, 5.0), key: value}  # the good key is not written
        with pytest.raises(ValueError, match=message):
            module.load_state_dict(state)
        _unchanged(module, before)


def test_load_state_dict_keeps_values_the_dtype_holds_exactly():
    module = _Counter()
    module.load_state_dict(
        {
            "scale": np.array([np.inf, np.nan]),  # not finite: kept as given, as in Lucid
            "steps": np.array([2**31 - 1, -(2**31)], np.int64),  # the int32 extremes
        }
    )
    state = module.state_dict()
    np.testing.assert_array_equal(state["scale"], [np.inf, np.nan])
    np.testing.assert_array_equal(state["steps"], [2**31 - 1, -(2**31)])
    assert state["steps"].dtype == jnp.int32
    module.load_state_dict({"scale": np.array([3.4e38, 1e-3]), "steps": np.array([1, 2])})
    np.testing.assert_allclose(module.state_dict()["scale"], [3.4e38, 1e-3], rtol=1e-7)


def test_load_state_dict_under_jit_refuses_tracers_and_changes_nothing():
    module = nn.InstanceNorm1d(2)
    before = module.state_dict()

    @jax.jit
    def load(state):
        module.load_state_dict(state)
        return 0

    with pytest.raises(TypeError, match=r"'weight' is a traced value .*functional_call"):
        load(before)
    _unchanged(module, before)
    module.eval()(X)  # still usable: no tracer was stored
