"""What both Flax faces must do, checked once for each: `lucid_jax.flax.linen` and `.nnx`.

Each test takes a `face`: a small adapter that builds the layer of one face, loads values
into its variables, calls it (training updates the running statistics in place, linen's
`mutable` apply included) and reads its variables back as one flat dict (`scale`, `bias`,
`mean`, `var`). References: the pure function, the float64 numpy implementation of Lucid's
maths (`conftest`), and Flax's own `InstanceNorm` of the same face (for the drop-in claims).
Face-specific behaviour (linen's `merge_param` and `mutable`, nnx's `.train()`/`.eval()`,
`nnx.view`, `nnx.Optimizer`) is tested in `test_flax_linen.py` and `test_flax_nnx.py`.

Most tests here pin the running statistics, so a face builds the layer with them on (opt-in)
and Lucid's eps 1e-5 unless a test says otherwise (`track_running_stats=False`, `epsilon`);
the default, Flax's layer, is pinned in `test_flax_contract.py` and
`test_flax_real_models.py`.
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from conftest import channels_last_data as _data
from conftest import host_array, jitted, reference_instance_norm
from conftest import reference_channels_last as _reference_channels_last
from flax import nnx, serialization

import lucid_jax
from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax import nnx as lucid_nnx

# One worker for the module: its tests compile the same programs (the two faces share shapes
# and the pure function's); split over two workers, each compiled them (328 programs against 221).
pytestmark = pytest.mark.xdist_group("flax_faces")

#: What a face builds unless a test says otherwise: Lucid's running statistics and eps.
TRACKING = {"track_running_stats": True, "epsilon": 1e-5}


class LinenFace:
    """A `lucid_jax.flax.linen.InstanceNorm` and its variables, initialised on first use."""

    name = "linen"

    def __init__(self, num_features: int, **kwargs) -> None:
        del num_features  # linen takes it from the input
        self.module = lucid_linen.InstanceNorm(**{**TRACKING, **kwargs})
        self.variables = None

    def _mode(self, use_running_average):
        # linen's merge_param: the flag is given at construction or at call time, not both.
        if use_running_average is None or self.module.use_running_average is not None:
            return {}
        return {"use_running_average": use_running_average}

    def init(self, x) -> None:
        self.variables = self.module.init(jax.random.key(0), x, **self._mode(False))

    def __call__(self, x, use_running_average=False, **call_kwargs):
        if self.variables is None:
            self.init(x)
        y, updates = self.module.apply(
            self.variables,
            x,
            mutable=["batch_stats"],
            **self._mode(use_running_average),
            **call_kwargs,
        )
        self.variables = {**self.variables, **updates}
        return y

    def load(self, x, **values) -> None:
        if self.variables is None:
            self.init(x)
        for collection in self.variables.values():
            for key in collection:
                if values.get(key) is not None:
                    collection[key] = values[key]

    def flat(self) -> dict:
        return {key: v for collection in self.variables.values() for key, v in collection.items()}

    def to_bytes(self) -> bytes:
        return serialization.to_bytes(self.variables)

    def from_bytes(self, x, blob: bytes) -> None:
        self.init(x)
        self.variables = serialization.from_bytes(self.variables, blob)

    @staticmethod
    def flax_layer(num_features, x, **kwargs):
        """Flax's own layer: `(initial params, apply(params, x))`, each one jitted program."""
        del num_features
        theirs = nn.InstanceNorm(**kwargs)
        params = jitted(theirs.init)(jax.random.key(0), x)["params"]
        return dict(params), jitted(lambda params, x: theirs.apply({"params": params}, x))


class NnxFace:
    """A `lucid_jax.flax.nnx.InstanceNorm`."""

    name = "nnx"

    def __init__(self, num_features: int, **kwargs) -> None:
        kwargs = {**TRACKING, **kwargs}
        self.layer = lucid_nnx.InstanceNorm(num_features, rngs=nnx.Rngs(0), **kwargs)

    def __call__(self, x, use_running_average=False, **call_kwargs):
        return self.layer(x, use_running_average=use_running_average, **call_kwargs)

    def load(self, x, **values) -> None:
        del x
        for key, value in values.items():
            if value is not None:
                getattr(self.layer, key)[...] = value

    def flat(self) -> dict:
        return nnx.to_pure_dict(nnx.state(self.layer))

    def to_bytes(self) -> bytes:
        return serialization.to_bytes(self.flat())

    def from_bytes(self, x, blob: bytes) -> None:
        del x
        state = nnx.state(self.layer)
        nnx.replace_by_pure_dict(state, serialization.from_bytes(self.flat(), blob))
        nnx.update(self.layer, state)

    @staticmethod
    def flax_layer(num_features, x, **kwargs):
        del x
        theirs = nnx.InstanceNorm(num_features, rngs=nnx.Rngs(0), **kwargs)
        graphdef, state = nnx.split(theirs)
        call = jitted(lambda state, x: nnx.merge(graphdef, state)(x))

        def apply(params, x):
            nnx.replace_by_pure_dict(state, params)
            return call(state, x)

        return nnx.to_pure_dict(state), apply


@pytest.fixture(params=[LinenFace, NnxFace], ids=["linen", "nnx"])
def face(request):
    return request.param


def _loaded(face, x, scale, bias, mean=None, var=None, **kwargs):
    layer = face(scale.shape[0], **kwargs)
    layer.load(x, scale=scale, bias=bias, mean=mean, var=var)
    return layer


# --- variables ---------------------------------------------------------------------------------


def test_variables_start_at_ones_zeros_and_stay_float32_for_half_params(face, rng):
    x = _data(rng)[0]
    fresh = face(3)
    fresh.load(x)  # linen: init, a training-mode call, which must not move the statistics
    stats = fresh.flat()
    assert jax.tree.map(lambda a: (a.shape, a.dtype), stats) == {
        "scale": ((3,), jnp.float32),
        "bias": ((3,), jnp.float32),
        "mean": ((3,), jnp.float32),
        "var": ((3,), jnp.float32),
    }
    np.testing.assert_array_equal(stats["scale"], np.ones(3))
    np.testing.assert_array_equal(stats["bias"], np.zeros(3))
    np.testing.assert_array_equal(stats["mean"], np.zeros(3))
    np.testing.assert_array_equal(stats["var"], np.ones(3))
    half = face(
        3,
        param_dtype=jnp.bfloat16,
        scale_init=nn.initializers.constant(2.5),
        bias_init=nn.initializers.constant(-1.0),
    )
    half.load(x)
    assert half.flat()["scale"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(half.flat()["scale"], np.full(3, 2.5))
    np.testing.assert_array_equal(half.flat()["bias"], np.full(3, -1.0))
    assert half.flat()["mean"].dtype == jnp.float32  # running statistics stay float32


def test_options_select_variables(face, rng):
    x = _data(rng)[0]
    layer = face(3, track_running_stats=False, use_bias=False)
    layer.load(x)
    assert jax.tree.map(jnp.shape, layer.flat()) == {"scale": (3,)}
    layer = face(3, use_scale=False, use_bias=False)
    layer.load(x)
    assert jax.tree.map(jnp.shape, layer.flat()) == {"mean": (3,), "var": (3,)}
    layer = face(
        3, use_scale=False, param_dtype=jnp.bfloat16, bias_init=nn.initializers.constant(0.5)
    )
    layer.load(x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), layer.flat()) == {
        "bias": ((3,), jnp.bfloat16),
        "mean": ((3,), jnp.float32),
        "var": ((3,), jnp.float32),
    }
    np.testing.assert_array_equal(layer.flat()["bias"], np.full(3, 0.5))
    ref_y, _, _ = reference_instance_norm(x, bias=np.full(3, 0.5), channel_axis=-1)
    y = layer(x)
    assert y.dtype == jnp.float32  # inferred from float32 input and bfloat16 bias
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)


# --- training and eval against the pure function and the float64 reference --------------------


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (3, 7, 2), (2, 3, 4, 5, 4)])
def test_training_equals_pure_function_on_channel_first_data(face, rng, shape):
    x, scale, bias, mean, var = _data(rng, shape)
    layer = _loaded(face, x, scale, bias, mean, var, momentum=0.9, epsilon=1e-3)
    y = layer(x)
    stats = layer.flat()
    pure = lucid_jax.instance_norm(
        jnp.moveaxis(x, -1, 1), mean, var, scale, bias, momentum=0.1, eps=1e-3, channel_axis=1
    )
    np.testing.assert_allclose(y, jnp.moveaxis(pure.output, 1, -1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats["mean"], pure.running_mean, rtol=1e-6)
    np.testing.assert_allclose(stats["var"], pure.running_var, rtol=1e-6)

    ref_y, ref_mean, ref_var = _reference_channels_last(
        x, mean, var, scale, bias, training=True, momentum=0.1, eps=1e-3
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["mean"], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], ref_var, rtol=1e-5)


@pytest.mark.parametrize("flax_momentum", [0.9, 0.99, 0.75, 0.0, 1.0])
def test_momentum_is_flax_convention(face, rng, flax_momentum):
    """new = momentum * old + (1 - momentum) * batch: Flax's m is Lucid's 1 - m."""
    x, scale, bias, mean, var = _data(rng)
    layer = _loaded(face, x, scale, bias, mean, var, momentum=flax_momentum)
    layer(x)
    stats = layer.flat()
    x64 = np.asarray(x, np.float64)
    batch_mean = x64.mean(axis=(1, 2)).mean(axis=0)
    batch_var = x64.var(axis=(1, 2)).mean(axis=0)  # biased, per instance, then batch mean
    expected_mean = flax_momentum * np.asarray(mean) + (1 - flax_momentum) * batch_mean
    expected_var = flax_momentum * np.asarray(var) + (1 - flax_momentum) * batch_var
    np.testing.assert_allclose(stats["mean"], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], expected_var, rtol=1e-5)

    lucid = lucid_jax.instance_norm(x, mean, var, momentum=1 - flax_momentum, channel_axis=-1)
    np.testing.assert_allclose(stats["mean"], lucid.running_mean, rtol=1e-6)
    np.testing.assert_allclose(stats["var"], lucid.running_var, rtol=1e-6)


def test_without_tracking_every_mode_uses_instance_stats(face, rng):
    x, scale, bias, _, _ = _data(rng)
    ref_y, _, _ = _reference_channels_last(x, weight=scale, bias=bias)
    for at_construction in (None, False, True):
        layer = _loaded(
            face, x, scale, bias, track_running_stats=False, use_running_average=at_construction
        )
        # linen takes the flag at construction or at call time; nnx's call-time value wins.
        at_call = (None, False, True) if at_construction is None or face is NnxFace else (None,)
        for use_running_average in at_call:
            y = layer(x, use_running_average=use_running_average)
            np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)  # True: Lucid's fallback


@pytest.mark.parametrize(
    ("shape", "feature_axes"), [((3, 4, 5, 6), (1, 3)), ((2, 3, 4, 5), (1, 2)), ((2, 3, 4), ())]
)
def test_several_feature_axes_match_reference_and_keep_running_stats(
    face, rng, shape, feature_axes
):
    x = host_array(rng.normal(1.0, 2.0, shape))
    reduced = [a for a in range(1, x.ndim) if a not in feature_axes]
    features = [x.shape[a] for a in feature_axes]
    layout = np.transpose(np.asarray(x), (0, *reduced, *feature_axes))  # (N, *reduced, *features)
    flat = layout.reshape(x.shape[0], -1, int(np.prod(features)))  # one channel axis, last
    c = flat.shape[-1]
    layer = face(c, feature_axes=feature_axes, momentum=0.8)
    y = layer(x)
    ref_y, ref_mean, ref_var = reference_instance_norm(
        flat, np.zeros(c), np.ones(c), momentum=0.2, channel_axis=-1
    )
    ref_y = np.transpose(ref_y.reshape(layout.shape), np.argsort((0, *reduced, *feature_axes)))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    stats = layer.flat()
    # linen's variables have the feature axes' shape (as Flax's), nnx's are (num_features,).
    assert stats["scale"].shape == stats["mean"].shape
    assert stats["scale"].shape == (tuple(features) if face is LinenFace else (c,))
    np.testing.assert_allclose(np.ravel(stats["mean"]), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.ravel(stats["var"]), ref_var, rtol=1e-5)


# --- drop-in for Flax's own InstanceNorm --------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "feature_axes", "use_scale", "use_bias"),
    [
        ((4, 5, 6, 3), -1, True, True),
        ((3, 7, 2), -1, True, False),
        ((2, 3, 4, 5, 4), -1, False, True),
        ((3, 4, 5, 6), 1, True, True),
        ((2, 3, 4, 5), (1, -1), True, True),
        ((2, 3, 4, 5), (), True, True),
    ],
)
def test_drop_in_for_flax_instance_norm(face, rng, shape, feature_axes, use_scale, use_bias):
    x = host_array(rng.normal(2.0, 3.0, shape))
    axes = feature_axes if isinstance(feature_axes, tuple) else (feature_axes,)
    c = int(np.prod([shape[a] for a in axes]))
    options = {"feature_axes": feature_axes, "use_scale": use_scale, "use_bias": use_bias}
    ours = face(c, track_running_stats=False, epsilon=1e-6, **options)
    ours.load(x)
    theirs_params, theirs = face.flax_layer(c, x, use_fast_variance=False, **options)
    chex.assert_trees_all_equal_shapes_and_dtypes(ours.flat(), theirs_params)
    chex.assert_trees_all_equal(ours.flat(), theirs_params)
    # Trained-looking params, shared both ways.
    params = jax.tree.map(
        lambda p: host_array(np.asarray(p) + rng.normal(0, 0.5, p.shape).astype(p.dtype), p.dtype),
        theirs_params,
    )
    ours.load(x, **params)
    np.testing.assert_allclose(ours(x), theirs(params, x), rtol=1e-5, atol=1e-5)


def test_drop_in_default_epsilon_differs_only_by_epsilon(face, rng):
    """Our default epsilon is Lucid's 1e-5 (Flax's InstanceNorm has 1e-6)."""
    x = host_array(rng.normal(0.0, 1.0, (2, 4, 4, 3)))
    params, theirs = face.flax_layer(3, x, epsilon=1e-5, use_fast_variance=False)
    ours = face(3, track_running_stats=False)
    np.testing.assert_allclose(ours(x), theirs(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("x_dtype", "dtype", "expected"),
    [
        (jnp.bfloat16, None, jnp.float32),  # inferred from input and float32 params
        (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
        (jnp.float32, jnp.bfloat16, jnp.bfloat16),
        (jnp.float32, None, jnp.float32),
    ],
)
def test_dtype_follows_flax(face, rng, x_dtype, dtype, expected):
    x = host_array(rng.normal(2.0, 3.0, (2, 4, 5, 3)), x_dtype)
    params, theirs = face.flax_layer(3, x, dtype=dtype, use_fast_variance=False)
    y_ours = face(3, track_running_stats=False, dtype=dtype, epsilon=1e-6)(x)
    y_theirs = theirs(params, x)
    assert y_ours.dtype == y_theirs.dtype == expected
    tol = 2e-2 if expected == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(
        y_ours.astype(np.float32), y_theirs.astype(np.float32), rtol=tol, atol=tol
    )
    ref_y, _, _ = _reference_channels_last(x.astype(np.float32), eps=1e-6)
    np.testing.assert_allclose(y_ours.astype(np.float32), ref_y, rtol=tol, atol=tol)
    # With tracking the stored statistics stay float32.
    layer = face(3, dtype=dtype)
    assert layer(x).dtype == expected
    assert layer.flat()["mean"].dtype == jnp.float32


def test_strict_dtype_promotion_gives_the_standard_result(face, rng):
    x = jnp.asarray(rng.normal(2.0, 3.0, (2, 4, 5, 3)), jnp.bfloat16)  # float32 params
    standard = face(3)(x)
    with jax.numpy_dtype_promotion("strict"):
        strict = face(3)(x)
    assert strict.dtype == standard.dtype == jnp.float32
    np.testing.assert_array_equal(strict, standard)


def test_float64(face, rng):
    with jax.enable_x64(True):
        x, scale, bias, mean, var = _data(rng, dtype=np.float64)
        fresh = face(3, momentum=0.9, param_dtype=jnp.float64)
        fresh.load(x)
        assert fresh.flat()["mean"].dtype == jnp.float64
        layer = _loaded(face, x, scale, bias, mean, var, momentum=0.9, param_dtype=jnp.float64)
        y = layer(x)
        assert y.dtype == jnp.float64
        ref_y, ref_mean, ref_var = _reference_channels_last(
            x, mean, var, scale, bias, training=True, momentum=0.1
        )
        np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.flat()["mean"], ref_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.flat()["var"], ref_var, rtol=1e-12)


def test_running_stats_carry_no_gradient(face, rng):
    x, scale, bias, mean, var = _data(rng)

    def new_mean_sum(scale):
        layer = _loaded(face, x, scale, bias, mean, var)
        layer(x * scale)
        return layer.flat()["mean"].sum()

    np.testing.assert_array_equal(jax.grad(new_mean_sum)(scale), np.zeros(3))


# --- checkpoints ---------------------------------------------------------------------------------


def test_serialization_round_trip(face, rng):
    x, scale, bias, mean, var = _data(rng)
    layer = _loaded(face, x, scale, bias, mean, var, momentum=0.5)
    for _ in range(3):
        layer(x)
    fresh = face(3, momentum=0.5)
    fresh.from_bytes(x, layer.to_bytes())
    chex.assert_trees_all_equal(fresh.flat(), layer.flat())
    assert not np.allclose(fresh.flat()["mean"], 0.0)
    np.testing.assert_array_equal(
        fresh(x, use_running_average=True), layer(x, use_running_average=True)
    )


# --- bad input -----------------------------------------------------------------------------------


def test_bad_arguments_raise_named_errors(face, rng):
    x = _data(rng)[0]
    with pytest.raises(ValueError, match=r"channel_axis.*got 0"):
        face(3, channel_axis=0)(x)
    with pytest.raises(ValueError, match=r"channel_axis.*got 4"):
        face(3, channel_axis=4)(x)
    with pytest.raises(TypeError, match="channel_axis"):
        face(3, channel_axis=1.0)(x)
    with pytest.raises(TypeError, match=r"feature_axes.*\(1, 'a'\)"):
        face(3, feature_axes=(1, "a"))(x)
    with pytest.raises(ValueError, match=r"feature_axes.*channel_axis"):
        face(3, feature_axes=1, channel_axis=2)(x)
    with pytest.raises(ValueError, match=r"^InstanceNorm: .*scalar"):
        face(3)(x[0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"^InstanceNorm: .*\(4, 0, 6, 3\).*axis 1.*size 0"):
        face(3)(x[:, :0])
    with pytest.raises(ValueError, match=r"^InstanceNorm: momentum must be in \[0, 1\].*1.5"):
        face(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"^InstanceNorm: momentum must be in \[0, 1\]"):
        face(3, momentum=-0.1)
    with pytest.raises(TypeError, match=r"^InstanceNorm: momentum"):
        face(3, momentum="0.9")
    with pytest.raises(ValueError, match=r"^InstanceNorm: epsilon must be >= 0.*got -1"):
        face(3, epsilon=-1)
    with pytest.raises(ValueError, match=r"^InstanceNorm: epsilon must be >= 0.*nan"):
        face(3, epsilon=float("nan"))
    with pytest.raises(TypeError, match=r"^InstanceNorm: epsilon"):
        face(3, epsilon="1e-5")
    with pytest.raises(ValueError, match=r"mask is not supported.*\(4, 5, 6, 3\)"):
        face(3)(x, mask=x > 0)
    np.testing.assert_array_equal(face(3)(x, mask=None), face(3)(x))  # None: no mask
