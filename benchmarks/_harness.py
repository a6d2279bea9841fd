"""Timing harness: candidates checked, then timed in interleaved rounds against the roofline R.

Instance norm is memory-bound, so every time is reported as a ratio to ``R``, a jitted
``x * w + b`` (one read, one write: the least an instance norm can do) that is always the first
candidate and is timed in the same rounds as the others. For one configuration,
``measure``

1. warms every candidate up and compares its output and gradients with the reference (a
   broken candidate must not pass for a fast one);
2. picks the calls per sample with ``timeit.Timer.autorange`` on ``R``, so that an ``R``
   sample lasts at least ``min_sample_s`` (the same count for every candidate);
3. times rounds in which every candidate runs once, in an order rotated from round to round,
   forward first, then forward+backward; each call is followed by its ``sync`` (JAX's
   ``block_until_ready``), and ``timeit`` turns the garbage collector off while it times;
4. summarises each candidate by the median, quartiles and minimum of its samples, and its
   ``ratio_R``: the median over rounds of (its sample / R's sample of the same round).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: Relative error (max |a - ref| / max |ref|) above which a candidate is marked wrong.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
#: Upper bound on the calls per sample (tiny shapes on a fast device).
MAX_CALLS_PER_SAMPLE = 1000
PHASES = ("fwd", "fwd_bwd")
#: The clock every timing reads (a module attribute, so that a test can drive a fake one).
CLOCK = time.perf_counter


@dataclasses.dataclass
class Candidate:
    """Something timed: zero-argument calls that run it once and return its outputs."""

    key: str
    label: str
    framework: str  # "jax" or "torch"
    layout: str  # "NC..." (channels first) or "N...C" (channels last)
    dtype: str
    input_bytes: int
    fwd: Callable[[], Any]
    fwd_bwd: Callable[[], Any] | None
    sync: Callable[[Any], Any] = jax.block_until_ready
    #: Timed for a comparison (e.g. float32 beside a bf16 configuration), not plotted.
    reference: bool = False
    temp_bytes_fwd: int | None = None
    temp_bytes_fwd_bwd: int | None = None
    errors: dict[str, float] = dataclasses.field(default_factory=dict)


def vjp_fn(f: Callable[..., jax.Array]) -> Callable[..., Any]:
    """Forward and pullback of ``f`` with respect to ``(x, w, b)``, for one jit; the
    cotangent ``g`` is an argument, so that XLA cannot fold it in as a constant."""

    def fwd_bwd(x: jax.Array, w: jax.Array, b: jax.Array, g: jax.Array) -> Any:
        y, pullback = jax.vjp(f, x, w, b)
        return y, pullback(g)

    return fwd_bwd


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
    """``jax.jit`` of ``f(*args)`` and, when a cotangent ``g`` is given, of its forward and
    pullback together, with XLA's compiled temporary memory of each."""
    fwd = jax.jit(f)
    candidate = Candidate(
        key=key,
        label=label,
        framework="jax",
        layout=layout,
        dtype=str(args[0].dtype),
        input_bytes=int(args[0].size * args[0].dtype.itemsize),
        fwd=functools.partial(fwd, *args),
        fwd_bwd=None,
        reference=reference,
        temp_bytes_fwd=_temp_bytes(fwd, args),
    )
    if g is not None:
        fwd_bwd = jax.jit(vjp_fn(f))
        candidate.fwd_bwd = functools.partial(fwd_bwd, *args, g)
        candidate.temp_bytes_fwd_bwd = _temp_bytes(fwd_bwd, (*args, g))
    return candidate


def _relative_error(value: Any, reference: jax.Array) -> float:
    if hasattr(value, "detach"):  # a torch tensor, on whatever device
        value = value.detach().cpu().numpy()
    value = jnp.asarray(value, jnp.float32)
    scale = max(float(jnp.max(jnp.abs(reference))), float(np.finfo(np.float32).tiny))
    return float(jnp.max(jnp.abs(value - reference))) / scale


def check(candidate: Candidate, reference: dict[str, jax.Array]) -> None:
    """Run ``candidate`` once per phase and store its errors against ``reference`` (channels
    first: ``y``, ``dx``, ``dw``, ``db``)."""
    if candidate.layout == "N...C":
        reference = {
            k: jnp.moveaxis(v, 1, -1) if k in ("y", "dx") else v for k, v in reference.items()
        }
    candidate.errors["y"] = _relative_error(candidate.sync(candidate.fwd()), reference["y"])
    if candidate.fwd_bwd is not None:
        y, grads = candidate.sync(candidate.fwd_bwd())
        candidate.errors["fwd_bwd.y"] = _relative_error(y, reference["y"])
        for name, grad in zip(("dx", "dw", "db"), grads, strict=True):
            candidate.errors[name] = _relative_error(grad, reference[name])


def _timer(run: Callable[[], Any], sync: Callable[[Any], Any]) -> timeit.Timer:
    return timeit.Timer(lambda: sync(run()), timer=CLOCK)


def calls_per_sample(roofline: Candidate, min_sample_s: float) -> int:
    """Calls per sample such that a sample of ``R`` lasts at least ``min_sample_s``."""
    number, seconds = _timer(roofline.fwd, roofline.sync).autorange()
    per_call = seconds / number
    return max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_s / per_call)))


def run_rounds(
    candidates: Sequence[Candidate], rounds: int, calls: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per call, one sample per candidate, phase and round, in rotated order."""
    times = {c.key: {phase: [] for phase in PHASES} for c in candidates}
    timers = {
        (c.key, phase): _timer(run, c.sync)
        for c in candidates
        for phase, run in (("fwd", c.fwd), ("fwd_bwd", c.fwd_bwd))
        if run is not None
    }
    for round_ in range(rounds):
        shift = round_ % len(candidates)
        order = [*candidates[shift:], *candidates[:shift]]
        for phase in PHASES:
            for c in order:
                timer = timers.get((c.key, phase))
                if timer is not None:
                    times[c.key][phase].append(timer.timeit(calls) / calls)
    return times


def summarise(samples: list[float], roofline_samples: list[float]) -> dict[str, Any] | None:
    """Median, quartiles and minimum of ``samples``; ``ratio_R``: the median of the ratios to
    the roofline's samples of the same rounds, with their quartiles."""
    if not samples:
        return None
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    ratios = np.asarray(samples) / np.asarray(roofline_samples)
    r25, ratio, r75 = np.percentile(ratios, [25, 50, 75])
    return {
        "median_s": float(median),
        "q25_s": float(q25),
        "q75_s": float(q75),
        "min_s": min(samples),
        "ratio_R": float(ratio),
        "ratio_R_q25": float(r25),
        "ratio_R_q75": float(r75),
        "times_s": samples,
    }


def measure(
    candidates: Sequence[Candidate],
    reference: dict[str, jax.Array],
    *,
    rounds: int,
    min_sample_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Check, then time ``candidates`` (the roofline ``R`` first) as the module says; what
    the JSON holds for one configuration, less the configuration's own fields."""
    roofline = candidates[0]
    if not roofline.key.startswith("roofline"):
        raise ValueError(f"the first candidate must be the roofline R; got {roofline.key!r}")
    for c in candidates:
        if c.key.startswith("roofline"):
            c.sync(c.fwd())  # not an instance norm: nothing to check
        else:
            check(c, reference)
            worst = max(c.errors.values())
            if not worst <= TOLERANCE[c.dtype]:
                log(f"    WRONG: {c.key} differs from the reference: {c.errors}")
    for c in candidates:  # a second warm-up: first-call effects past compilation
        for run in (c.fwd, c.fwd_bwd):
            if run is not None:
                c.sync(run())
    calls = calls_per_sample(roofline, min_sample_s)
    log(f"    timing {len(candidates)} candidates: {rounds} rounds x {calls} call(s)")
    times = run_rounds(candidates, rounds, calls)
    r_samples = times[roofline.key]["fwd"]
    summary = {}
    for c in candidates:
        temp = c.temp_bytes_fwd_bwd
        summary[c.key] = {
            "label": c.label,
            "framework": c.framework,
            "layout": c.layout,
            "dtype": c.dtype,
            "reference": c.reference,
            "input_bytes": c.input_bytes,
            "fwd": summarise(times[c.key]["fwd"], r_samples),
            "fwd_bwd": summarise(times[c.key]["fwd_bwd"], r_samples),
            "temp_bytes_fwd": c.temp_bytes_fwd,
            "temp_bytes_fwd_bwd": temp,
            "temp_fraction_fwd_bwd": None if temp is None else temp / c.input_bytes,
            "max_rel_err": dict(c.errors),
            "correct": None if not c.errors else max(c.errors.values()) <= TOLERANCE[c.dtype],
        }
    return {
        "rounds": rounds,
        "calls_per_sample": calls,
        "R_s": float(np.median(r_samples)),
        "candidates": summary,
    }
