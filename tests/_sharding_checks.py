"""Sharding checks for ``lucid_jax.instance_norm`` on 8 host devices (issue 5), as one script.

``tests/test_sharding.py`` runs this file in a subprocess, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and ``JAX_PLATFORMS=cpu`` set before
jax starts (the pytest process itself keeps its single device), and asserts on the JSON it
prints. Every check compiles and runs in this one process, which is much cheaper than one
subprocess per check. Run it by hand to see everything it measures::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        .venv/bin/python tests/_sharding_checks.py --pretty

What it records (floats and strings only; the test file owns every tolerance):

* ``jit`` cases: a layout (channels first ``(N, C, D, H, W)`` with ``channel_axis=1``, or
  channels last ``(N, D, H, W, C)`` with ``channel_axis=-1``), a sharding of the input (batch,
  channel, depth, or batch x depth on a 2 x 4 mesh), a mesh mode (``auto``: ``Mesh``'s
  default; ``explicit``: ``jax.make_mesh``'s default, sharding in types) and a function
  (``train``: training forward with running stats, weight and bias; ``eval``: forward with
  running stats; ``vjp``: ``jax.vjp`` forward and pullback, with the running stats as aux).
  For each: the largest error against the same jitted function on one device and against an
  independent float64 numpy reference, the shardings of the outputs, and every collective of
  the compiled HLO (``jit(f).lower(...).compile().as_text()``) with its array sizes.
* ``hlo`` cases: the same HLO inspection for larger shapes, compiled from abstract sharded
  inputs (``jax.ShapeDtypeStruct``), so a size-dependent fast path is inspected too.
* ``shard_map``/``pmap`` with ``axis_name``: each shard's running stats against the global
  reference; the same without ``axis_name`` (a control: the shards must then disagree); a full
  data-parallel training step (gradients ``psum``-ed) against one device.
* ``control``: a function that all-gathers its sharded input, to prove that the HLO parser
  does see activation-sized collectives.
"""

from __future__ import annotations

import os
import sys

DEVICES = 8
DEVICE_FLAG = f"--xla_force_host_platform_device_count={DEVICES}"

if __name__ == "__main__" and "jax" not in sys.modules:  # must precede the first jax import
    if DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_FLAG}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from hlo_collectives import collectives  # noqa: E402  (shared with benchmarks/scaling.py)

# ---------------------------------------------------------------------------------------------
# The cases (plain data, importable without starting jax: the test file parametrizes over them)
# ---------------------------------------------------------------------------------------------

N, C, D, H, W = 8, 16, 16, 8, 8
MOMENTUM, EPS = 0.1, 1e-5

#: layout -> (channel_axis, input shape)
LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "ncdhw": (1, (N, C, D, H, W)),
    "ndhwc": (-1, (N, D, H, W, C)),
}
#: sharding -> (mesh shape, mesh axis names, {layout: PartitionSpec entries})
SHARDINGS: dict[str, tuple[tuple[int, ...], tuple[str, ...], dict[str, tuple[Any, ...]]]] = {
    "batch": ((8,), ("x",), {"ncdhw": ("x",), "ndhwc": ("x",)}),
    "channel": ((8,), ("x",), {"ncdhw": (None, "x"), "ndhwc": (None, None, None, None, "x")}),
    "depth": ((8,), ("x",), {"ncdhw": (None, None, "x"), "ndhwc": (None, "x")}),
    "batch_depth": (
        (2, 4),
        ("data", "space"),
        {"ncdhw": ("data", None, "space"), "ndhwc": ("data", "space")},
    ),
}
#: ``*_centred``: the same on zero-mean data (the other inputs have instance means of about
#: 3 ± 2 against a std of 0.5 to 2), so that a core that picks its algorithm from how well
#: conditioned the data are is checked along both ways.
FUNCTIONS = ("train", "eval", "vjp", "train_centred", "vjp_centred")


def jit_case_names() -> list[str]:
    """Every ``jit`` case: ``jit/<mode>/<layout>/<sharding>/<function>``."""
    names = [
        f"jit/auto/{layout}/{sharding}/{fn}"
        for layout in LAYOUTS
        for sharding in SHARDINGS
        for fn in FUNCTIONS
    ]
    names += [
        f"jit/explicit/ncdhw/{sharding}/{fn}" for sharding in SHARDINGS for fn in ("train", "vjp")
    ]
    return names


#: Larger shapes, compiled but never run: (name, shape, channel_axis, sharding spec, mesh, dtype)
HLO_CASES: dict[str, tuple[tuple[int, ...], int, tuple[Any, ...], str, str]] = {
    # nnU-Net-sized 3-D volume, sharded along depth, and along batch x depth.
    "hlo/depth/2x32x128x128x128": ((2, 32, 128, 128, 128), 1, (None, None, "x"), "1d", "float32"),
    "hlo/batch_depth/4x32x64x128x128": (
        (4, 32, 64, 128, 128),
        1,
        ("data", None, "space"),
        "2d",
        "float32",
    ),
    # The issue-3 benchmark shape (2-D), batch- and height-sharded; bf16 too.
    "hlo/batch/16x128x128x128": ((16, 128, 128, 128), 1, ("x",), "1d", "float32"),
    "hlo/height/16x128x128x128": ((16, 128, 128, 128), 1, (None, None, "x"), "1d", "float32"),
    "hlo/height_bf16/16x128x128x128": ((16, 128, 128, 128), 1, (None, None, "x"), "1d", "bfloat16"),
    "hlo/batch_ndhwc/16x64x64x64x32": ((16, 64, 64, 64, 32), -1, ("x",), "1d", "float32"),
    "hlo/depth_ndhwc/2x128x128x128x32": ((2, 128, 128, 128, 32), -1, (None, "x"), "1d", "float32"),
}

# ---------------------------------------------------------------------------------------------
# Float64 numpy reference (independent of lucid_jax): forward, running stats and pullback
# ---------------------------------------------------------------------------------------------


def reference(x, rm, rv, w, b, g, channel_axis, training=True):
    """Returns ``y, new_rm, new_rv, dx, dw, db`` in float64 (pullback of ``g`` for training)."""
    x = np.moveaxis(np.asarray(x, np.float64), channel_axis, 1)
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    w64, b64 = np.asarray(w, np.float64).reshape(bshape), np.asarray(b, np.float64).reshape(bshape)
    rm64, rv64 = np.asarray(rm, np.float64), np.asarray(rv, np.float64)
    if not training:
        y = (x - rm64.reshape(bshape)) / np.sqrt(rv64.reshape(bshape) + EPS) * w64 + b64
        return np.moveaxis(y, 1, channel_axis), rm64, rv64, None, None, None
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean) * inv_std
    y = xhat * w64 + b64
    new_rm = MOMENTUM * mean.reshape(x.shape[:2]).mean(0) + (1 - MOMENTUM) * rm64
    new_rv = MOMENTUM * var.reshape(x.shape[:2]).mean(0) + (1 - MOMENTUM) * rv64
    gy = np.moveaxis(np.asarray(g, np.float64), channel_axis, 1)
    gxhat = gy * w64
    dx = inv_std * (
        gxhat
        - gxhat.mean(axis=axes, keepdims=True)
        - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)
    )
    red = (0, *axes)
    dw, db = (gy * xhat).sum(axis=red), gy.sum(axis=red)
    return (
        np.moveaxis(y, 1, channel_axis),
        new_rm,
        new_rv,
        np.moveaxis(dx, 1, channel_axis),
        dw,
        db,
    )


def rel_err(actual, expected) -> float:
    """``max|a - e| / max(max|e|, 1e-12)`` in float64."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return float("inf")
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-12))


# ---------------------------------------------------------------------------------------------
# The checks (jax from here on)
# ---------------------------------------------------------------------------------------------


def _inputs(
    shape: tuple[int, ...], channel_axis: int, seed: int = 0, centred: bool = False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    channels = shape[channel_axis]
    # Offset and scale differ per instance, so instance statistics matter.
    offsets = rng.normal(3.0, 2.0, size=(shape[0], channels)) * (0.0 if centred else 1.0)
    scales = rng.uniform(0.5, 2.0, size=(shape[0], channels))
    x = np.moveaxis(rng.normal(size=shape), channel_axis, 1)
    x = x * scales.reshape(scales.shape + (1,) * (x.ndim - 2))
    x = x + offsets.reshape(offsets.shape + (1,) * (x.ndim - 2))
    return {
        "x": np.moveaxis(x, 1, channel_axis).astype(np.float32),
        "rm": rng.normal(size=channels).astype(np.float32),
        "rv": rng.uniform(0.5, 1.5, size=channels).astype(np.float32),
        "w": rng.uniform(0.5, 1.5, size=channels).astype(np.float32),
        "b": rng.normal(size=channels).astype(np.float32),
        "g": rng.normal(size=shape).astype(np.float32),
    }


def _functions(channel_axis: int) -> dict[str, Callable[..., Any]]:
    import jax

    from lucid_jax import instance_norm

    def train(x, rm, rv, w, b, g):
        del g
        out = instance_norm(x, rm, rv, w, b, True, MOMENTUM, EPS, channel_axis=channel_axis)
        return {"y": out.output, "rm": out.running_mean, "rv": out.running_var}

    def eval_(x, rm, rv, w, b, g):
        del g
        out = instance_norm(x, rm, rv, w, b, False, MOMENTUM, EPS, channel_axis=channel_axis)
        return {"y": out.output, "rm": out.running_mean, "rv": out.running_var}

    def vjp(x, rm, rv, w, b, g):
        def f(x, w, b):
            out = instance_norm(x, rm, rv, w, b, True, MOMENTUM, EPS, channel_axis=channel_axis)
            return out.output, (out.running_mean, out.running_var)

        y, pullback, (new_rm, new_rv) = jax.vjp(f, x, w, b, has_aux=True)
        # The output's dtype is the promotion of x's, w's and b's (float32 for bfloat16 x).
        dx, dw, db = pullback(g.astype(y.dtype))
        return {"y": y, "rm": new_rm, "rv": new_rv, "dx": dx, "dw": dw, "db": db}

    return {"train": train, "eval": eval_, "vjp": vjp}


def _mesh(shape: tuple[int, ...], names: tuple[str, ...], mode: str):
    import jax
    from jax.sharding import AxisType

    axis_type = AxisType.Explicit if mode == "explicit" else AxisType.Auto
    devices = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
    return jax.sharding.Mesh(devices, names, axis_types=(axis_type,) * len(names))


def _spec_text(sharding: Any, ndim: int) -> str:
    spec = tuple(getattr(sharding, "spec", ()))
    spec = spec + (None,) * (ndim - len(spec))
    return str(spec)


def run_jit_case(name: str) -> dict[str, Any]:
    import contextlib

    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    _, mode, layout, sharding_name, fn_name = name.split("/")
    centred = fn_name.endswith("_centred")
    fn_name = fn_name.removesuffix("_centred")
    channel_axis, shape = LAYOUTS[layout]
    mesh_shape, axis_names, specs = SHARDINGS[sharding_name]
    spec = P(*specs[layout])
    mesh = _mesh(mesh_shape, axis_names, mode)
    fn = _functions(channel_axis)[fn_name]
    host = _inputs(shape, channel_axis, centred=centred)
    result: dict[str, Any] = {
        "activation_elements": int(np.prod(shape)),
        "instance_elements": shape[0] * shape[channel_axis],
        "input_spec": _spec_text(NamedSharding(mesh, spec), len(shape)),
    }

    # One device: every argument committed to device 0.
    single = jax.jit(fn)(*(jax.device_put(v, jax.devices()[0]) for v in host.values()))
    single = {k: np.asarray(v) for k, v in single.items()}

    context = jax.set_mesh(mesh) if mode == "explicit" else contextlib.nullcontext()
    with context:
        x_sharding = NamedSharding(mesh, spec)
        replicated = NamedSharding(mesh, P())
        args = {
            k: jax.device_put(v, x_sharding if k in ("x", "g") else replicated)
            for k, v in host.items()
        }
        jitted = jax.jit(fn)
        try:
            hlo = jitted.lower(*args.values()).compile().as_text()
            out = jitted(*args.values())
        except Exception as exc:  # recorded, so the test can show it
            result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            return result
    result["collectives"] = collectives(hlo)
    result["output_specs"] = {k: _spec_text(v.sharding, v.ndim) for k, v in out.items()}
    result["output_keeps_input_sharding"] = {
        k: bool(out[k].sharding.is_equivalent_to(x_sharding, out[k].ndim))
        for k in ("y", "dx")
        if k in out
    }
    ref = reference(*host.values(), channel_axis, training=fn_name != "eval")
    ref = dict(zip(("y", "rm", "rv", "dx", "dw", "db"), ref, strict=True))
    result["err_vs_single_device"] = {k: rel_err(v, single[k]) for k, v in out.items()}
    result["err_vs_float64"] = {k: rel_err(v, ref[k]) for k, v in out.items()}
    return result


def run_hlo_case(name: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    shape, channel_axis, spec_entries, mesh_kind, dtype = HLO_CASES[name]
    mesh = (
        _mesh((8,), ("x",), "auto")
        if mesh_kind == "1d"
        else _mesh((2, 4), ("data", "space"), "auto")
    )
    x_sharding, replicated = NamedSharding(mesh, P(*spec_entries)), NamedSharding(mesh, P())
    channels = shape[channel_axis]
    x = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=x_sharding)
    vec = jax.ShapeDtypeStruct((channels,), jnp.float32, sharding=replicated)
    result: dict[str, Any] = {
        "activation_elements": int(np.prod(shape)),
        "instance_elements": shape[0] * channels,
        "input_spec": _spec_text(x_sharding, len(shape)),
    }
    fns = _functions(channel_axis)
    result["collectives"] = {}
    for fn_name in ("train", "vjp"):
        try:
            hlo = jax.jit(fns[fn_name]).lower(x, vec, vec, vec, vec, x).compile().as_text()
        except Exception as exc:
            result["error"] = f"{fn_name}: {type(exc).__name__}: {exc}"[:2000]
            return result
        result["collectives"][fn_name] = collectives(hlo)
    return result


def run_control() -> dict[str, Any]:
    """A function that gathers its depth-sharded input: the parser must report it."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = _mesh((8,), ("x",), "auto")
    channel_axis, shape = LAYOUTS["ncdhw"]
    x = jax.device_put(_inputs(shape, channel_axis)["x"], NamedSharding(mesh, P(None, None, "x")))

    def gathers(x):
        # A "fast path" that reshapes each instance to one row forces the data together.
        rows = jax.lax.with_sharding_constraint(x.reshape(N * C, -1), NamedSharding(mesh, P()))
        return (rows * 2.0).reshape(x.shape)

    hlo = jax.jit(gathers).lower(x).compile().as_text()
    return {
        "activation_elements": int(np.prod(shape)),
        "instance_elements": N * C,
        "collectives": collectives(hlo),
    }


def _stacked_stats_shard_map(layout: str, axis_name: str | None) -> dict[str, Any]:
    """Batch-sharded shard_map; every shard returns its running stats (stacked on axis 0)."""
    import jax
    from jax.sharding import PartitionSpec as P

    from lucid_jax import instance_norm

    channel_axis, shape = LAYOUTS[layout]
    host = _inputs(shape, channel_axis, seed=1)
    mesh = _mesh((8,), ("x",), "auto")

    def per_shard(x, rm, rv, w, b):
        out = instance_norm(
            x, rm, rv, w, b, True, MOMENTUM, EPS, channel_axis=channel_axis, axis_name=axis_name
        )
        return out.output, out.running_mean[None], out.running_var[None]

    mapped = jax.jit(
        jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=(P("x"), P(), P(), P(), P()),
            out_specs=(P("x"), P("x"), P("x")),
        )
    )
    y, rms, rvs = mapped(host["x"], host["rm"], host["rv"], host["w"], host["b"])
    ref = reference(*host.values(), channel_axis)
    return {
        "shards": int(rms.shape[0]),
        "err_y": rel_err(y, ref[0]),
        "err_rm_per_shard": [rel_err(r, ref[1]) for r in np.asarray(rms)],
        "err_rv_per_shard": [rel_err(r, ref[2]) for r in np.asarray(rvs)],
        "spread_rm": float(np.ptp(np.asarray(rms), axis=0).max()),
        "spread_rv": float(np.ptp(np.asarray(rvs), axis=0).max()),
    }


def run_shard_map() -> dict[str, Any]:
    out = {}
    for layout in LAYOUTS:
        out[f"shard_map/{layout}/axis_name"] = _stacked_stats_shard_map(layout, "x")
        out[f"shard_map/{layout}/no_axis_name"] = _stacked_stats_shard_map(layout, None)
    return out


def run_pmap() -> dict[str, Any]:
    import jax

    from lucid_jax import instance_norm

    channel_axis, shape = LAYOUTS["ncdhw"]
    host = _inputs(shape, channel_axis, seed=2)
    per_device = host["x"].reshape((8, shape[0] // 8, *shape[1:]))

    def step(x, rm, rv, w, b):
        out = instance_norm(x, rm, rv, w, b, True, MOMENTUM, EPS, axis_name="i")
        return out.output, out.running_mean, out.running_var

    y, rms, rvs = jax.pmap(step, axis_name="i", in_axes=(0, None, None, None, None))(
        per_device, host["rm"], host["rv"], host["w"], host["b"]
    )
    ref = reference(*host.values(), channel_axis)
    return {
        "shards": int(rms.shape[0]),
        "err_y": rel_err(np.asarray(y).reshape(shape), ref[0]),
        "err_rm_per_shard": [rel_err(r, ref[1]) for r in np.asarray(rms)],
        "err_rv_per_shard": [rel_err(r, ref[2]) for r in np.asarray(rvs)],
    }


def run_data_parallel_step() -> dict[str, Any]:
    """A training step, data-parallel in shard_map, against the same step on one device."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from lucid_jax import instance_norm

    channel_axis, shape = LAYOUTS["ndhwc"]
    host = _inputs(shape, channel_axis, seed=3)
    target = host["g"]
    mesh = _mesh((8,), ("x",), "auto")

    def loss(params, stats, x, target, axis_name):
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

    def global_step(params, stats, x, target):
        return jax.grad(loss, has_aux=True)(params, stats, x, target, None)

    def shard_step(params, stats, x, target):
        # Equal shards: the global mean loss is the shards' mean losses over the shard count.
        # The parameters are replicated (in_specs P()), so with shard_map's default
        # check_vma=True, their gradient is already summed over "x" (no psum to add).
        def shard_loss(params, stats, x, target):
            value, new_stats = loss(params, stats, x, target, "x")
            return value / jax.lax.axis_size("x"), new_stats

        grads, new_stats = jax.grad(shard_loss, has_aux=True)(params, stats, x, target)
        return grads, jax.tree.map(lambda s: s[None], new_stats)

    params = {"w": host["w"], "b": host["b"]}
    stats = (host["rm"], host["rv"])
    ref_grads, ref_stats = jax.jit(global_step)(params, stats, host["x"], target)
    mapped = jax.jit(
        jax.shard_map(
            shard_step,
            mesh=mesh,
            in_specs=(P(), P(), P("x"), P("x")),
            out_specs=(P(), P("x")),
        )
    )
    grads, (rms, rvs) = mapped(params, stats, host["x"], target)
    ref = reference(*host.values(), channel_axis)
    return {
        "shards": int(rms.shape[0]),
        "err_grad_w": rel_err(grads["w"], ref_grads["w"]),
        "err_grad_b": rel_err(grads["b"], ref_grads["b"]),
        "err_rm_per_shard": [rel_err(r, ref_stats[0]) for r in np.asarray(rms)],
        "err_rv_per_shard": [rel_err(r, ref_stats[1]) for r in np.asarray(rvs)],
        "err_single_rm_vs_float64": rel_err(ref_stats[0], ref[1]),
        "err_single_rv_vs_float64": rel_err(ref_stats[1], ref[2]),
    }


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    args = parser.parse_args(argv)

    import jax

    if jax.device_count() < DEVICES:
        raise SystemExit(
            f"{__file__}: needs {DEVICES} devices, got {jax.device_count()}; set "
            f"XLA_FLAGS={DEVICE_FLAG} and JAX_PLATFORMS=cpu before jax starts."
        )
    results: dict[str, Any] = {
        "jax": jax.__version__,
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
    }
    checks: dict[str, Any] = {}
    for name in jit_case_names():
        checks[name] = _guard(lambda name=name: run_jit_case(name))
    for name in HLO_CASES:
        checks[name] = _guard(lambda name=name: run_hlo_case(name))
    checks["control/gather"] = _guard(run_control)
    shard_map_results = _guard(run_shard_map)
    if "error" in shard_map_results:
        for layout in LAYOUTS:
            for suffix in ("axis_name", "no_axis_name"):
                checks[f"shard_map/{layout}/{suffix}"] = shard_map_results
    else:
        checks.update(shard_map_results)
    checks["pmap/ncdhw/axis_name"] = _guard(run_pmap)
    checks["data_parallel_step"] = _guard(run_data_parallel_step)
    results["checks"] = checks
    print(json.dumps(results, indent=2 if args.pretty else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
