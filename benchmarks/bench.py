"""Side-by-side CPU benchmark of ``lucid_jax.instance_norm`` (issue 3).

Run ``python -m benchmarks.bench`` (or ``make bench``); ``--help`` lists the options.

Instance norm is memory-bound, so every time is reported in units of a roofline ``R``: a
jitted ``x * w + b`` with per-channel ``w``, ``b``, which reads the input once and writes the
output once, the least any instance norm can do. For every benchmark configuration (a shape and
a dtype) the harness

1. builds every candidate (jit, compile, warm up) and checks its forward output and gradients
   against a float32 naive-``jnp`` reference (a broken candidate would make a fast one look good);
2. asks XLA for the compiled temporary memory of each JAX candidate
   (``jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``);
3. times in interleaved rounds: each round times every candidate once, in a rotated order,
   forward then forward+backward, each timing blocked with ``block_until_ready``;
4. reports medians over rounds, and ratios to the ``R`` measured in the same rounds.

Forward+backward is ``jax.jit`` of ``y, pullback = jax.vjp(f, x, w, b); return y, pullback(g)``
with a fixed cotangent ``g`` passed as an argument. PyTorch (CPU, channels first) runs in the
same process when importable: forward under ``torch.no_grad``, forward+backward with autograd.

Outputs, in ``--out`` (default ``benchmarks/results``): ``bench.json`` (every timing, the
machine and versions), ``bench.md`` (the tables and the issue's targets, also printed) and
``bench.png`` (one panel per configuration, times in units of ``R``).

The naive ``jnp`` baseline below computes means and variances itself on purpose: it is a
competitor being measured, not part of the library (whose maths lives in ``lucid_jax._core``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lucid_jax

EPS = 1e-5
ISSUE_SHAPE = (16, 128, 128, 128)
#: The shape on which vmapping the single-sample call is compared with the batched call.
VMAP_SHAPE = (16, 64, 64, 64)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: Inputs at least this large get the "big" number of rounds; smaller ones get more rounds.
BIG_INPUT_BYTES = 32 * 2**20
BIG_ROUNDS, SMALL_ROUNDS, QUICK_ROUNDS = 11, 21, 3
#: One timing sample lasts at least about this long (small shapes repeat the call ``inner``
#: times per sample, the same count for every candidate of a configuration).
MIN_SAMPLE_S, QUICK_MIN_SAMPLE_S, MAX_INNER = 0.02, 0.002, 200
#: Relative error (max |a - ref| / max |ref|) above which a candidate is flagged as wrong.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}

# The issue's targets.
TARGET_FWD_R, TARGET_FWD_BWD_R = 1.25, 2.5
TARGET_FLAX_SPEEDUP, TARGET_TEMP_FRACTION = 1.3, 0.1
TARGET_VMAP_RATIO, TARGET_BASELINE_SLOWDOWN = 1.15, 1.05
#: bf16 statistics probe: error allowed against a float32 reference (bf16 output rounding of
#: values of magnitude ~3 is ~0.01; a mean rounded to bf16 can cost up to ~0.9).
BF16_PROBE_TOLERANCE = 0.05
#: The plot's y axis stops a little above this many R (taller bars are cut, value printed).
PLOT_CAP_R = 9.0


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark configuration: a channels-first shape ``(N, C, *S)`` and a dtype."""

    shape: tuple[int, ...]
    dtype: str  # "float32" or "bfloat16"
    #: Added to the (mean 0.5, std 2) input: data far from zero, where a one-pass variance
    #: would be wrong (lucid_jax's two-pass default takes the same time whatever the data).
    offset: float = 0.0

    @property
    def shape_label(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def label(self) -> str:
        suffix = f"-offset{self.offset:g}" if self.offset else ""
        return self.shape_label + ("-f32" if self.dtype == "float32" else "-bf16") + suffix

    @property
    def title(self) -> str:
        suffix = f", mean {self.offset + 0.5:g}" if self.offset else ""
        return f"({', '.join(map(str, self.shape))}) {self.dtype}{suffix}"

    @property
    def input_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(jnp.dtype(self.dtype)).itemsize


FULL_CONFIGS = (
    Config(ISSUE_SHAPE, "float32"),
    Config(VMAP_SHAPE, "float32"),
    Config((8, 64, 64, 64), "float32"),
    Config((64, 32, 16, 16), "float32"),
    Config((2, 32, 64, 64, 64), "float32"),
    Config((8, 64, 64, 64), "float32", offset=30.0),
    Config((8, 64, 64, 64), "bfloat16"),
    Config(ISSUE_SHAPE, "bfloat16"),
)
QUICK_CONFIGS = (
    Config((2, 3, 8, 8), "float32"),
    Config((2, 3, 4, 4, 4), "float32"),
    Config((2, 3, 8, 8), "bfloat16"),
)


@dataclasses.dataclass
class Candidate:
    """Something timed: zero-argument closures that run it once and return its outputs."""

    key: str
    label: str
    framework: str  # "jax" or "torch"
    layout: str  # "NC..." (channels first) or "N...C" (channels last)
    dtype: str
    input_bytes: int
    fwd: Callable[[], Any]
    fwd_bwd: Callable[[], Any] | None
    sync: Callable[[Any], Any]
    #: A reference run (e.g. float32 next to a bf16 configuration): timed, not plotted.
    reference: bool = False
    temp_bytes_fwd: int | None = None
    temp_bytes_fwd_bwd: int | None = None
    compile_s: float | None = None
    errors: dict[str, float] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The functions being compared, all as f(x, w, b) -> y with per-channel w, b of shape (C,).


def _per_channel(v: jax.Array, ndim: int, channel_axis: int) -> jax.Array:
    shape = [1] * ndim
    shape[channel_axis] = v.shape[0]
    return v.reshape(shape)


def roofline_fn(channel_axis: int) -> Callable[..., jax.Array]:
    """``x * w + b``: one read of ``x``, one write of the output (the roofline ``R``)."""

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return x * _per_channel(w, x.ndim, channel_axis) + _per_channel(b, x.ndim, channel_axis)

    return f


def naive_fn(channel_axis: int) -> Callable[..., jax.Array]:
    """Naive ``jnp``: ``(x - mean) / sqrt(var + eps) * w + b`` with ``jnp.mean``/``jnp.var``."""

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        axis = channel_axis % x.ndim
        axes = tuple(a for a in range(1, x.ndim) if a != axis)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.var(x, axis=axes, keepdims=True)
        y = (x - mean) / jnp.sqrt(var + EPS)
        return y * _per_channel(w, x.ndim, axis) + _per_channel(b, x.ndim, axis)

    return f


def lucid_fn(
    channel_axis: int, package: Any = lucid_jax, **options: Any
) -> Callable[..., jax.Array]:
    """``package.instance_norm(x, weight=w, bias=b, channel_axis=..., **options).output``."""

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return package.instance_norm(
            x, weight=w, bias=b, eps=EPS, channel_axis=channel_axis, **options
        )[0]

    return f


def lucid_vmap_fn() -> Callable[..., jax.Array]:
    """``jax.vmap`` over the batch of the single-sample call ``instance_norm(x[None])[0]``."""
    single = lucid_fn(1)

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return jax.vmap(lambda sample: single(sample[None], w, b)[0])(x)

    return f


def flax_fn() -> Callable[..., jax.Array]:
    """``flax.linen.InstanceNorm`` (channels last, default ``use_fast_variance``) with params."""
    import flax.linen as nn

    module = nn.InstanceNorm(epsilon=EPS)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 2, 3), jnp.float32))
    if set(shapes["params"]) != {"scale", "bias"}:
        raise RuntimeError(f"unexpected flax InstanceNorm params: {sorted(shapes['params'])}")

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return module.apply({"params": {"scale": w, "bias": b}}, x)

    return f


def vjp_fn(f: Callable[..., jax.Array]) -> Callable[..., Any]:
    """Forward and pullback of ``f`` with respect to ``(x, w, b)``, for one jit."""

    def fwd_bwd(x: jax.Array, w: jax.Array, b: jax.Array, g: jax.Array) -> Any:
        y, pullback = jax.vjp(f, x, w, b)
        return y, pullback(g)

    return fwd_bwd


# --------------------------------------------------------------------------------------------
# Building candidates.


def _temp_bytes(jitted: Any, args: Sequence[Any]) -> int | None:
    stats = jitted.lower(*args).compile().memory_analysis()
    return None if stats is None else int(stats.temp_size_in_bytes)


def jax_candidate(
    key: str,
    label: str,
    layout: str,
    f: Callable[..., jax.Array],
    args: tuple[jax.Array, jax.Array, jax.Array],
    g: jax.Array | None,
    *,
    reference: bool = False,
) -> Candidate:
    """Jit ``f`` (and its forward+backward when ``g`` is given), compile and measure memory."""
    start = time.perf_counter()
    fwd = jax.jit(f)
    temp_fwd = _temp_bytes(fwd, args)
    fwd_call: Callable[[], Any] = functools.partial(fwd, *args)
    fb_call: Callable[[], Any] | None = None
    temp_fb = None
    if g is not None:
        fb = jax.jit(vjp_fn(f))
        fb_args = (*args, g)
        temp_fb = _temp_bytes(fb, fb_args)
        fb_call = functools.partial(fb, *fb_args)
    x = args[0]
    return Candidate(
        key=key,
        label=label,
        framework="jax",
        layout=layout,
        dtype=str(x.dtype),
        input_bytes=int(x.size * x.dtype.itemsize),
        fwd=fwd_call,
        fwd_bwd=fb_call,
        sync=jax.block_until_ready,
        reference=reference,
        temp_bytes_fwd=temp_fwd,
        temp_bytes_fwd_bwd=temp_fb,
        compile_s=time.perf_counter() - start,
    )


def donated_roofline_candidate(x: jax.Array) -> Candidate:
    """``x * 1 + 0`` written into its own donated input buffer, fed back each call.

    Informational: no fresh output buffer, so no first-touch page faults; the difference with
    ``R`` is what allocating a fresh output costs on this machine.
    """
    f = jax.jit(roofline_fn(1), donate_argnums=0)
    channels = x.shape[1]
    ones, zeros = jnp.ones(channels, x.dtype), jnp.zeros(channels, x.dtype)
    state = [x.copy()]
    temp = _temp_bytes(f, (state[0], ones, zeros))

    def run() -> jax.Array:
        state[0] = f(state[0], ones, zeros)
        return state[0]

    return Candidate(
        key="roofline_donated",
        label="x*w+b into a donated buffer (no fresh output)",
        framework="jax",
        layout="NC...",
        dtype=str(x.dtype),
        input_bytes=int(x.size * x.dtype.itemsize),
        fwd=run,
        fwd_bwd=None,
        sync=jax.block_until_ready,
        reference=True,
        temp_bytes_fwd=temp,
    )


def torch_candidate(
    torch: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray, g: np.ndarray
) -> Candidate:
    """PyTorch CPU ``F.instance_norm``, channels first, float32."""
    functional = torch.nn.functional
    xt, wt, bt, gt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, w, b, g))
    xr, wr, br = (t.detach().requires_grad_(True) for t in (xt, wt, bt))

    def fwd() -> Any:
        with torch.no_grad():
            return functional.instance_norm(xt, weight=wt, bias=bt, eps=EPS)

    def fwd_bwd() -> Any:
        y = functional.instance_norm(xr, weight=wr, bias=br, eps=EPS)
        grads = torch.autograd.grad(y, (xr, wr, br), gt)
        return y.detach(), grads

    return Candidate(
        key="torch_cf",
        label=f"torch F.instance_norm (CPU, {torch.get_num_threads()} threads)",
        framework="torch",
        layout="NC...",
        dtype="float32",
        input_bytes=int(x.nbytes),
        fwd=fwd,
        fwd_bwd=fwd_bwd,
        sync=lambda out: out,  # PyTorch CPU is synchronous
    )


def _to_jnp(a: Any) -> jax.Array:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().numpy()
    return jnp.asarray(a, jnp.float32)


def _rel_err(a: Any, ref: jax.Array) -> float:
    a = _to_jnp(a)
    scale = float(jnp.max(jnp.abs(ref)))
    return float(jnp.max(jnp.abs(a - ref))) / max(scale, np.finfo(np.float32).tiny)


def check_candidate(cand: Candidate, ref: dict[str, jax.Array], channels_last: bool) -> None:
    """Warm up ``cand`` and store its relative errors against the float32 reference."""
    y = cand.sync(cand.fwd())
    ref_layout = (lambda a: jnp.moveaxis(a, 1, -1)) if channels_last else (lambda a: a)
    cand.errors["y"] = _rel_err(y, ref_layout(ref["y"]))
    del y
    if cand.fwd_bwd is not None:
        y, (dx, dw, db) = cand.sync(cand.fwd_bwd())
        cand.errors["fwd_bwd.y"] = _rel_err(y, ref_layout(ref["y"]))
        cand.errors["dx"] = _rel_err(dx, ref_layout(ref["dx"]))
        cand.errors["dw"] = _rel_err(dw, ref["dw"])
        cand.errors["db"] = _rel_err(db, ref["db"])
        del y, dx, dw, db


# --------------------------------------------------------------------------------------------
# Timing.


def time_once(run: Callable[[], Any], sync: Callable[[Any], Any], inner: int) -> float:
    """Seconds per call of ``run`` (blocked until ready), averaged over ``inner`` calls."""
    start = time.perf_counter()
    for _ in range(inner):
        out = run()
        sync(out)
        del out
    return (time.perf_counter() - start) / inner


def run_rounds(
    cands: Sequence[Candidate], rounds: int, inner: int, log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds: each round times every candidate once, in a rotated order."""
    times: dict[str, dict[str, list[float]]] = {c.key: {"fwd": [], "fwd_bwd": []} for c in cands}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = list(cands[r % len(cands) :]) + list(cands[: r % len(cands)])
            for c in order:
                times[c.key]["fwd"].append(time_once(c.fwd, c.sync, inner))
            for c in order:
                if c.fwd_bwd is not None:
                    times[c.key]["fwd_bwd"].append(time_once(c.fwd_bwd, c.sync, inner))
            if rounds > 3 and (r + 1) % max(1, rounds // 4) == 0:
                log(f"    round {r + 1}/{rounds}")
    finally:
        gc.enable()
    return times


def _summary(samples: list[float], r_median: float) -> dict[str, Any] | None:
    if not samples:
        return None
    median = statistics.median(samples)
    q = np.quantile(samples, [0.25, 0.75])
    return {
        "median_s": median,
        "min_s": min(samples),
        "q25_s": float(q[0]),
        "q75_s": float(q[1]),
        "ratio_R": median / r_median,
        "times_s": samples,
    }


# --------------------------------------------------------------------------------------------
# One configuration.


def _inputs(config: Config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = config.shape[1]
    x = rng.standard_normal(config.shape, dtype=np.float32)
    x *= 2.0
    x += 0.5 + config.offset
    g = rng.standard_normal(config.shape, dtype=np.float32)
    w = (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    b = (0.1 * rng.standard_normal(c)).astype(np.float32)
    return {"x": x, "w": w, "b": b, "g": g}


def bench_config(
    config: Config,
    *,
    rounds: int,
    min_sample_s: float,
    torch: Any,
    log: Callable[[str], None],
    baseline: Any = None,
) -> dict[str, Any]:
    """Build, check, measure and time every candidate for one configuration."""
    dtype = jnp.dtype(config.dtype)
    data = _inputs(config, seed=0)
    # The data actually fed (rounded to bf16 for bf16), in float32 for the reference.
    x = jnp.asarray(data["x"]).astype(dtype)
    w, b, g = (jnp.asarray(data[k]).astype(dtype) for k in ("w", "b", "g"))
    x32, w32, b32, g32 = (a.astype(jnp.float32) for a in (x, w, b, g))
    x_cl, g_cl = jnp.moveaxis(x, 1, -1).copy(), jnp.moveaxis(g, 1, -1).copy()

    ref_out = jax.jit(vjp_fn(naive_fn(1)))(x32, w32, b32, g32)
    ref = {"y": ref_out[0], "dx": ref_out[1][0], "dw": ref_out[1][1], "db": ref_out[1][2]}
    del ref_out

    cf, cl = (x, w, b), (x_cl, w, b)
    specs: list[tuple[str, str, str, Callable[..., jax.Array], tuple, Any, bool]] = [
        ("roofline", "roofline R = jit(x*w+b)", "NC...", roofline_fn(1), cf, None, False),
        ("lucid_cf", "lucid_jax (channel_axis=1)", "NC...", lucid_fn(1), cf, g, False),
        ("lucid_cl", "lucid_jax (channel_axis=-1)", "N...C", lucid_fn(-1), cl, g_cl, False),
        (
            "lucid_cf_one_pass",
            "lucid_jax, variance_method='one_pass'",
            "NC...",
            lucid_fn(1, variance_method="one_pass"),
            cf,
            g,
            False,
        ),
        ("lucid_cf_vmap", "lucid_jax vmapped over samples", "NC...", lucid_vmap_fn(), cf, g, False),
        ("naive_cf", "naive jnp", "NC...", naive_fn(1), cf, g, False),
        ("naive_cl", "naive jnp", "N...C", naive_fn(-1), cl, g_cl, False),
    ]
    if baseline is not None:
        for key, layout, axis, args, cot in (
            ("cf", "NC...", 1, cf, g),
            ("cl", "N...C", -1, cl, g_cl),
        ):
            label = f"lucid_jax at {baseline.REVISION} (channel_axis={axis})"
            specs.append(
                (f"baseline_{key}", label, layout, lucid_fn(axis, baseline), args, cot, False)
            )
    if config.dtype == "float32":
        specs.append(("flax_cl", "flax.linen.InstanceNorm", "N...C", flax_fn(), cl, g_cl, False))
    else:
        # float32 runs of the same data, timed in the same rounds, for per-element comparison.
        cf32 = (x32, w32, b32)
        specs.append(
            ("roofline_f32", "roofline R, float32", "NC...", roofline_fn(1), cf32, None, True)
        )
        specs.append(("lucid_cf_f32", "lucid_jax, float32", "NC...", lucid_fn(1), cf32, g32, True))

    cands: list[Candidate] = []
    for key, label, layout, f, args, cot, reference in specs:
        log(f"    compile + check {key}")
        cand = jax_candidate(key, label, layout, f, args, cot, reference=reference)
        if key.startswith("roofline"):
            cand.sync(cand.fwd())  # not an instance norm: warm up, nothing to check
        else:
            check_candidate(cand, ref, channels_last=layout == "N...C")
        cands.append(cand)
    cands.append(donated_roofline_candidate(x))
    cands[-1].sync(cands[-1].fwd())
    if torch is not None and config.dtype == "float32":
        log("    build + check torch_cf")
        cand = torch_candidate(torch, data["x"], data["w"], data["b"], data["g"])
        check_candidate(cand, ref, channels_last=False)
        cands.append(cand)
    del ref, data

    tolerance = TOLERANCE[config.dtype]
    for cand in cands:
        worst = max(cand.errors.values(), default=0.0)
        if not worst <= tolerance:
            log(f"    WARNING: {cand.key} differs from the reference: {cand.errors}")

    # Second warm-up, then calibrate the calls per sample on the roofline.
    for cand in cands:
        cand.sync(cand.fwd())
        if cand.fwd_bwd is not None:
            cand.sync(cand.fwd_bwd())
    roof = cands[0]
    t_r = min(time_once(roof.fwd, roof.sync, 1) for _ in range(3))
    inner = max(1, min(MAX_INNER, math.ceil(min_sample_s / t_r)))
    log(f"    timing {len(cands)} candidates: {rounds} rounds x {inner} call(s) per sample")
    times = run_rounds(cands, rounds, inner, log)

    r_median = statistics.median(times["roofline"]["fwd"])
    candidates = {}
    for cand in cands:
        temp = cand.temp_bytes_fwd_bwd
        candidates[cand.key] = {
            "label": cand.label,
            "framework": cand.framework,
            "layout": cand.layout,
            "dtype": cand.dtype,
            "reference": cand.reference,
            "input_bytes": cand.input_bytes,
            "fwd": _summary(times[cand.key]["fwd"], r_median),
            "fwd_bwd": _summary(times[cand.key]["fwd_bwd"], r_median),
            "temp_bytes_fwd": cand.temp_bytes_fwd,
            "temp_bytes_fwd_bwd": temp,
            "temp_fraction_fwd_bwd": None if temp is None else temp / cand.input_bytes,
            "compile_s": cand.compile_s,
            "max_rel_err": cand.errors,
            "correct": None if not cand.errors else max(cand.errors.values()) <= tolerance,
        }
    del cands, x, w, b, g, x32, w32, b32, g32, x_cl, g_cl, cf, cl, specs
    gc.collect()
    return {
        "label": config.label,
        "title": config.title,
        "shape": list(config.shape),
        "offset": config.offset,
        "dtype": config.dtype,
        "input_bytes": config.input_bytes,
        "rounds": rounds,
        "calls_per_sample": inner,
        "R_s": r_median,
        "candidates": candidates,
    }


def bf16_statistics_probe() -> dict[str, float]:
    """Max error of bf16 instance norm where bf16 statistics would be visibly wrong.

    The input is ``300 + N(0, 1)`` in bfloat16 (spacing 2 near 300, so the mean of an
    instance is not a bf16 number). With statistics kept in float32 the bf16 output differs
    from a float32 computation on the same bf16 values only by its own rounding (about 0.01
    for outputs of magnitude ~3); a mean rounded to bf16 shifts outputs by up to ~0.9 (how
    much of that shows depends on which conversions XLA keeps: naive ``jnp`` is printed for
    comparison).
    """
    rng = np.random.default_rng(1)
    x = jnp.asarray(300.0 + rng.standard_normal((2, 8, 32, 32)), jnp.bfloat16)
    ref = naive_fn(1)(x.astype(jnp.float32), jnp.ones(8), jnp.zeros(8))
    ones, zeros = jnp.ones(8, jnp.bfloat16), jnp.zeros(8, jnp.bfloat16)
    out = {}
    for key, f in (("lucid_cf", lucid_fn(1)), ("naive_cf", naive_fn(1))):
        y = jax.jit(f)(x, ones, zeros)
        out[key] = float(jnp.max(jnp.abs(y.astype(jnp.float32) - ref)))
    return out


# --------------------------------------------------------------------------------------------
# Machine description.


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
    return fields


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(torch: Any, torch_note: str | None) -> dict[str, Any]:
    """CPU, cores, memory and library versions, for the JSON and the report."""
    import jaxlib

    cpuinfo = _cpuinfo()
    flags = set(cpuinfo.get("flags", "").split())
    return {
        "cpu_model": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        "cpu_family_model": f"{cpuinfo.get('cpu family', '?')}/{cpuinfo.get('model', '?')}",
        "cpu_simd": [f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jaxlib, "__version__", _version("jaxlib")),
        "jax_device": str(jax.devices("cpu")[0]),
        "flax": _version("flax"),
        "numpy": np.__version__,
        "lucid_jax": _version("lucid-jax"),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "torch_note": torch_note,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }


def machine_line(m: dict[str, Any]) -> str:
    mem = m["memory_bytes"]
    torch = f"torch {m['torch']} ({m['torch_threads']} threads)" if m["torch"] else "no torch"
    return (
        f"{m['cpu_model']}, {m['usable_cores']} cores"
        + (f", {mem / 2**30:.0f} GiB RAM" if mem else "")
        + f"; {m['platform']}; Python {m['python']}; jax {m['jax']}, jaxlib {m['jaxlib']}, "
        f"flax {m['flax']}, numpy {m['numpy']}, {torch}"
    )


# --------------------------------------------------------------------------------------------
# Targets, tables and the plot.


def _status(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def _find(configs: list[dict], shape: tuple[int, ...], dtype: str) -> dict | None:
    return next(
        (
            c
            for c in configs
            if tuple(c["shape"]) == shape and c["dtype"] == dtype and not c.get("offset")
        ),
        None,
    )


def _ratio(config: dict, key: str, phase: str) -> float | None:
    cand = config["candidates"].get(key)
    return None if cand is None or cand[phase] is None else cand[phase]["ratio_R"]


def evaluate_targets(configs: list[dict], probe: dict[str, float] | None) -> list[dict]:
    """Each of the issue's targets: measured figure, threshold, PASS/FAIL/SKIP."""
    targets = []

    def add(name: str, measured: float | None, threshold: str, ok: bool | None, detail: str):
        targets.append(
            {
                "target": name,
                "measured": measured,
                "threshold": threshold,
                "status": _status(ok),
                "detail": detail,
            }
        )

    big = _find(configs, ISSUE_SHAPE, "float32")
    issue = "(" + ",".join(map(str, ISSUE_SHAPE)) + ")"
    for phase, limit, what in (
        ("fwd", TARGET_FWD_R, "forward"),
        ("fwd_bwd", TARGET_FWD_BWD_R, "forward+backward"),
    ):
        r = None if big is None else _ratio(big, "lucid_cf", phase)
        add(
            f"{what} ≤ {limit} R on {issue} float32, channels first",
            r,
            f"≤ {limit}",
            None if r is None else r <= limit,
            "shape not benchmarked" if r is None else f"lucid_jax {r:.2f} R",
        )

    speedups = []
    for c in configs:
        flax_fb = _ratio(c, "flax_cl", "fwd_bwd")
        ours = _ratio(c, "lucid_cl", "fwd_bwd")
        if flax_fb is not None and ours is not None:
            speedups.append((flax_fb / ours, c["label"]))
    worst = min(speedups) if speedups else None
    add(
        f"forward+backward ≥ {TARGET_FLAX_SPEEDUP}× faster than flax.linen.InstanceNorm, "
        "channels last, every shape",
        None if worst is None else worst[0],
        f"≥ {TARGET_FLAX_SPEEDUP} (worst shape)",
        None if worst is None else worst[0] >= TARGET_FLAX_SPEEDUP,
        ", ".join(f"{label} {s:.2f}×" for s, label in speedups) or "flax not run",
    )

    fractions = []
    for c in configs:
        for key in ("lucid_cf", "lucid_cl"):
            cand = c["candidates"].get(key)
            if cand is not None and cand["temp_fraction_fwd_bwd"] is not None:
                fractions.append((cand["temp_fraction_fwd_bwd"], f"{c['label']} {key}"))
    worst = max(fractions) if fractions else None
    add(
        f"compiled temp memory of forward+backward ≤ {TARGET_TEMP_FRACTION}× input bytes",
        None if worst is None else worst[0],
        f"≤ {TARGET_TEMP_FRACTION} (worst case)",
        None if worst is None else worst[0] <= TARGET_TEMP_FRACTION,
        "n/a" if worst is None else f"worst {worst[1]}: {worst[0]:.3g}× input",
    )

    slowdowns = []
    for c in configs:
        for ours, naive in (("lucid_cf", "naive_cf"), ("lucid_cl", "naive_cl")):
            a, b = _ratio(c, ours, "fwd"), _ratio(c, naive, "fwd")
            if a is not None and b is not None:
                slowdowns.append((a / b, f"{c['label']} {ours}"))
    worst = max(slowdowns) if slowdowns else None
    add(
        "forward never slower than naive jnp, any shape or layout (time ratio lucid/naive)",
        None if worst is None else worst[0],
        "≤ 1.0 (worst case)",
        None if worst is None else worst[0] <= 1.0,
        "n/a" if worst is None else ", ".join(f"{label} {s:.2f}" for s, label in slowdowns),
    )

    for phase, what in (("fwd", "forward"), ("fwd_bwd", "forward+backward")):
        per_element = []
        for c in configs:
            if c["dtype"] != "bfloat16":
                continue
            a, b = _ratio(c, "lucid_cf", phase), _ratio(c, "lucid_cf_f32", phase)
            # Context: the same ratio for the roofline x*w+b itself (bf16 R over float32 R).
            roof = _ratio(c, "roofline_f32", "fwd")
            if a is not None and b is not None:
                per_element.append((a / b, c["label"], None if not roof else 1 / roof))
        worst = max(per_element) if per_element else None
        add(
            f"bf16 {what} no slower than float32 per element (time ratio bf16/f32)",
            None if worst is None else worst[0],
            "≤ 1.0 (worst shape)",
            None if worst is None else worst[0] <= 1.0,
            ", ".join(
                f"{label} {s:.2f}" + ("" if roof is None else f" (roofline R itself: {roof:.2f})")
                for s, label, roof in per_element
            )
            or "no bf16 shape run",
        )

    vmapped = _find(configs, VMAP_SHAPE, "float32")
    for phase, what in (("fwd", "forward"), ("fwd_bwd", "forward+backward")):
        a = None if vmapped is None else _ratio(vmapped, "lucid_cf_vmap", phase)
        b = None if vmapped is None else _ratio(vmapped, "lucid_cf", phase)
        ratio = None if a is None or b is None else a / b
        add(
            f"vmap of the single-sample call ≤ {TARGET_VMAP_RATIO}× the batched call, {what}, "
            f"({','.join(map(str, VMAP_SHAPE))}) float32",
            ratio,
            f"≤ {TARGET_VMAP_RATIO}",
            None if ratio is None else ratio <= TARGET_VMAP_RATIO,
            "shape not benchmarked" if ratio is None else f"vmapped {a:.2f} R, batched {b:.2f} R",
        )

    for phase, what in (("fwd", "forward"), ("fwd_bwd", "forward+backward")):
        slower = []
        for c in configs:
            for key in ("cf", "cl"):
                a, b = _ratio(c, f"lucid_{key}", phase), _ratio(c, f"baseline_{key}", phase)
                if a is not None and b is not None:
                    slower.append((a / b, f"{c['label']} {key}"))
        worst = max(slower) if slower else None
        add(
            f"{what} no slower than the --baseline revision by more than "
            f"{TARGET_BASELINE_SLOWDOWN - 1:.0%}, every shape and layout (time ratio new/old)",
            None if worst is None else worst[0],
            f"≤ {TARGET_BASELINE_SLOWDOWN} (worst case)",
            None if worst is None else worst[0] <= TARGET_BASELINE_SLOWDOWN,
            "no --baseline given"
            if worst is None
            else ", ".join(f"{label} {r:.2f}" for r, label in slower),
        )

    err = None if probe is None else probe["lucid_cf"]
    add(
        "bf16 statistics in float32 (probe: bf16 input 300+N(0,1), max abs(y - y_f32))",
        err,
        f"≤ {BF16_PROBE_TOLERANCE}",
        None if err is None else err <= BF16_PROBE_TOLERANCE,
        "not run" if probe is None else f"lucid_jax {err:.3g}; naive jnp {probe['naive_cf']:.3g}",
    )
    return targets


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3g}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


#: The summary table's columns: (candidate key, phase, heading).
SUMMARY_COLUMNS = (
    ("lucid_cf", "fwd", "lucid NC… fwd"),
    ("lucid_cf", "fwd_bwd", "lucid NC… fwd+bwd"),
    ("lucid_cl", "fwd", "lucid N…C fwd"),
    ("lucid_cl", "fwd_bwd", "lucid N…C fwd+bwd"),
    ("baseline_cf", "fwd", "baseline NC… fwd"),
    ("baseline_cf", "fwd_bwd", "baseline NC… fwd+bwd"),
    ("baseline_cl", "fwd", "baseline N…C fwd"),
    ("baseline_cl", "fwd_bwd", "baseline N…C fwd+bwd"),
    ("lucid_cf_one_pass", "fwd", "lucid one_pass NC… fwd"),
    ("lucid_cf_one_pass", "fwd_bwd", "lucid one_pass NC… fwd+bwd"),
    ("lucid_cf_vmap", "fwd", "lucid vmapped NC… fwd"),
    ("lucid_cf_vmap", "fwd_bwd", "lucid vmapped NC… fwd+bwd"),
    ("naive_cf", "fwd", "naive NC… fwd"),
    ("naive_cf", "fwd_bwd", "naive NC… fwd+bwd"),
    ("flax_cl", "fwd", "flax N…C fwd"),
    ("flax_cl", "fwd_bwd", "flax N…C fwd+bwd"),
    ("torch_cf", "fwd", "torch fwd"),
    ("torch_cf", "fwd_bwd", "torch fwd+bwd"),
)


def summary_table(configs: list[dict]) -> list[str]:
    """One row per configuration: R in ms, then every time in units of R, and lucid's temp."""
    heads = [h for _, _, h in SUMMARY_COLUMNS]
    lines = [
        "Times in units of R (lower is better); temp = XLA temporary memory of lucid_jax's "
        "forward+backward (channels first) over the input's bytes.",
        "",
        "| shape | dtype | R ms | " + " | ".join(heads) + " | lucid temp / input |",
        "|---|---|---:|" + "---:|" * len(heads) + "---:|",
    ]
    for c in configs:
        cells = []
        for key, phase, _ in SUMMARY_COLUMNS:
            r = _ratio(c, key, phase)
            cells.append("—" if r is None else f"{r:.2f}")
        lucid = c["candidates"].get("lucid_cf") or {}
        frac = lucid.get("temp_fraction_fwd_bwd")
        shape = "(" + ",".join(map(str, c["shape"])) + ")"
        if c.get("offset"):
            shape += f", mean {c['offset'] + 0.5:g}"
        lines.append(
            f"| {shape} | {c['dtype']} | {_ms(c['R_s'])} | "
            + " | ".join(cells)
            + f" | {'—' if frac is None else format(frac, '.3g')} |"
        )
    lines.append("")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report: machine, a summary, one table per configuration, the targets."""
    lines = [
        "### lucid_jax.instance_norm benchmark results (CPU)",
        "",
        f"Machine: {machine_line(result['machine'])}.  ",
        f"Run {result['created']}; medians over interleaved rounds; R = jitted `x*w+b` "
        "(one read, one write) timed in the same rounds; forward+backward = "
        "`jit(vjp(f, x, w, b) + pullback(g))`; temp = XLA compiled temporary memory "
        "of forward+backward.",
        "",
        *summary_table(result["configs"]),
    ]
    for c in result["configs"]:
        lines += [
            f"#### {c['title']}: input {_bytes(c['input_bytes'])}, R = {_ms(c['R_s'])} ms, "
            f"{c['rounds']} rounds × {c['calls_per_sample']} call(s)",
            "",
            "| candidate | layout | forward ms | forward / R | fwd+bwd ms | fwd+bwd / R "
            "| temp fwd+bwd | temp / input | max rel err |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cand in c["candidates"].values():
            fwd, fb = cand["fwd"], cand["fwd_bwd"]
            frac = cand["temp_fraction_fwd_bwd"]
            label = cand["label"] + (" *(reference)*" if cand["reference"] else "")
            errors = cand["max_rel_err"].values()
            err = "—" if not errors else f"{max(errors):.1e}"
            lines.append(
                f"| {label} | {cand['layout']} | {_ms(fwd['median_s'])} | "
                f"{fwd['ratio_R']:.2f} | {_ms(fb and fb['median_s'])} | "
                f"{'—' if fb is None else format(fb['ratio_R'], '.2f')} | "
                f"{_bytes(cand['temp_bytes_fwd_bwd'])} | "
                f"{'—' if frac is None else format(frac, '.3g')} | "
                f"{err}{' **WRONG**' if cand['correct'] is False else ''} |"
            )
        lines.append("")
    lines += ["#### Targets (issue 3)", "", "| target | measured | required | status | detail |"]
    lines.append("|---|---:|---|---|---|")
    for t in result["targets"]:
        measured = "—" if t["measured"] is None else f"{t['measured']:.3g}"
        lines.append(
            f"| {t['target']} | {measured} | {t['threshold']} | **{t['status']}** | {t['detail']} |"
        )
    lines.append("")
    return "\n".join(lines)


COLOURS = {
    "roofline": "#9e9e9e",
    "lucid_cf": "#0b4f9c",
    "lucid_cl": "#3d8fe0",
    "naive_cf": "#e08a3d",
    "naive_cl": "#f2bd85",
    "flax_cl": "#4caf50",
    "torch_cf": "#c0392b",
}


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per configuration: forward and forward+backward times in units of R."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    cols = min(3, len(configs))
    rows = math.ceil(len(configs) / cols)
    size = (max(5.6 * cols, 13.0), 4.4 * rows + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    handles: dict[str, Any] = {}
    for ax, c in zip(axes.flat, configs, strict=False):
        cands = [(k, v) for k, v in c["candidates"].items() if not v["reference"]]
        width = 0.84 / len(cands)
        values = [v[p]["ratio_R"] for _, v in cands for p in ("fwd", "fwd_bwd") if v[p]]
        # Bars beyond PLOT_CAP_R are cut (their value is printed inside).
        top = 1.12 * min(max([TARGET_FWD_BWD_R, *values]), PLOT_CAP_R) + 0.2
        for i, (key, cand) in enumerate(cands):
            for group, phase in enumerate(("fwd", "fwd_bwd")):
                if cand[phase] is None:
                    continue
                value = cand[phase]["ratio_R"]
                xpos = group - 0.42 + width * (i + 0.5)
                bar = ax.bar(
                    xpos,
                    value,
                    width * 0.92,
                    color=COLOURS.get(key, "#777777"),
                    edgecolor="black" if key.startswith("lucid") else "none",
                    linewidth=1.2,
                    label=f"{cand['label']} {cand['layout']}",
                )
                handles.setdefault(f"{cand['label']} {cand['layout']}", bar)
                if value > top:  # cut: print the value inside the bar, with an arrow
                    ax.text(
                        xpos,
                        0.98 * top,
                        f"{value:.1f}↑",
                        ha="center",
                        va="top",
                        fontsize=7,
                        rotation=90,
                        color="white",
                        fontweight="bold",
                    )
                else:
                    ax.text(xpos, value, f"{value:.2f}", ha="center", va="bottom", fontsize=6)
        ax.axhline(1.0, color="#555555", linewidth=0.8)
        ax.hlines(TARGET_FWD_R, -0.45, 0.45, colors="crimson", linestyles="--", linewidth=1.3)
        ax.hlines(TARGET_FWD_BWD_R, 0.55, 1.45, colors="crimson", linestyles="--", linewidth=1.3)
        ax.text(0.45, TARGET_FWD_R, f" {TARGET_FWD_R}R", color="crimson", fontsize=8, va="center")
        ax.text(
            1.45,
            TARGET_FWD_BWD_R,
            f" {TARGET_FWD_BWD_R}R",
            color="crimson",
            fontsize=8,
            va="center",
        )
        ax.set_xticks([0, 1], ["forward", "forward+backward"])
        ax.set_xlim(-0.5, 2.35)
        ax.set_ylabel("time / R (lower is better)")
        ax.set_ylim(0, top)
        temps = [
            f"{k}: {v['temp_fraction_fwd_bwd']:.2g}×"
            for k, v in cands
            if v["temp_fraction_fwd_bwd"] is not None
        ]
        ax.set_title(
            f"{c['title']}\nR = {_ms(c['R_s'])} ms, input {_bytes(c['input_bytes'])}", fontsize=10
        )
        ax.text(
            1.68,
            0.97 * top,
            "XLA temp of\nfwd+bwd / input\n" + "\n".join(temps),
            fontsize=7,
            va="top",
            family="monospace",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"},
        )
    for ax in list(axes.flat)[len(configs) :]:
        ax.axis("off")
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False
    )
    fig.suptitle(
        "lucid_jax.instance_norm on CPU: median time in units of R = jit(x*w+b); dashed: "
        f"issue targets for {ISSUE_SHAPE} float32\n{machine_line(result['machine'])}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Command line.


def _write(path: Path, text: str | bytes) -> None:
    """Write through a ``.tmp`` file so that a killed run leaves no half-written result."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def select_configs(configs: Sequence[Config], patterns: Sequence[str] | None) -> list[Config]:
    """Configurations named by ``patterns`` (``8x64x64x64`` selects every dtype of that shape,
    ``8x64x64x64-f32`` or ``8x64x64x64-bf16`` only one); all of them when ``patterns`` is empty.
    """
    if not patterns:
        return list(configs)
    wanted = {p.strip() for p in patterns if p.strip()}
    chosen = [c for c in configs if c.label in wanted or c.shape_label in wanted]
    if not chosen:
        known = ", ".join(c.label for c in configs)
        raise SystemExit(f"--shapes {','.join(patterns)} matches no configuration; known: {known}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Side-by-side CPU benchmark of lucid_jax.instance_norm (issue 3).",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, few rounds (smoke test)")
    p.add_argument("--rounds", type=int, default=None, help="rounds for every shape")
    p.add_argument(
        "--shapes",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated configurations, e.g. 16x128x128x128,8x64x64x64-bf16",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default {DEFAULT_OUT}; {DEFAULT_OUT}/quick with --quick)",
    )
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="REVISION",
        help="also time lucid_jax as it was at this git revision, in the same rounds",
    )
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be at least 1; got {args.rounds}")
    return args


def _import_torch(disabled: bool) -> tuple[Any, str | None]:
    if disabled:
        return None, "--no-torch"
    try:
        import torch
    except Exception as err:  # any import failure means "no torch"
        return None, f"not importable: {type(err).__name__}: {err}"
    torch.set_num_threads(usable_cores())
    return torch, None


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Benchmark every selected configuration; the result that bench.json holds."""
    torch, torch_note = _import_torch(args.no_torch)
    baseline_package = None
    if args.baseline:
        from benchmarks import baseline

        baseline_package = baseline.load(args.baseline)
        baseline_package.REVISION = args.baseline
    configs = select_configs(QUICK_CONFIGS if args.quick else FULL_CONFIGS, args.shapes)
    started = time.perf_counter()
    results = []
    for i, config in enumerate(configs, 1):
        if args.rounds is not None:
            rounds = args.rounds
        elif args.quick:
            rounds = QUICK_ROUNDS
        else:
            rounds = BIG_ROUNDS if config.input_bytes >= BIG_INPUT_BYTES else SMALL_ROUNDS
        log(f"[{i}/{len(configs)}] {config.title} ({_bytes(config.input_bytes)})")
        results.append(
            bench_config(
                config,
                rounds=rounds,
                min_sample_s=QUICK_MIN_SAMPLE_S if args.quick else MIN_SAMPLE_S,
                torch=torch,
                log=log,
                baseline=baseline_package,
            )
        )
        jax.clear_caches()
        gc.collect()
    has_bf16 = any(c.dtype == "bfloat16" for c in configs)
    probe = bf16_statistics_probe() if has_bf16 else None
    result = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "settings": {
            "quick": args.quick,
            "rounds": args.rounds,
            "eps": EPS,
            "min_sample_s": QUICK_MIN_SAMPLE_S if args.quick else MIN_SAMPLE_S,
            "baseline": args.baseline,
        },
        "machine": machine_info(torch, torch_note),
        "configs": results,
        "bf16_probe": probe,
        "elapsed_s": time.perf_counter() - started,
    }
    result["targets"] = evaluate_targets(results, probe)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and targets, write JSON, markdown and PNG."""
    args = parse_args(argv)
    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        result = run(args, log)
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(result)
    _write(out / "bench.json", json.dumps(result, indent=1) + "\n")
    _write(out / "bench.md", report)
    plot(result, out / "bench.png")
    print(report)
    log(
        f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'} "
        f"in {result['elapsed_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
