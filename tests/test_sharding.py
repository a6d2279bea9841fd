"""Data parallelism with ``axis_name`` on 8 host devices, the scaling guide, the benchmark.

* ``shard_map`` and ``pmap`` with ``axis_name``: every shard's running stats equal the global
  ones (and, as a control, differ without ``axis_name``); a data-parallel training step equals
  the same step on one device.
* The "Scaling out" example of ``docs/scaling.md`` runs, in a fresh process:
  it sets up its own devices.
* The scaling benchmark runs, in this process.

``test_sharding_jit.py`` checks ``jit`` with ``NamedSharding`` and the collectives of its
compiled HLO; ``test_sharding_hlo.py`` the HLO of larger shapes.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    HOST_DEVICE_COUNT,
    ROOT,
    python_blocks,
    run_python,
    skip_without_source_tree,
    xla_optimisations_off,
)
from jax.sharding import PartitionSpec as P
from sharding_cases import (
    EPS,
    LAYOUTS,
    MOMENTUM,
    TOL_FLOAT64,
    TOL_SINGLE_DEVICE,
    float64_reference,
    host_devices,
    make_inputs,
    make_mesh,
    rel_err,
)

from lucid_jax import instance_norm

pytestmark = pytest.mark.xdist_group("sharding_parallel")


@pytest.fixture
def unoptimised():
    """The test's programs compile without XLA's backend optimisations (they run once each):
    see `conftest.xla_optimisations_off`. Per test, not for the module: the benchmark
    measures what users get."""
    with xla_optimisations_off():
        yield


def _assert_every_shard_has(name: str, stats: np.ndarray, expected: np.ndarray, tol: float):
    """``stats`` stacks one running statistic per shard: each must equal ``expected``."""
    assert stats.shape[0] == HOST_DEVICE_COUNT, stats.shape
    errors = [rel_err(shard, expected) for shard in stats]
    assert max(errors) <= tol, f"running {name} per shard vs the global reference: {errors}"


# --- shard_map / pmap with axis_name ---------------------------------------------------------


def _batch_sharded_shard_map(layout: str, axis_name: str | None) -> dict[str, np.ndarray]:
    """Batch-sharded shard_map: the output, and every shard's running stats stacked on axis 0."""
    channel_axis, shape = LAYOUTS[layout]
    inputs = make_inputs(shape, channel_axis, seed=1)

    def per_shard(x, rm, rv, w, b):
        out = instance_norm(
            x, rm, rv, w, b, True, MOMENTUM, EPS, channel_axis=channel_axis, axis_name=axis_name
        )
        return out.output, out.running_mean[None], out.running_var[None]

    mapped = jax.jit(
        jax.shard_map(
            per_shard,
            mesh=make_mesh((8,), ("x",)),
            in_specs=(P("x"), P(), P(), P(), P()),
            out_specs=(P("x"), P("x"), P("x")),
        )
    )
    y, rms, rvs = mapped(*(inputs[k] for k in ("x", "rm", "rv", "w", "b")))
    return {"y": np.asarray(y), "rm": np.asarray(rms), "rv": np.asarray(rvs)} | {
        f"reference_{k}": v for k, v in float64_reference(inputs, channel_axis).items()
    }


@pytest.mark.usefixtures("unoptimised")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_shard_map_axis_name_gives_every_shard_the_global_running_stats(layout: str) -> None:
    result = _batch_sharded_shard_map(layout, "x")
    assert rel_err(result["y"], result["reference_y"]) <= TOL_FLOAT64
    for stat in ("rm", "rv"):
        _assert_every_shard_has(stat, result[stat], result[f"reference_{stat}"], TOL_FLOAT64)
        # ... and the very same values, not merely close ones.
        assert np.ptp(result[stat], axis=0).max() == 0.0, result[stat]


@pytest.mark.usefixtures("unoptimised")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_shard_map_without_axis_name_gives_local_running_stats(layout: str) -> None:
    # Control for the test above: without axis_name each shard sees only its own batch.
    result = _batch_sharded_shard_map(layout, None)
    assert rel_err(result["y"], result["reference_y"]) <= TOL_FLOAT64  # per instance either way
    for stat in ("rm", "rv"):
        assert np.ptp(result[stat], axis=0).max() > 1e-2, result[stat]
    errors = [rel_err(shard, result["reference_rm"]) for shard in result["rm"]]
    assert min(errors) > 1e-3, errors


@pytest.mark.usefixtures("unoptimised")
def test_pmap_axis_name_gives_every_replica_the_global_running_stats() -> None:
    channel_axis, shape = LAYOUTS["ncdhw"]
    inputs = make_inputs(shape, channel_axis, seed=2)
    per_device = inputs["x"].reshape((HOST_DEVICE_COUNT, shape[0] // HOST_DEVICE_COUNT, *shape[1:]))

    def step(x, rm, rv, w, b):
        out = instance_norm(x, rm, rv, w, b, True, MOMENTUM, EPS, axis_name="i")
        return out.output, out.running_mean, out.running_var

    mapped = jax.pmap(
        step, axis_name="i", in_axes=(0, None, None, None, None), devices=host_devices()
    )
    y, rms, rvs = mapped(per_device, *(inputs[k] for k in ("rm", "rv", "w", "b")))
    reference = float64_reference(inputs, channel_axis)
    assert rel_err(np.asarray(y).reshape(shape), reference["y"]) <= TOL_FLOAT64
    _assert_every_shard_has("rm", np.asarray(rms), reference["rm"], TOL_FLOAT64)
    _assert_every_shard_has("rv", np.asarray(rvs), reference["rv"], TOL_FLOAT64)


def _loss(params, stats, x, target, channel_axis: int, axis_name: str | None):
    out = instance_norm(
        x,
        stats[0],
        stats[1],
        params["w"],
        params["b"],
        True,
        MOMENTUM,
        EPS,
        channel_axis=channel_axis,
        axis_name=axis_name,
    )
    return jnp.mean((out.output - target) ** 2), (out.running_mean, out.running_var)


@pytest.mark.usefixtures("unoptimised")
def test_data_parallel_training_step_matches_one_device() -> None:
    channel_axis, shape = LAYOUTS["ndhwc"]
    inputs = make_inputs(shape, channel_axis, seed=3)
    params = {"w": inputs["w"], "b": inputs["b"]}
    stats = (inputs["rm"], inputs["rv"])
    x, target = inputs["x"], inputs["g"]

    def shard_step(params, stats, x, target):
        # Equal shards: the global mean loss is the shards' mean losses over the shard count.
        # The parameters are replicated (in_specs P()), so with shard_map's default
        # check_vma=True, their gradient is already summed over "x" (no psum to add).
        def shard_loss(params, stats, x, target):
            value, new_stats = _loss(params, stats, x, target, channel_axis, "x")
            return value / jax.lax.axis_size("x"), new_stats

        grads, new_stats = jax.grad(shard_loss, has_aux=True)(params, stats, x, target)
        return grads, jax.tree.map(lambda s: s[None], new_stats)

    one_device = jax.device_put((params, stats, x, target), host_devices()[0])
    ref_grads, ref_stats = jax.jit(
        jax.grad(lambda *args: _loss(*args, channel_axis, None), has_aux=True)
    )(*one_device)
    mapped = jax.jit(
        jax.shard_map(
            shard_step,
            mesh=make_mesh((8,), ("x",)),
            in_specs=(P(), P(), P("x"), P("x")),
            out_specs=(P(), P("x")),
        )
    )
    grads, (rms, rvs) = mapped(params, stats, x, target)
    assert rel_err(grads["w"], ref_grads["w"]) <= TOL_SINGLE_DEVICE
    assert rel_err(grads["b"], ref_grads["b"]) <= TOL_SINGLE_DEVICE
    _assert_every_shard_has("rm", np.asarray(rms), ref_stats[0], TOL_SINGLE_DEVICE)
    _assert_every_shard_has("rv", np.asarray(rvs), ref_stats[1], TOL_SINGLE_DEVICE)
    # ... and the one-device step itself is right.
    reference = float64_reference(inputs, channel_axis)
    assert rel_err(ref_stats[0], reference["rm"]) <= TOL_FLOAT64
    assert rel_err(ref_stats[1], reference["rv"]) <= TOL_FLOAT64


# --- the documented example ------------------------------------------------------------------


def _scaling_example() -> str:
    """The first python block of docs/scaling.md, the "Scaling out" guide."""
    skip_without_source_tree("docs")
    blocks = python_blocks((ROOT / "docs" / "scaling.md").read_text())
    assert blocks, "docs/scaling.md has no python block"
    return blocks[0]


def test_scaling_out_example_runs() -> None:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the example must set up its devices itself
    env["JAX_PLATFORMS"] = "cpu"
    # Its programs (a 1M-element jax.random.normal, the sharded steps) run once each: compiling
    # them without XLA's backend optimisations saves about a quarter of its CPU time. XLA's HLO
    # passes (partitioning, the collectives it prints) are the same either way (see
    # test_sharding_jit.test_unoptimised_compile_gives_the_same_hlo).
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = run_python("-c", _scaling_example(), cwd=ROOT, env=env)
    # (jax 0.7 prints a PartitionSpec by its full name)
    lines = proc.stdout.replace("PartitionSpec(", "P(").splitlines()
    assert lines[:2] == ["P('data', None, 'space')"] * 2, proc.stdout  # output and dx sharded
    # The shapes that cross devices: per-instance statistics at most, N * C = 4 * 8.
    shapes = re.findall(r"\w+\[([\d,]*)\]", lines[2])
    assert shapes, proc.stdout
    sizes = [math.prod(int(d) for d in s.split(",") if d) for s in shapes]
    assert max(sizes) <= 4 * 8, proc.stdout
    assert lines[3] == "running stats equal the global ones on every shard", proc.stdout


# --- the scaling benchmark -------------------------------------------------------------------


@pytest.mark.benchmarks
def test_scaling_benchmark_quick_run(tmp_path: Path) -> None:
    # With this process's 8 host devices, main() measures here (no subprocess of its own).
    skip_without_source_tree("benchmarks")
    pytest.importorskip("matplotlib")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import scaling

    assert scaling.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "scaling.md").read_text()
    assert "| sharding | devices | fwd sent |" in report
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert result["machine"]["jax_devices"] >= 8
    rows = result["rows"]
    shape = tuple(result["shape"])
    per_instance = shape[0] * shape[1]
    assert {(r["sharding"], r["devices"], r["step"]) for r in rows} == {
        (s, n, step)
        for s in ("data", "channel", "spatial")
        for n in (1, 2, 4, 8)
        for step in ("fwd", "fwd_bwd")
    }
    for r in rows:
        label = f"{r['sharding']}/{r['devices']}/{r['step']}"
        assert r["output_sharded_like_input"], label
        assert r["max_rel_err_vs_one_device"] <= TOL_SINGLE_DEVICE, label
        assert r["sent_over_activation"] == pytest.approx(r["sent_bytes"] / r["activation_bytes"])
        assert r["median_s"] > 0, label
        if r["devices"] == 1:
            assert r["collectives"] == [] and r["sent_bytes"] == 0, label
        for c in r["collectives"]:
            for text in c["shapes"]:
                dims = re.findall(r"\d+", text.split("[", 1)[1])
                assert math.prod(int(d) for d in dims) <= per_instance, (label, c)
    by_key = {(r["sharding"], r["devices"], r["step"]): r for r in rows}
    # Splitting a volume spatially needs the per-instance sums; splitting the batch only the
    # per-channel running-stat averages: more traffic for spatial, and both grow with devices.
    for step in ("fwd", "fwd_bwd"):
        spatial = [by_key[("spatial", n, step)]["sent_bytes"] for n in (2, 4, 8)]
        data = [by_key[("data", n, step)]["sent_bytes"] for n in (2, 4, 8)]
        assert 0 < spatial[0] < spatial[1] < spatial[2], spatial
        assert 0 < data[0] < data[1] < data[2], data
        assert all(d < s for d, s in zip(data, spatial, strict=True)), (data, spatial)
