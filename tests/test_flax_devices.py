"""Both Flax faces on several (CPU) devices: `batch_axis_name` and Flax's `axis_name`.

`batch_axis_name` is the axis the batch is split over (the running statistics' batch averages
are `pmean`ed over it); `axis_name` has Flax's meaning, the axis every instance is split over
(the per-instance statistics are `pmean`ed over it), which the layers pass to the pure
function's `instance_axis_name` (tested last). Meshes use 4 of the test process's host devices
(`conftest`).
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from conftest import host_array, host_ones
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lucid_jax
from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax import nnx as lucid_nnx

# One worker for the module: its tests share programs, which split over two workers each
# compiled (52 programs against 39).
pytestmark = pytest.mark.xdist_group("flax_devices")

VALUES = {
    name: host_array(values)
    for name, values in {
        "scale": [1.0, 2.0, 0.5],
        "bias": [0.0, 1.0, -1.0],
        "mean": [0.5, -1.0, 2.0],
        "var": [1.0, 2.0, 0.5],
    }.items()
}


@pytest.fixture(params=["linen", "nnx"])
def face(request):
    return request.param


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.asarray(jax.devices()[:4]), ("devices",))


def pure(face: str, **kwargs):
    """A face's layer (or Flax's: `flax-linen`, `flax-nnx`) holding `VALUES`, as a pure
    function: `(state, apply)` with `apply(state, x) -> (y, new running statistics)`. Ours
    keep running statistics (opt-in) with Lucid's eps unless `kwargs` say otherwise."""
    if face in ("linen", "nnx"):
        kwargs = {"track_running_stats": True, "epsilon": 1e-5, **kwargs}
    if face == "linen":
        layer = lucid_linen.InstanceNorm(**kwargs)
        state = {"params": {"scale": VALUES["scale"], "bias": VALUES["bias"]}}
        if kwargs.get("track_running_stats", True):
            state["batch_stats"] = {"mean": VALUES["mean"], "var": VALUES["var"]}

        def apply(state, x):
            y, updates = layer.apply(state, x, use_running_average=False, mutable=["batch_stats"])
            return y, dict(updates.get("batch_stats", {}))

        return state, apply
    if face == "flax-linen":
        layer = nn.InstanceNorm(**kwargs)
        state = {"params": {"scale": VALUES["scale"], "bias": VALUES["bias"]}}
        return state, lambda state, x: (layer.apply(state, x), {})
    cls = nnx.InstanceNorm if face == "flax-nnx" else lucid_nnx.InstanceNorm
    layer = cls(3, rngs=nnx.Rngs(0), **kwargs)
    for name, value in VALUES.items():
        if getattr(layer, name, None) is not None:
            getattr(layer, name)[...] = value
    graphdef, state = nnx.split(layer)

    def apply(state, x):
        model = nnx.merge(graphdef, state)
        y = model(x)
        return y, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    return state, apply


def sharded(mesh, face: str, x, x_spec, **kwargs):
    """`pure` under `shard_map`, `x` split by `x_spec`: `(y, stats with one row per shard)`."""
    state, apply = pure(face, **kwargs)

    def step(state, x):
        y, stats = apply(state, x)
        return y, jax.tree.map(lambda a: a[None], stats)

    f = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=(P(), x_spec), out_specs=(x_spec, P("devices")))
    )
    return f(
        jax.device_put(state, NamedSharding(mesh, P())),
        jax.device_put(x, NamedSharding(mesh, x_spec)),
    )


def test_batch_axis_name_under_shard_map_gives_every_shard_the_global_update(face, mesh):
    rng = np.random.default_rng(0)
    # Shards with different statistics, so a per-shard update would differ from the global.
    x = host_array(
        rng.normal(0, 1, (8, 5, 5, 3)) * np.arange(1, 9)[:, None, None, None]
        + np.arange(8)[:, None, None, None]
    )
    y, updates = sharded(mesh, face, x, P("devices"), momentum=0.9, batch_axis_name="devices")
    state, apply = pure(face, momentum=0.9)
    ref_y, ref = jax.jit(apply)(state, x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    for name in ("mean", "var"):
        rows = np.asarray(updates[name])
        assert rows.shape == (4, 3)
        for row in rows:
            np.testing.assert_allclose(row, ref[name], rtol=1e-6, atol=1e-6)
    # Control: without batch_axis_name each shard only sees its own two samples.
    _, local = sharded(mesh, face, x, P("devices"), momentum=0.9)
    rows = np.asarray(local["mean"])
    assert not np.allclose(rows[0], rows[3])


def test_axis_name_averages_each_instance_statistics_over_devices_as_flax(face, mesh):
    """Flax's meaning of axis_name: every instance is split over the devices (here along a
    spatial axis) and its statistics are pmean'd; checked against Flax's own layer, the
    single-device layer, and its gradients."""
    rng = np.random.default_rng(1)
    x = host_array(
        rng.normal(2.0, 3.0, (2, 8, 5, 3)) * np.arange(1, 9)[None, :, None, None]
    )  # each instance split over the devices along axis 1
    spatial = P(None, "devices")
    options = {"epsilon": 1e-5, "use_fast_variance": False}
    # Flax's own layer under the same shard_map is the reference for the output.
    theirs, _ = sharded(mesh, "flax-" + face, x, spatial, axis_name="devices", **options)
    state, apply = pure(face, **options)
    single_y, single_stats = jax.jit(apply)(state, x)
    np.testing.assert_allclose(theirs, single_y, rtol=1e-5, atol=1e-5)
    for tracking in (False, True):
        y, stats = sharded(
            mesh, face, x, spatial, axis_name="devices", track_running_stats=tracking, **options
        )
        np.testing.assert_allclose(y, theirs, rtol=1e-5, atol=1e-5)
        for name, rows in stats.items():  # every shard stores the single-device update
            for row in np.asarray(rows):
                np.testing.assert_allclose(row, single_stats[name], rtol=1e-5, atol=1e-6)
    # Control: without axis_name each shard normalises its part of the instance alone.
    local, _ = sharded(mesh, face, x, spatial, track_running_stats=False, **options)
    assert not np.allclose(local, theirs, atol=1e-2)

    # Gradients through the pmean'd statistics equal the single-device ones.
    weights = host_array(rng.normal(size=x.shape))
    state, apply = pure(face, axis_name="devices", track_running_stats=False, **options)
    _, apply_single = pure(face, track_running_stats=False, **options)

    def loss(apply, state, x, w):
        return jnp.sum(apply(state, x)[0] * w)

    def step(state, x, w):
        total = lambda s, x: jax.lax.psum(loss(apply, s, x, w), "devices")  # noqa: E731
        return jax.grad(total, argnums=(0, 1))(state, x)

    grads = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=(P(), spatial, spatial), out_specs=(P(), spatial))
    )(
        jax.device_put(state, NamedSharding(mesh, P())),
        *(jax.device_put(a, NamedSharding(mesh, spatial)) for a in (x, weights)),
    )
    expected = jax.jit(jax.grad(lambda s, x: loss(apply_single, s, x, weights), argnums=(0, 1)))(
        state, x
    )
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_axis_index_groups_split_the_devices_as_lax_pmean_does(face):
    """Two groups of two devices, each sharing its own instances (under `pmap`: JAX's
    `shard_map` has no `axis_index_groups`)."""
    x = np.random.default_rng(3).normal(2.0, 3.0, (2, 8, 5, 3)).astype(np.float32)
    options = {"epsilon": 1e-5, "use_fast_variance": False, "track_running_stats": False}
    state, apply = pure(face, axis_name="devices", axis_index_groups=[[0, 1], [2, 3]], **options)
    parts = host_array(np.stack(np.split(x, 4, axis=1)))  # device d holds rows 2d, 2d + 1
    y = jax.pmap(lambda x: apply(state, x)[0], axis_name="devices", devices=jax.devices()[:4])(
        parts
    )
    single_state, apply_single = pure(face, **options)
    apply_single = jax.jit(apply_single)
    halves = [apply_single(single_state, host_array(half))[0] for half in (x[:, :4], x[:, 4:])]
    np.testing.assert_allclose(
        np.concatenate(list(np.asarray(y)), axis=1),
        np.concatenate(halves, axis=1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_pure_function_instance_axis_name_pmeans_each_instance_statistics(mesh):
    """The core's side of Flax's axis_name, through the public function."""
    rng = np.random.default_rng(2)
    x = host_array(rng.normal(1.0, 2.0, (2, 3, 8, 5)))  # (N, C, L, W)
    running_mean, running_var = host_array(np.zeros(3)), host_ones((3,))

    def step(x):
        out = lucid_jax.instance_norm(x, running_mean, running_var, instance_axis_name="devices")
        return out.output, out.running_mean[None], out.running_var[None]

    spatial = P(None, None, "devices")
    y, means, variances = jax.jit(
        jax.shard_map(
            step, mesh=mesh, in_specs=spatial, out_specs=(spatial, P("devices"), P("devices"))
        )
    )(jax.device_put(x, NamedSharding(mesh, spatial)))
    single = lucid_jax.instance_norm(x, running_mean, running_var)
    np.testing.assert_allclose(y, single.output, rtol=1e-5, atol=1e-5)
    for row_mean, row_var in zip(np.asarray(means), np.asarray(variances), strict=True):
        np.testing.assert_allclose(row_mean, single.running_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row_var, single.running_var, rtol=1e-5)


def test_pure_function_checks_axis_index_groups():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(
        ValueError, match=r"axis_index_groups=\(\(0, 1\),\) needs instance_axis_name"
    ):
        lucid_jax.instance_norm(x, axis_index_groups=[[0, 1]])
    with pytest.raises(TypeError, match=r"axis_index_groups must be a sequence of sequences"):
        lucid_jax.instance_norm(x, instance_axis_name="i", axis_index_groups=[["a"]])
    with pytest.raises(TypeError, match=r"axis_index_groups must be a sequence of sequences"):
        lucid_jax.instance_norm(x, instance_axis_name="i", axis_index_groups=3)
