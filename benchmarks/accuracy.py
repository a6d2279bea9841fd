"""Accuracy of instance norm in float32 against a float64 reference, side by side.

Run ``python -m benchmarks.accuracy`` (or ``make accuracy``). For float32 inputs of std 1 and
a range of means, it prints the largest absolute error of the output, and of the gradient
``x̄`` of ``sum(y * g)`` relative to its largest entry, for lucid_jax, PyTorch's CPU kernel
(when installed) and ``flax.linen.InstanceNorm`` (its default fast variance and the two-pass
one). The reference is float64 arithmetic on the same float32 values, so input rounding does
not count as error. Not a test: ``tests/test_numerics.py`` pins lucid_jax's bounds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import lucid_jax

SHAPE = (4, 8, 32, 32)
MEANS = (0.0, 30.0, 1e2, 1e4, 1e5)
EPS = 1e-5


def _reference(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 output and input gradient of sum(y * g), by jax autodiff in float64."""

    def f(x):
        mean = x.mean(axis=(2, 3), keepdims=True)
        var = x.var(axis=(2, 3), keepdims=True)
        return (x - mean) / jnp.sqrt(var + EPS)

    with jax.enable_x64(True):
        y, pullback = jax.vjp(f, jnp.asarray(x, jnp.float64))
        (dx,) = pullback(jnp.asarray(g, jnp.float64))
        return np.asarray(y), np.asarray(dx)


def _jax_candidate(f: Callable[[jax.Array], jax.Array]):
    def run(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, pullback = jax.vjp(f, jnp.asarray(x))
        (dx,) = pullback(jnp.asarray(g))
        return np.asarray(y, np.float64), np.asarray(dx, np.float64)

    return run


def candidates(with_torch: bool) -> dict[str, Callable]:
    """name -> function (x, g) -> (y, dx), all channels first."""
    out = {"lucid_jax": _jax_candidate(lambda x: lucid_jax.instance_norm(x, eps=EPS).output)}
    if with_torch:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:

            def run_torch(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                xt = torch.from_numpy(x).requires_grad_()
                yt = torch.nn.functional.instance_norm(xt, eps=EPS)
                (dx,) = torch.autograd.grad(yt, xt, torch.from_numpy(g))
                return yt.detach().numpy().astype(np.float64), dx.numpy().astype(np.float64)

            out["torch CPU"] = run_torch
    try:
        import flax.linen as nn
    except ImportError:
        return out
    for name, fast in (("flax (default, fast variance)", True), ("flax two-pass", False)):
        module = nn.InstanceNorm(
            epsilon=EPS, use_scale=False, use_bias=False, use_fast_variance=fast
        )

        def f(x, module=module):
            return jnp.moveaxis(module.apply({}, jnp.moveaxis(x, 1, -1)), -1, 1)

        out[name] = _jax_candidate(f)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    cands = candidates(with_torch=not args.no_torch)
    print(f"float32 input {SHAPE}, std 1; max |y - y64| and max |dx - dx64| / max |dx64|\n")
    print("| mean | " + " | ".join(f"{n} y | {n} dx" for n in cands) + " |")
    print("|---:|" + "---:|---:|" * len(cands))
    for mean in MEANS:
        x = rng.normal(mean, 1.0, SHAPE).astype(np.float32)
        g = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
        y64, dx64 = _reference(x, g)
        cells = []
        for run in cands.values():
            y, dx = run(x, g)
            cells.append(f"{np.max(np.abs(y - y64)):.2g}")
            cells.append(f"{np.max(np.abs(dx - dx64)) / np.max(np.abs(dx64)):.2g}")
        print(f"| {mean:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
