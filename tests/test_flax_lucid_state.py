"""A Lucid `InstanceNorm` state dict in the Flax layers: same outputs, same new running stats.

References: `lucid_jax.nn.InstanceNorm2d` holding the same state (itself pinned to the Lucid
recordings elsewhere) and the float64 numpy reference of Lucid's semantics (`conftest`), on the
state and input real Lucid 2.14.5 recorded (`tests/data/lucid_2_14_5_checkpoints.npz`).
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

import jax
import numpy as np
from conftest import DATA, host_array, host_ones, reference_instance_norm
from flax import nnx

import lucid_jax
from lucid_jax.flax import (
    flax_momentum_from_lucid,
    linen,
    linen_variables_from_lucid,
    load_lucid_into_nnx,
)
from lucid_jax.flax import nnx as lucid_nnx

with np.load(DATA / "lucid_2_14_5_checkpoints.npz") as _npz:
    X = _npz["x"]  # (2, 3, 4, 5): Lucid's channels-first layout
    MOMENTUM = float(_npz["momentum"])
SEQUENTIAL = DATA / "lucid_2_14_5_sequential.lcd"
NORM = DATA / "lucid_2_14_5_instancenorm2d.lcd"
TOL = {"rtol": 2e-5, "atol": 2e-5}


def _lucid_jax_module(state, training: bool):
    module = lucid_jax.nn.InstanceNorm2d(3, momentum=MOMENTUM)
    module.load_state_dict(state)
    module.train(training)
    y = module(host_array(X))
    return np.asarray(y), np.asarray(module.running_mean.data), np.asarray(module.running_var.data)


def _reference(state, training: bool):
    return reference_instance_norm(X, training=training, momentum=MOMENTUM, **state)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_linen_with_lucid_state_matches_lucid(training, channel_axis):
    state = lucid_jax.load(NORM)
    variables = linen_variables_from_lucid(state)
    layer = linen.InstanceNorm.lucid(
        momentum=flax_momentum_from_lucid(MOMENTUM), channel_axis=channel_axis
    )
    x = host_array(np.moveaxis(X, 1, channel_axis))
    y, updates = layer.apply(
        variables, x, use_running_average=not training, mutable=["batch_stats"]
    )
    stats = updates["batch_stats"]
    expected = _lucid_jax_module(state, training)
    reference = _reference({k: np.asarray(v) for k, v in state.items()}, training)
    for got, module_value, ref in zip(
        (np.moveaxis(np.asarray(y), channel_axis, 1), stats["mean"], stats["var"]),
        expected,
        reference,
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(got), module_value, **TOL)
        np.testing.assert_allclose(np.asarray(got), ref, **TOL)
    if not training:  # eval leaves the stored statistics as loaded
        np.testing.assert_array_equal(stats["mean"], state["running_mean"])


@pytest.mark.parametrize("training", [True, False])
def test_nnx_with_lucid_state_matches_lucid(training):
    state = lucid_jax.load(SEQUENTIAL)  # the InstanceNorm2d is module "1"
    layer = lucid_nnx.InstanceNorm.lucid(
        3, momentum=flax_momentum_from_lucid(MOMENTUM), channel_axis=1, rngs=nnx.Rngs(0)
    )
    load_lucid_into_nnx(layer, state, prefix="1")
    layer.train() if training else layer.eval()
    y = layer(host_array(X))
    own = {k[2:]: v for k, v in state.items() if k.startswith("1.")}
    expected = _lucid_jax_module(own, training)
    reference = _reference({k: np.asarray(v) for k, v in own.items()}, training)
    for got, module_value, ref in zip(
        (y, layer.mean[...], layer.var[...]), expected, reference, strict=True
    ):
        np.testing.assert_allclose(np.asarray(got), module_value, **TOL)
        np.testing.assert_allclose(np.asarray(got), ref, **TOL)


def test_without_running_stats_or_affine_only_the_present_collections():
    state = lucid_jax.load(NORM)
    affine_only = {k: state[k] for k in ("weight", "bias")}
    assert sorted(linen_variables_from_lucid(affine_only)) == ["params"]
    stats_only = {f"norm.{k}": state[k] for k in ("running_mean", "running_var")}
    variables = linen_variables_from_lucid(stats_only, prefix="norm.")
    assert sorted(variables) == ["batch_stats"]
    np.testing.assert_array_equal(variables["batch_stats"]["var"], state["running_var"])
    layer = linen.InstanceNorm.lucid(use_scale=False, use_bias=False, channel_axis=1)
    y = layer.apply(variables, host_array(X), use_running_average=True)
    ref, _, _ = reference_instance_norm(
        X, np.asarray(state["running_mean"]), np.asarray(state["running_var"]), training=False
    )
    np.testing.assert_allclose(np.asarray(y), ref, **TOL)


def test_flax_momentum_is_one_minus_lucids():
    assert flax_momentum_from_lucid(0.1) == pytest.approx(0.9)
    assert flax_momentum_from_lucid(None) == pytest.approx(0.9)  # Lucid's module default
    assert flax_momentum_from_lucid(0.0) == 1.0
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*got 1\.5"):
        flax_momentum_from_lucid(1.5)
    with pytest.raises(TypeError, match=r"momentum must be a real number.*str"):
        flax_momentum_from_lucid("0.1")


@pytest.mark.parametrize(
    ("state", "prefix", "error", "match"),
    [
        ({"0.weight": host_ones(3)}, "1", ValueError, r"under prefix '1\.'.*found none"),
        ({"weight": host_ones(3), "bias": host_ones(3), "eps": 1.0}, "", ValueError, r"'eps'"),
        ({"weight": host_ones(3)}, "", ValueError, r"both weight and bias or neither"),
        ({"weight": host_ones(3), "bias": host_ones(4)}, "", ValueError, r"vectors of one length"),
        ([("weight", host_ones(3))], "", TypeError, r"state_dict must be a mapping.*list"),
        ({"weight": host_ones(3)}, 1, TypeError, r"prefix must be a str"),
    ],
)
def test_bad_state_dict_is_refused(state, prefix, error, match):
    with pytest.raises(error, match=r"linen_variables_from_lucid: .*" + match):
        linen_variables_from_lucid(state, prefix=prefix)


def test_nnx_mismatch_is_refused_and_changes_nothing():
    state = lucid_jax.load(NORM)
    layer = lucid_nnx.InstanceNorm.lucid(3, use_bias=False, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(layer))
    with pytest.raises(ValueError, match=r"the layer lacks 'bias' but the state dict has bias"):
        load_lucid_into_nnx(layer, state)
    wide = lucid_nnx.InstanceNorm.lucid(4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'scale' has shape \(4,\).*weight has \(3,\)"):
        load_lucid_into_nnx(wide, state)
    after = jax.tree.map(np.asarray, nnx.state(layer))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))
    with pytest.raises(TypeError, match=r"layer must be a lucid_jax\.flax\.nnx\.InstanceNorm"):
        load_lucid_into_nnx(linen.InstanceNorm(), state)
