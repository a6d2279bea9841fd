"""The functions being compared, each as ``f(x, w, b) -> y`` with per-channel ``w``, ``b``.

The naive ``jnp`` function computes means and variances itself on purpose: it is a competitor
being measured (and the correctness reference), not part of the library, whose maths lives in
``lucid_jax._core``. PyTorch is imported lazily, by the caller, and only where it runs on the
same kind of device as JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lucid_jax
from benchmarks._harness import Candidate, jax_candidate
from benchmarks._report import usable_cores

EPS = 1e-5


def _per_channel(v: jax.Array, ndim: int, channel_axis: int) -> jax.Array:
    shape = [1] * ndim
    shape[channel_axis] = v.shape[0]
    return v.reshape(shape)


def roofline_fn(channel_axis: int) -> Callable[..., jax.Array]:
    """``x * w + b``: one read of ``x``, one write of the output: the copy roofline ``R``."""

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return x * _per_channel(w, x.ndim, channel_axis) + _per_channel(b, x.ndim, channel_axis)

    return f


def roofline_candidate(args: tuple[jax.Array, jax.Array, jax.Array]) -> Candidate:
    """R on channels-first ``(x, w, b)``: the first candidate of every configuration."""
    return jax_candidate("roofline", "roofline R = jit(x*w+b)", "NC...", roofline_fn(1), args, None)


def naive_fn(channel_axis: int) -> Callable[..., jax.Array]:
    """``(x - mean) / sqrt(var + eps) * w + b`` with ``jnp.mean`` and ``jnp.var``."""

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
    """``package.instance_norm(x, weight=w, bias=b, channel_axis=..., **options).output``;
    ``package`` is ``lucid_jax`` or its copy at another revision (``benchmarks.baseline``)."""

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return package.instance_norm(
            x, weight=w, bias=b, eps=EPS, channel_axis=channel_axis, **options
        )[0]

    return f


def lucid_vmap_fn() -> Callable[..., jax.Array]:
    """``jax.vmap`` over the batch of the single-sample call ``instance_norm(x[i][None])[0]``."""
    single = lucid_fn(1)

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return jax.vmap(lambda sample: single(sample[None], w, b)[0])(x)

    return f


def flax_fn() -> Callable[..., jax.Array]:
    """``flax.linen.InstanceNorm`` (channels last, default ``use_fast_variance``) with params."""
    import flax.linen as nn

    module = nn.InstanceNorm(epsilon=EPS)

    def f(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
        return module.apply({"params": {"scale": w, "bias": b}}, x)

    return f


def import_torch(disabled: bool) -> tuple[Any, str, str | None]:
    """``(torch or None, its device, why it is left out)``: PyTorch runs on the CPU when JAX
    does, on CUDA when JAX is on a GPU and PyTorch sees one, and not at all otherwise."""
    if disabled:
        return None, "", "--no-torch"
    try:
        import torch
    except Exception as err:  # any import failure means "no torch"
        return None, "", f"not importable: {type(err).__name__}: {err}"
    backend = jax.default_backend()
    if backend == "cpu":
        torch.set_num_threads(usable_cores())
        return torch, "cpu", None
    if backend == "gpu" and torch.cuda.is_available():
        return torch, "cuda", None
    return None, "", f"JAX runs on {backend}, where this PyTorch cannot"


def torch_candidate(torch: Any, device: str, host: dict[str, np.ndarray]) -> Candidate:
    """``torch.nn.functional.instance_norm`` on ``device``, channels first, float32: forward
    under ``torch.no_grad``, forward+backward with ``torch.autograd.grad``."""
    functional = torch.nn.functional
    x, w, b, g = (torch.from_numpy(host[k]).to(device) for k in ("x", "w", "b", "g"))
    x_grad, w_grad, b_grad = (t.detach().clone().requires_grad_(True) for t in (x, w, b))

    def fwd() -> Any:
        with torch.no_grad():
            return functional.instance_norm(x, weight=w, bias=b, eps=EPS)

    def fwd_bwd() -> Any:
        y = functional.instance_norm(x_grad, weight=w_grad, bias=b_grad, eps=EPS)
        return y.detach(), torch.autograd.grad(y, (x_grad, w_grad, b_grad), g)

    def sync(out: Any) -> Any:
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    threads = f"{torch.get_num_threads()} threads" if device == "cpu" else "CUDA"
    return Candidate(
        key="torch_cf",
        label=f"torch F.instance_norm ({threads})",
        framework="torch",
        layout="NC...",
        dtype="float32",
        input_bytes=int(host["x"].nbytes),
        fwd=fwd,
        fwd_bwd=fwd_bwd,
        sync=sync,
    )
