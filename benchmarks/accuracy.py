"""Accuracy of instance norm in float32 against a float64 reference, side by side.

Run ``python -m benchmarks.accuracy`` (or ``make accuracy``). For every float32 layout of
``tests/accuracy_layouts.py`` (the README's means, std 1, and layouts where a cheap
per-instance estimate of the mean misleads) it prints, for lucid_jax (both variance methods),
PyTorch's CPU kernel (when installed) and ``flax.linen.InstanceNorm`` (its default fast
variance and the two-pass one):

* ``y``: the output's error, ``max |y - y64| / max(1, |y64|)`` over its elements;
* ``dx``: the error of the input gradient of ``sum(y * g)``, relative to its largest entry.

The reference is float64 arithmetic on the same float32 values, so input rounding does not
count as error. Not a test: ``tests/test_numerics.py`` pins lucid_jax's bounds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lucid_jax
from tests.accuracy_layouts import LAYOUTS, layout, relative_error

EPS = 1e-5

#: (x, g, channel_axis) -> (y, dx), float64 numpy
Candidate = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _channels_first(f: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``f`` on channels-first data, applied to data with channels on ``channel_axis``."""
    return lambda x, channel_axis: jnp.moveaxis(
        f(jnp.moveaxis(x, channel_axis, 1)), 1, channel_axis
    )


def _vjp(f: Callable[..., jax.Array]) -> Candidate:
    def run(x: np.ndarray, g: np.ndarray, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
        y, pullback = jax.vjp(lambda x: f(x, channel_axis), jnp.asarray(x))
        (dx,) = pullback(jnp.asarray(g, y.dtype))
        return np.asarray(y, np.float64), np.asarray(dx, np.float64)

    return run


def _reference(x: np.ndarray, g: np.ndarray, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 output and input gradient (the textbook formulas, in numpy: no JAX involved).

    With `r = (var + eps)^{-1/2}` and `x̂ = (x - mean) r`: `dx = r (g - mean(g) - x̂ mean(g x̂))`.
    """
    x, g = x.astype(np.float64), g.astype(np.float64)
    axes = tuple(a for a in range(1, x.ndim) if a != channel_axis % x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + EPS)
    normalized = (x - mean) * inv_std
    dx = inv_std * (
        g
        - g.mean(axis=axes, keepdims=True)
        - normalized * (g * normalized).mean(axis=axes, keepdims=True)
    )
    return normalized, dx


def candidates(with_torch: bool) -> dict[str, Candidate]:
    """name -> (x, g, channel_axis) -> (y, dx)."""
    out: dict[str, Candidate] = {}
    for method in ("two_pass", "one_pass"):
        out[f"lucid_jax {method}"] = _vjp(
            lambda x, channel_axis, method=method: (
                lucid_jax.instance_norm(
                    x, eps=EPS, channel_axis=channel_axis, variance_method=method
                ).output
            )
        )
    if with_torch:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:

            def run_torch(x: np.ndarray, g: np.ndarray, channel_axis: int):
                xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, channel_axis, 1)))
                xt.requires_grad_()
                yt = torch.nn.functional.instance_norm(xt, eps=EPS)
                gt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, channel_axis, 1)))
                (dx,) = torch.autograd.grad(yt, xt, gt)
                y, dx = (np.moveaxis(a.detach().numpy(), 1, channel_axis) for a in (yt, dx))
                return y.astype(np.float64), dx.astype(np.float64)

            out["PyTorch CPU"] = run_torch
    try:
        import flax.linen as nn
    except ImportError:
        return out
    for name, fast in (("Flax default", True), ("Flax two-pass", False)):
        module = nn.InstanceNorm(
            epsilon=EPS, use_scale=False, use_bias=False, use_fast_variance=fast
        )

        def f(x, channel_axis, module=module):
            return jnp.moveaxis(
                module.apply({}, jnp.moveaxis(x, channel_axis, -1)), -1, channel_axis
            )

        out[name] = _vjp(f)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    cands = candidates(with_torch=not args.no_torch)
    versions = [f"jax {jax.__version__}", f"XLA backend {jax.default_backend()}"]
    for name in ("torch", "flax"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    lines = [
        "float32; y: max |y - y64| / max(1, |y64|); dx: max |dx - dx64| / max |dx64| "
        "(float64 arithmetic on the same float32 values)",
        "",
        ", ".join(versions),
        "",
        "| layout | " + " | ".join(f"{n} y | {n} dx" for n in cands) + " |",
        "|---|" + "---:|---:|" * len(cands),
    ]
    for name in LAYOUTS:
        x, channel_axis = layout(name)
        g = np.random.default_rng(1).normal(0.0, 1.0, x.shape).astype(np.float32)
        y64, dx64 = _reference(x, g, channel_axis)
        cells = []
        for run in cands.values():
            y, dx = run(x, g, channel_axis)
            cells.append(f"{relative_error(y, y64):.2g}")
            cells.append(f"{np.max(np.abs(dx - dx64)) / np.max(np.abs(dx64)):.2g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
