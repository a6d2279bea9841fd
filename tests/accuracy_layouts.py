"""Inputs on which a float32 instance norm can lose digits, shared by the tests and the report.

Each layout is ``(N, C, *S)`` float32 data (channels first) built from a seeded generator. The
first rows are the README's means (std 1); the others are laid out so that any cheap
per-instance estimate (a few leading elements, a first row, a first slice) misrepresents the
instance: the variance must come from the instance itself. ``benchmarks/accuracy.py`` prints
the error of every candidate on each; ``tests/test_numerics.py`` pins lucid-jax's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SHAPE = (4, 8, 32, 32)
MEANS = (0.0, 30.0, 1e2, 1e4, 1e5)


def _normal(mean: float, std: float, shape: tuple[int, ...] = SHAPE) -> Callable:
    return lambda rng: rng.normal(mean, std, shape)


def _zero_padded_border(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(1e4, 1.0, SHAPE)
    x[:, :, :4, :] = 0.0  # the first rows are padding
    return x


def _outlier_first(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(0.0, 1.0, SHAPE)
    x[:, :, 0, 0] = 1e6
    return x


def _ramp(rng: np.random.Generator) -> np.ndarray:
    del rng
    n = SHAPE[2] * SHAPE[3]
    return np.broadcast_to(np.linspace(1e4, 1e4 + 1, n).reshape(SHAPE[2:]), SHAPE).copy()


def _ct_volume(rng: np.random.Generator) -> np.ndarray:
    shape = (2, 2, 20, 32, 32)
    x = rng.normal(40.0, 10.0, shape)
    x[:, :, :18] = -1024.0  # 90 % air in the first slices, then tissue
    return x


def _bimodal(rng: np.random.Generator) -> np.ndarray:
    return rng.choice([-1e4, 1e4], SHAPE) + rng.normal(0.0, 1.0, SHAPE)


def _one_step(rng: np.random.Generator) -> np.ndarray:
    del rng
    x = np.full(SHAPE, 1e4)
    x[:, :, -1, -1] += 1.0  # all equal but one: a tiny variance far from zero
    return x


#: name -> (builder of float64 values, channel_axis of the float32 array it becomes)
LAYOUTS: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], int]] = {
    **{f"mean {m:g}, std 1": (_normal(m, 1.0), 1) for m in MEANS},
    "mean -3e4, std 1, channels last": (
        lambda rng: np.moveaxis(rng.normal(-3e4, 1.0, SHAPE), 1, -1),
        -1,
    ),
    "zero-padded border (rows 0, rest 1e4)": (_zero_padded_border, 1),
    "one outlier (1e6) at the first element": (_outlier_first, 1),
    "ramp 1e4 … 1e4+1": (_ramp, 1),
    "CT-like volume (90 % -1024, tissue 40±10)": (_ct_volume, 1),
    "mean 300, std 0.01": (_normal(300.0, 0.01), 1),
    "two clusters ±1e4": (_bimodal, 1),
    "constant 1e4 but one element 1e4+1": (_one_step, 1),
}


def layout(name: str, seed: int = 0) -> tuple[np.ndarray, int]:
    """The float32 data of layout ``name`` and its channel axis."""
    build, channel_axis = LAYOUTS[name]
    return build(np.random.default_rng(seed)).astype(np.float32), channel_axis


def relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    """``max |y - y64| / max(1, |y64|)``: the issue's per-element error of the output."""
    y = np.asarray(y, np.float64)
    return float(np.max(np.abs(y - reference) / np.maximum(1.0, np.abs(reference))))
