"""What the sharding tests share: meshes, inputs, float64 references and the HLO criterion.

The tests run in-process on the host (CPU) devices that ``conftest.py`` asks JAX for before
its backend starts. They build their meshes from ``jax.devices("cpu")``, so that a GPU or TPU
machine, whose default backend has other devices, runs the same checks on its CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pytest
from conftest import HOST_DEVICE_COUNT, reference_instance_norm
from jax.sharding import AxisType, Mesh

from lucid_jax import instance_norm

N, C, D, H, W = 8, 16, 16, 8, 8
MOMENTUM, EPS = 0.1, 1e-5
#: float32 everywhere: a sharded reduction only reorders sums (relative error ~1e-7).
TOL_SINGLE_DEVICE = 1e-5
TOL_FLOAT64 = 2e-5
#: Every collective together moves less than this fraction of the activation's elements.
MAX_COMMUNICATED_FRACTION = 0.01

#: layout -> (channel_axis, input shape)
LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "ncdhw": (1, (N, C, D, H, W)),
    "ndhwc": (-1, (N, D, H, W, C)),
}


def host_devices() -> list[jax.Device]:
    """The 8 host devices, or a failure that says how the test process lost them."""
    devices = jax.devices("cpu")
    if len(devices) < HOST_DEVICE_COUNT:
        pytest.fail(
            f"the sharding tests need {HOST_DEVICE_COUNT} host devices, jax has {len(devices)}: "
            "conftest.py sets jax_num_cpu_devices, which only works before JAX's backend starts "
            "(was a JAX operation run while pytest loaded its plugins?)"
        )
    return devices[:HOST_DEVICE_COUNT]


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...], mode: str = "auto") -> Mesh:
    """A mesh of host devices; ``mode``: ``auto`` (``Mesh``'s default) or ``explicit``."""
    axis_type = AxisType.Explicit if mode == "explicit" else AxisType.Auto
    devices = np.array(host_devices()[: int(np.prod(shape))]).reshape(shape)
    return Mesh(devices, names, axis_types=(axis_type,) * len(names))


def make_inputs(
    shape: tuple[int, ...], channel_axis: int, seed: int = 0, centred: bool = False
) -> dict[str, np.ndarray]:
    """``x, rm, rv, w, b`` and a cotangent ``g``, float32.

    Offset and scale differ per instance, so instance statistics matter; ``centred`` drops the
    offsets (instance means of about 3 ± 2 against a std of 0.5 to 2 otherwise), so that a core
    that picks its algorithm from how well conditioned the data are is checked both ways.
    """
    rng = np.random.default_rng(seed)
    channels = shape[channel_axis]
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


def float64_reference(
    inputs: dict[str, np.ndarray], channel_axis: int, training: bool = True
) -> dict[str, np.ndarray]:
    """``y, rm, rv`` and, for training, the pullback of ``g``: ``dx, dw, db``, in float64."""
    x, w, g = (np.asarray(inputs[k], np.float64) for k in ("x", "w", "g"))
    y, rm, rv = reference_instance_norm(
        x, inputs["rm"], inputs["rv"], w, inputs["b"], training, MOMENTUM, EPS, channel_axis
    )
    result = {"y": y, "rm": rm, "rv": rv}
    if not training:
        return result
    x, gy = np.moveaxis(x, channel_axis, 1), np.moveaxis(g, channel_axis, 1)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + EPS)
    xhat = (x - mean) * inv_std
    gxhat = gy * w.reshape((1, -1) + (1,) * len(axes))
    dx = inv_std * (
        gxhat
        - gxhat.mean(axis=axes, keepdims=True)
        - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)
    )
    result["dx"] = np.moveaxis(dx, 1, channel_axis)
    result["dw"] = (gy * xhat).sum(axis=(0, *axes))
    result["db"] = gy.sum(axis=(0, *axes))
    return result


def rel_err(actual: Any, expected: Any) -> float:
    """``max|a - e| / max(max|e|, 1e-12)`` in float64; infinite when the shapes differ."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return float("inf")
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-12))


def functions(channel_axis: int) -> dict[str, Callable[..., dict[str, jax.Array]]]:
    """``train``, ``eval`` and ``vjp``, each ``f(x, rm, rv, w, b, g) -> {name: array}``."""

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


# --- what may cross devices -------------------------------------------------------------------


def describe(collectives: list[dict[str, Any]]) -> str:
    """One readable line (and the HLO instruction) per collective, for failure messages."""
    if not collectives:
        return "  (none)"
    lines = []
    for c in collectives:
        shapes = ", ".join(f"{a['dtype']}{a['shape']}" for a in c["results"])
        operands = ", ".join(f"{a['dtype']}{a['shape']}" for a in c["operands"])
        lines.append(f"  {c['op']} %{c['name']}: result ({shapes}) <- operands ({operands})")
        lines.append(f"      {c['line'][:200]}")
    return "\n".join(lines)


def largest_array(collective: dict[str, Any]) -> int:
    """The element count of the biggest array a collective takes or returns."""
    return max(a["elements"] for a in collective["results"] + collective["operands"])


def oversized(collectives: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The collectives that take or return an array of more than ``limit`` elements."""
    return [c for c in collectives if largest_array(c) > limit]


def assert_only_statistics_cross_devices(
    label: str, collectives: list[dict[str, Any]], instance_elements: int, activation_elements: int
) -> None:
    """No collective moves more than the per-instance statistics, nor 1% of the activation."""
    too_big = oversized(collectives, instance_elements)
    assert not too_big, (
        f"{label}: collectives bigger than the per-instance statistics (N*C = "
        f"{instance_elements} elements; the activation has {activation_elements}). A sharded "
        f"input must never be gathered; only reductions of per-instance statistics may cross "
        f"devices. Offending:\n{describe(too_big)}\nAll collectives:\n{describe(collectives)}"
    )
    total = sum(a["elements"] for c in collectives for a in c["results"])
    assert total <= MAX_COMMUNICATED_FRACTION * activation_elements, (
        f"{label}: collectives return {total} elements per device in all, more than "
        f"{MAX_COMMUNICATED_FRACTION:.0%} of the activation's {activation_elements}:\n"
        f"{describe(collectives)}"
    )
