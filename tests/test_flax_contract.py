"""Flax's contract by default: our layers, constructed and called as Flax's, are Flax's layers.

References: `flax.linen.InstanceNorm` and `flax.nnx.InstanceNorm` themselves. Also the
opt-in (running statistics, `InstanceNorm.lucid`), the checkpoint helpers across the switch,
and the rules' single homes (errors named by the layer, no private Flax API).
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import host_array, host_ones, jitted, nnx_jitted_call
from flax import nnx

from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax import linen_variables_for, load_nnx_state
from lucid_jax.flax import nnx as lucid_nnx

#: The models here are built with Flax's default initialisers, whose truncated normal takes
#: 2-4 s to compile optimised per kernel shape (0.2-0.4 s unoptimised, jax 0.10.2): most of
#: this module's time. Its claims (variables, names, defaults, outputs within rounding of
#: Flax's) do not depend on XLA's optimisations (`conftest.xla_optimisations_off`).
pytestmark = pytest.mark.usefixtures("unoptimised_module")

#: Data far enough from zero that the two variance formulas round differently. Drawn in numpy
#: (`host_array`): JAX's random at import compiled 5 programs in every collecting process.
X = host_array(np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 5, 3)))


def _rounding(expected) -> float:
    """A few float32 roundings of the output's scale: XLA may fuse (and so round) the same
    formula differently; Flax's own eager and jitted outputs differ by an ulp."""
    return 8 * float(jnp.finfo(jnp.float32).eps) * float(np.max(np.abs(np.asarray(expected))))


def _host(leaf) -> np.ndarray:
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # nnx's rng streams: their key data
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def _tree_equal(a, b) -> bool:
    # In numpy, here and in `_plus`: eagerly, JAX compiled a program per leaf shape (some 30).
    return jax.tree.structure(a) == jax.tree.structure(b) and jax.tree.all(
        jax.tree.map(lambda u, v: bool(np.array_equal(_host(u), _host(v))), a, b)
    )


def _plus(tree, value: float):
    """Each leaf plus `value`, in its dtype (a "checkpoint" that is not the initial values)."""
    return jax.tree.map(lambda v: jax.device_put(np.asarray(v) + np.asarray(value, v.dtype)), tree)


# --- linen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"use_bias": False}, {"feature_axes": (1, 3)}, {"param_dtype": jnp.bfloat16}],
    ids=["defaults", "no-bias", "two-feature-axes", "bf16-params"],
)
def test_linen_default_is_flax_s_layer(kwargs):
    theirs, ours = nn.InstanceNorm(**kwargs), lucid_linen.InstanceNorm(**kwargs)
    flax_variables = jitted(theirs.init)(jax.random.key(1), X)
    variables = ours.init(jax.random.key(1), X)  # no train flag, no other collection
    assert _tree_equal(variables, flax_variables)
    flax_variables = _plus(flax_variables, 0.5)  # a "checkpoint"
    expected = jitted(theirs.apply)(flax_variables, X)
    fast = lucid_linen.InstanceNorm(use_fast_variance=True, **kwargs).apply(flax_variables, X)
    assert fast.dtype == expected.dtype
    np.testing.assert_allclose(fast, expected, rtol=0, atol=_rounding(expected))  # its formula
    default = ours.apply(flax_variables, X)  # the two-pass variance: its rounding only
    assert default.dtype == expected.dtype
    np.testing.assert_allclose(default, expected, rtol=0, atol=_rounding(expected))


@pytest.mark.parametrize("face", ["linen", "nnx"])
def test_nothing_to_normalise_over_gives_the_bias_and_zero_input_gradient_as_flax(face):
    x = jax.random.normal(jax.random.key(2), (5, 7)) * 4.0  # (N, C), e.g. after Dense
    bias = host_array(np.arange(7.0))
    if face == "linen":
        theirs, ours = nn.InstanceNorm(), lucid_linen.InstanceNorm()
        variables = {"params": {"scale": host_array(np.full(7, 3.0)), "bias": bias}}
        flax_fn = lambda x: theirs.apply(variables, x)  # noqa: E731
        our_fn = lambda x: ours.apply(variables, x)  # noqa: E731
    else:
        theirs = nnx.InstanceNorm(7, rngs=nnx.Rngs(0))
        ours = lucid_nnx.InstanceNorm(7, rngs=nnx.Rngs(0))
        for layer in (theirs, ours):
            layer.bias[...] = bias
        flax_fn, our_fn = theirs, ours
    np.testing.assert_array_equal(our_fn(x), jitted(flax_fn)(x))
    np.testing.assert_array_equal(our_fn(x), np.broadcast_to(np.asarray(bias), x.shape))
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(our_fn(x))))(x)
    flax_grad = jitted(jax.grad(lambda x: jnp.sum(jnp.sin(flax_fn(x)))))(x)
    np.testing.assert_array_equal(grad, flax_grad)
    np.testing.assert_array_equal(grad, np.zeros(x.shape))


def test_linen_running_statistics_are_opt_in_with_use_running_average_as_batchnorm():
    layer = lucid_linen.InstanceNorm(track_running_stats=True)
    variables = layer.init(jax.random.key(0), X, use_running_average=False)
    assert sorted(variables) == ["batch_stats", "params"]
    with pytest.raises(ValueError, match="use_running_average"):  # as BatchNorm: required
        layer.apply(variables, X)
    at_call = layer.apply(variables, X, use_running_average=True)
    at_construction = lucid_linen.InstanceNorm(
        track_running_stats=True, use_running_average=True
    ).apply(variables, X)
    np.testing.assert_array_equal(at_call, at_construction)
    # The fresh statistics (mean 0, var 1) normalise in eval: the input, scaled by 1/sqrt(1+eps).
    np.testing.assert_allclose(at_call, np.asarray(X) / np.sqrt(1 + 1e-6), rtol=1e-6)


@pytest.mark.parametrize("face", ["linen", "nnx"])
def test_lucid_preset_is_lucid_s_whole_behaviour(face):
    if face == "linen":
        layer = lucid_linen.InstanceNorm.lucid(channel_axis=1)
    else:
        layer = lucid_nnx.InstanceNorm.lucid(3, channel_axis=1, rngs=nnx.Rngs(0))
    assert (layer.epsilon, layer.track_running_stats, layer.momentum) == (1e-5, True, 0.9)
    assert layer.channel_axis == 1 and layer.use_fast_variance is False


# --- nnx -----------------------------------------------------------------------------------


def _nnx_model(norm_cls, **norm_kwargs):
    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.norm = norm_cls(8, rngs=rngs, **norm_kwargs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.head = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            x = self.dropout(nnx.relu(self.norm(self.conv(x))))
            return self.head(x.mean(axis=(1, 2)))

    return Model(nnx.Rngs(params=0, dropout=1))


@pytest.mark.parametrize("use_fast_variance", [True, False], ids=["fast", "default"])
def test_nnx_model_with_dropout_train_and_eval_equal_flax_s(use_fast_variance):
    theirs = _nnx_model(nnx.InstanceNorm)
    ours = _nnx_model(lucid_nnx.InstanceNorm, use_fast_variance=use_fast_variance)
    assert _tree_equal(nnx.to_pure_dict(nnx.state(ours)), nnx.to_pure_dict(nnx.state(theirs)))
    # A Flax nnx checkpoint (its state, perturbed) loads as it is.
    state = _plus(nnx.state(theirs, nnx.Param), 0.25)
    nnx.update(theirs, state)
    nnx.update(ours, state)
    # Each model's call is one program (Conv, Dropout, Linear eagerly: some 20 programs).
    train_theirs = nnx_jitted_call(theirs, X)  # dropout on, same rng stream
    train_ours = nnx_jitted_call(ours, X)
    tol = {"rtol": 0, "atol": _rounding(train_theirs)}
    np.testing.assert_allclose(train_ours, train_theirs, **tol)
    theirs.eval()
    ours.eval()  # dropout off; our layer has no running statistics to switch to
    eval_theirs, eval_ours = nnx_jitted_call(theirs, X), nnx_jitted_call(ours, X)
    assert not np.allclose(eval_theirs, train_theirs)
    np.testing.assert_allclose(eval_ours, eval_theirs, **tol)
    assert sorted(nnx.to_pure_dict(nnx.state(ours.norm))) == ["bias", "scale"]


def test_nnx_train_and_eval_keep_instance_statistics_without_running_ones():
    layer = lucid_nnx.InstanceNorm(3, rngs=nnx.Rngs(0))
    train = layer(X)
    layer.eval()
    np.testing.assert_array_equal(layer(X), train)
    np.testing.assert_array_equal(nnx.view(layer, use_running_average=True)(X), train)


# --- checkpoints across the switch ---------------------------------------------------------


class _LinenNet(nn.Module):
    """A model with a BatchNorm (its own batch_stats) and an InstanceNorm class to choose."""

    norm: type
    norm_kwargs: dict

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        norm = self.norm(**self.norm_kwargs)
        takes_mode = getattr(norm, "track_running_stats", False)
        x = norm(x, use_running_average=not train) if takes_mode else norm(x)
        return nn.Dense(2)(x.mean(axis=(1, 2)))


def test_linen_variables_for_adds_fresh_running_stats_and_drops_them_back():
    flax_model = _LinenNet(nn.InstanceNorm, {})
    flax_variables = jitted(flax_model.init)(jax.random.key(0), X)
    flax_variables = _plus(flax_variables, 0.5)  # trained, say
    tracking = _LinenNet(lucid_linen.InstanceNorm, {"track_running_stats": True})
    variables = linen_variables_for(tracking, flax_variables, X)
    ours = variables["batch_stats"]["InstanceNorm_0"]
    np.testing.assert_array_equal(ours["mean"], jnp.zeros(4))
    np.testing.assert_array_equal(ours["var"], jnp.ones(4))
    # Everything else is the checkpoint's, untouched (the BatchNorm's statistics included).
    assert _tree_equal(variables["params"], flax_variables["params"])
    assert _tree_equal(
        variables["batch_stats"]["BatchNorm_0"], flax_variables["batch_stats"]["BatchNorm_0"]
    )
    np.testing.assert_allclose(
        jitted(tracking.apply, train=True, mutable=["batch_stats"])(variables, X)[0],
        jitted(flax_model.apply, train=True, mutable=["batch_stats"])(flax_variables, X)[0],
        rtol=0,
        atol=1e-5,
    )
    back = linen_variables_for(_LinenNet(lucid_linen.InstanceNorm, {}), variables, X)
    assert _tree_equal(back, flax_variables)


def test_linen_variables_for_refuses_another_model():
    variables = jitted(_LinenNet(nn.InstanceNorm, {}).init)(jax.random.key(0), X)
    with pytest.raises(
        ValueError,
        match=r"linen_variables_for: .*missing params/Dense_0/bias, params/Dense_0/kernel",
    ):
        linen_variables_for(
            _LinenNet(lucid_linen.InstanceNorm, {}),
            {
                **variables,
                "params": {k: v for k, v in variables["params"].items() if k != "Dense_0"},
            },
            X,
        )
    wide = jax.tree.map(lambda v: host_ones((*v.shape, 1)) if v.ndim == 1 else v, variables)
    with pytest.raises(ValueError, match=r"linen_variables_for: .*has shape"):
        linen_variables_for(_LinenNet(lucid_linen.InstanceNorm, {}), wide, X)
    with pytest.raises(TypeError, match=r"linen_variables_for: variables must be a mapping"):
        linen_variables_for(_LinenNet(lucid_linen.InstanceNorm, {}), [1], X)


def test_load_nnx_state_both_ways_and_nothing_changes_on_a_mismatch():
    flax_model = _nnx_model(nnx.InstanceNorm)
    nnx.update(flax_model, _plus(nnx.state(flax_model, nnx.Param), 0.25))
    tracking = _nnx_model(lucid_nnx.InstanceNorm.lucid)
    load_nnx_state(tracking, flax_model)
    params = nnx.to_pure_dict(nnx.state(tracking, nnx.Param))
    assert _tree_equal(params, nnx.to_pure_dict(nnx.state(flax_model, nnx.Param)))
    np.testing.assert_array_equal(tracking.norm.mean[...], jnp.zeros(8))
    np.testing.assert_array_equal(tracking.norm.var[...], jnp.ones(8))
    tracking(X)  # train mode: the statistics move
    back = _nnx_model(lucid_nnx.InstanceNorm)
    load_nnx_state(back, nnx.state(tracking))
    assert _tree_equal(  # (the rng streams are tracking's: its call drew from them)
        nnx.to_pure_dict(nnx.state(back, nnx.Param)),
        nnx.to_pure_dict(nnx.state(flax_model, nnx.Param)),
    )
    assert "mean" not in nnx.to_pure_dict(nnx.state(back))["norm"]
    other = _nnx_model(lucid_nnx.InstanceNorm, use_bias=False)
    before = nnx.to_pure_dict(nnx.state(other))
    with pytest.raises(ValueError, match=r"load_nnx_state: .*unexpected norm/bias"):
        load_nnx_state(other, flax_model)
    assert _tree_equal(nnx.to_pure_dict(nnx.state(other)), before)
    with pytest.raises(TypeError, match=r"load_nnx_state: source must be"):
        load_nnx_state(other, [1])


# --- one home per rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": -1}, ValueError, r"^InstanceNorm: epsilon must be >= 0 .*got -1\.$"),
        ({"momentum": 2.0}, ValueError, r"^InstanceNorm: momentum must be in \[0, 1\]"),
        ({"feature_axes": 1, "channel_axis": 2}, ValueError, r"^InstanceNorm: give the feature"),
    ],
)
def test_construction_errors_name_the_layer_and_its_own_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        lucid_nnx.InstanceNorm(3, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(error, match=match):
        lucid_linen.InstanceNorm(**kwargs)


def test_the_flax_faces_use_no_private_api():
    # The installed package's files (the source tree's in a clone, the wheel's in test-wheel).
    files = sorted(Path(lucid_linen.__file__).parent.glob("*.py"))
    assert len(files) >= 4, files
    sources = "\n".join(p.read_text() for p in files)
    imports = re.findall(r"^\s*(?:from|import) (\S+)", sources, re.M)
    private = [
        name
        for name in imports
        if name.startswith(("flax.nnx.module", "flax.nnx.nn", "flax.linen.normalization"))
        or name == "lucid_jax._core"
        or any(part.startswith("_") for part in name.split(".")[1:] if name.startswith("flax"))
    ]
    assert not private, private
