"""Training parity with the real Lucid: the same model, data and SGD, step for step.

`tests/data/record_lucid_training.py` trained a user-written model (a hand-made 1x1 "linear
over channels" and per-channel affine, with `Parameter`s, around two `InstanceNorm2d` inside
`Sequential`/`ModuleList`/`ModuleDict`) for 8 SGD steps with Lucid 2.14.5's `loss.backward()`
and `lucid.optim.SGD`, in float64. Here the same model trains with
`jax.jit(jax.value_and_grad(loss, has_aux=True))` over `functional_call` and a plain SGD update.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, skip_without_source_tree

from lucid_jax import nn

NAME = "lucid_2_14_5_training"
META = json.loads((DATA / f"{NAME}.json").read_text())
with np.load(DATA / f"{NAME}.npz") as _npz:
    RECORDED = {key: _npz[key] for key in _npz.files}


class ChannelLinear(nn.Module):
    """A 1x1 convolution written by hand: `y[n, o] = sum_c weight[o, c] x[n, c] + bias[o]`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # NumPy arrays, as the Lucid script: a float64 JAX array would give a float32 Parameter
        self.weight = nn.Parameter(np.zeros((out_channels, in_channels)))
        self.bias = nn.Parameter(np.zeros(out_channels))

    def forward(self, x):
        channels_last = jnp.transpose(x, (0, 2, 3, 1))
        mixed = channels_last @ self.weight.data.T + self.bias.data
        return jnp.transpose(mixed, (0, 3, 1, 2))


class ChannelAffine(nn.Module):
    """`y[n, c] = tanh(x[n, c] * scale[c] + shift[c])`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(np.ones(channels))
        self.shift = nn.Parameter(np.zeros(channels))

    def forward(self, x):
        c = self.scale.shape[0]
        return jnp.tanh(x * self.scale.reshape(1, c, 1, 1) + self.shift.reshape(1, c, 1, 1))


class Net(nn.Module):
    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ChannelLinear(in_channels, channels), nn.InstanceNorm2d(channels))
        self.blocks = nn.ModuleList([ChannelAffine(channels)])
        self.head = nn.ModuleDict({"norm": nn.InstanceNorm2d(channels, momentum=0.3)})

    def forward(self, x):
        x = self.body(x)
        for block in self.blocks:
            x = block(x)
        return self.head["norm"](x)


def _train(dtype):
    """Train the lucid-jax model on the recorded batches; losses and state after each step."""
    _, c_in, _, _ = META["shapes"]["x"]
    channels = META["shapes"]["target"][1]
    model = Net(c_in, channels)
    init = {key: RECORDED[f"init/{key}"].astype(dtype) for key in META["keys"]}
    model.load_state_dict(init)
    before = {key: np.asarray(value) for key, value in model.state_dict().items()}
    param_keys = [name for name, _ in model.named_parameters()]

    def loss_fn(params, buffers, x, target):
        output, new_state = nn.functional_call(model, {**params, **buffers}, x)
        return jnp.mean((output - target) ** 2), new_state

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    state = model.state_dict()
    params = {key: state[key] for key in param_keys}
    buffers = {key: state[key] for key in state if key not in params}
    losses, states = [], []
    for s in range(META["steps"]):
        x = jnp.asarray(RECORDED[f"x{s}"], dtype)
        target = jnp.asarray(RECORDED[f"target{s}"], dtype)
        (loss, new_state), grads = step(params, buffers, x, target)
        params = {key: params[key] - META["lr"] * grads[key] for key in params}
        buffers = {key: new_state[key] for key in buffers}
        losses.append(float(loss))
        states.append({**params, **buffers})
    after = {key: np.asarray(value) for key, value in model.state_dict().items()}
    return model, param_keys, before, after, np.asarray(losses), states


def _max_errors(losses, states):
    loss_error = float(np.max(np.abs(losses - RECORDED["loss"])))
    state_error = max(
        float(np.max(np.abs(np.asarray(state[key], np.float64) - RECORDED[f"step{s}/{key}"])))
        for s, state in enumerate(states)
        for key in META["keys"]
    )
    return loss_error, state_error


def test_model_names_its_state_as_lucid_does():
    channels = META["shapes"]["target"][1]
    model = Net(META["shapes"]["x"][1], channels)
    assert list(model.state_dict()) == META["keys"]
    assert [name for name, _ in model.named_parameters()] == [
        key for key in META["keys"] if "running" not in key
    ]


def test_float64_training_matches_lucid_step_for_step():
    with jax.enable_x64(True):
        _, param_keys, before, after, losses, states = _train(np.float64)
    loss_error, state_error = _max_errors(losses, states)
    print(
        f"float64: max |loss - Lucid| = {loss_error:.3e}, max |state - Lucid| = {state_error:.3e}"
    )
    assert loss_error < 1e-10 and state_error < 1e-10
    assert all(np.asarray(states[-1][key]).dtype == np.float64 for key in META["keys"])
    # Every entry moved, so each was compared after real updates; but the bias just before an
    # instance norm, whose gradient is zero (the norm subtracts any per-channel constant).
    last = META["steps"] - 1
    for key in META["keys"]:
        moved = not np.allclose(RECORDED[f"step{last}/{key}"], RECORDED[f"init/{key}"])
        assert moved == (key != "body.0.bias"), key
    # functional_call left the module as it was loaded.
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert len(param_keys) == 8


def test_float32_training_follows_lucid_within_float32_rounding():
    _, _, _, _, losses, states = _train(np.float32)
    loss_error, state_error = _max_errors(losses, states)
    print(
        f"float32: max |loss - Lucid| = {loss_error:.3e}, max |state - Lucid| = {state_error:.3e}"
    )
    assert np.asarray(states[-1]["body.0.weight"]).dtype == np.float32
    assert loss_error < 1e-4 and state_error < 1e-4


@pytest.mark.parametrize("lost", ["buffers", "gradients"])
def test_parity_check_detects_a_wrong_training_loop(lost):
    """The comparison is sharp enough to catch a dropped running-stat update or SGD step."""
    with jax.enable_x64(True):
        _, _, _, _, losses, states = _train(np.float64)
    broken = [dict(state) for state in states]
    key = "body.1.running_mean" if lost == "buffers" else "body.0.weight"
    broken[3][key] = states[2][key]
    assert _max_errors(losses, broken)[1] > 1e-6


def _run_porting_example(x64: bool) -> list[float]:
    skip_without_source_tree("docs")
    sys.path.insert(0, str(DATA))
    try:
        from record_lucid_porting_example import PAGE, printed_losses, tab_code
    finally:
        sys.path.remove(str(DATA))
    code = tab_code(PAGE.read_text(), "lucid-jax")
    stdout = io.StringIO()
    with jax.enable_x64(x64), contextlib.redirect_stdout(stdout):
        exec(compile(code, "porting.md[lucid-jax]", "exec"), {"__name__": "__main__"})
    return printed_losses(stdout.getvalue())


def test_porting_guides_example_prints_lucids_losses():
    """The docs' lucid-jax tab, run as written, prints what the Lucid tab printed in Lucid."""
    recorded = json.loads((DATA / "lucid_2_14_5_porting_example.json").read_text())["losses"]
    assert len(recorded) == 8
    np.testing.assert_allclose(_run_porting_example(x64=True), recorded, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_run_porting_example(x64=False), recorded, rtol=1e-5)
