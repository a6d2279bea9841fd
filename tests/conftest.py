"""Shared test helpers: the Lucid 2.14.5 recordings and a float64 numpy reference.

Loading this file also gives the test process 8 host (CPU) devices, in-process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jaxlib.version
import numpy as np
import pytest
from hypothesis import settings

#: Host devices of every test process (pytest-xdist workers too: each loads this file before
#: collecting a test module), so that the sharding tests build 8-device meshes in-process. JAX
#: reads it when its CPU backend starts, at the first JAX operation; nothing has run one yet
#: (this raises if something has, rather than leaving 1 device).
HOST_DEVICE_COUNT = 8
jax.config.update("jax_num_cpu_devices", HOST_DEVICE_COUNT)


#: `make test` compiles with XLA:CPU's elemental emitters (`LUCID_JAX_TEST_FAST_COMPILE=1`):
#: compiling is most of the suite's time, and these take about half as long as XLA's default,
#: the MLIR fusion emitters (the suite's user CPU: 186 s against 279 s, one run each, jax
#: 0.10.2). Only code generation changes. On 16 programs of `instance_norm` (forward and
#: backward, four layouts, both variance methods) the HLO after XLA's passes was the same but
#: for lone elementwise operations not wrapped in fusions of their own, the reductions the same
#: YNNPACK fusions; the accuracy table (`make accuracy`) was the same to its printed digits;
#: the two-pass outputs on its layouts differed in the last bit (at most 2.4e-7). The claims
#: about the numbers users' XLA computes (modules marked `default_codegen`) are refused in such
#: a process, with a reason; `make test` runs them beside, in a process of XLA's default.
#: XLA reads XLA_FLAGS when its CPU backend starts (nothing has started it yet). jaxlib 0.12
#: removed the flag (an unknown flag aborts the process): from there on the suite compiles as
#: XLA's default whatever `make test` asks.
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
_FLAG_REMOVED_IN = (0, 12)
FAST_COMPILE = (
    os.environ.get("LUCID_JAX_TEST_FAST_COMPILE") == "1"
    and jaxlib.version.__version_info__ < _FLAG_REMOVED_IN
)
if FAST_COMPILE and FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()

if not hasattr(jax, "enable_x64"):
    # jax 0.7 and older (down to the floor, `make test-oldest`) have the same context manager
    # only as jax.experimental.enable_x64; jax 0.8 made it public. The tests use the public name.
    from jax.experimental import enable_x64

    jax.enable_x64 = enable_x64

if not hasattr(jax, "set_mesh"):
    # jax 0.6 (the oldest supported) names the context manager that makes a mesh current, for
    # explicit sharding, jax.sharding.use_mesh; jax 0.7 added jax.set_mesh, which the tests use.
    jax.set_mesh = jax.sharding.use_mesh

DATA = Path(__file__).parent / "data"
FIXTURE = "lucid_2_14_5_instance_norm"
#: The recording scripts under data/ need the real Lucid, and real_models/ holds copied Flax
#: code and a report script that runs on import: pytest collects nothing there.
collect_ignore_glob = ["data/*.py", "real_models/*.py"]
#: The repository's root: the source tree in a clone, an unpacked sdist in `make test-wheel`.
ROOT = Path(__file__).resolve().parent.parent


def skip_without_source_tree(*parts: str) -> None:
    """Skip the calling test module when a part of the source tree is absent.

    The sdist carries ``tests/`` but not the notebooks or benchmarks; ``make test-wheel`` runs
    the suite from it against the installed wheel, where these modules have nothing to test.
    """
    missing = [part for part in parts if not (ROOT / part).exists()]
    if missing:
        pytest.skip(
            f"needs the source tree ({', '.join(missing)} not found under {ROOT}): "
            "run from a clone of the repository",
            allow_module_level=True,
        )


def _load():
    cases = json.loads((DATA / f"{FIXTURE}.json").read_text())["cases"]
    with np.load(DATA / f"{FIXTURE}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    for case in cases:
        prefix = case["key"] + "/"
        case["arrays"] = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return cases


LUCID_CASES = _load()
FUNCTIONAL_CASES = [c for c in LUCID_CASES if c["kind"] == "functional"]
MODULE_CASES = [c for c in LUCID_CASES if c["kind"] == "module"]


def case_id(case: dict) -> str:
    if case["kind"] == "module":
        return f"{case['key']}-{case['module']}-{'x'.join(map(str, case['shape']))}"
    return (
        f"{case['key']}-{'x'.join(map(str, case['shape']))}-{case['stats']}-"
        f"{'train' if case['training'] else 'eval'}"
    )


def reference_instance_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    training=True,
    momentum=0.1,
    eps=1e-5,
    channel_axis=1,
):
    """Independent float64 numpy implementation of Lucid's semantics."""
    x = np.moveaxis(np.asarray(x, np.float64), channel_axis, 1)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training or running_mean is None:
        y = (x - mean) / np.sqrt(var + eps)
    else:
        rm = np.asarray(running_mean, np.float64).reshape(bshape)
        rv = np.asarray(running_var, np.float64).reshape(bshape)
        y = (x - rm) / np.sqrt(rv + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(bshape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(bshape)
    new_mean, new_var = running_mean, running_var
    if training and running_mean is not None:
        flat_mean = mean.reshape(x.shape[0], x.shape[1]).mean(axis=0)
        flat_var = var.reshape(x.shape[0], x.shape[1]).mean(axis=0)
        new_mean = momentum * flat_mean + (1 - momentum) * np.asarray(running_mean, np.float64)
        new_var = momentum * flat_var + (1 - momentum) * np.asarray(running_var, np.float64)
    return np.moveaxis(y, 1, channel_axis), new_mean, new_var


def channels_last_data(rng, shape=(4, 5, 6, 3), dtype=np.float32):
    """Channels-last input with non-trivial statistics: ``(x, scale, bias, mean, var)``, made
    as `host_array` makes arrays."""
    c = shape[-1]
    return (
        host_array(rng.normal(2.0, 3.0, shape), dtype),
        host_array(rng.normal(1.0, 0.5, c), dtype),  # scale
        host_array(rng.normal(0.0, 0.5, c), dtype),  # bias
        host_array(rng.normal(0.0, 1.0, c), dtype),  # running mean
        host_array(rng.uniform(0.5, 2.0, c), dtype),  # running var
    )


def reference_channels_last(x, *args, **kwargs):
    """:func:`reference_instance_norm` on channels-last data."""
    return reference_instance_norm(x, *args, channel_axis=-1, **kwargs)


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a Markdown text, in order, dedented (content tabs)."""
    blocks = []
    for indent, body in re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S):
        lines = [line.removeprefix(indent) for line in body.splitlines()]
        blocks.append("\n".join(lines))
    return blocks


def run_python(*args: str, cwd, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python *args` in a fresh interpreter; fails the test with its output unless it succeeds."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"python {' '.join(args)[:200]} failed\nstdout:\n{result.stdout[-2000:]}\n"
        f"stderr:\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def host_array(values: object, dtype: object = np.float32) -> jax.Array:
    """`jnp.asarray(values, dtype)`, made in numpy and transferred: `jnp.asarray` and the `jnp`
    constructors compile a program per shape and dtype (a cast; from jax 0.10 also an
    identity), and at import (parametrize lists, module constants) they do so in every process
    that collects the module."""
    return jax.device_put(np.asarray(values, dtype))


def host_ones(shape: tuple[int, ...], dtype: object = np.float32) -> jax.Array:
    """`jnp.ones(shape, dtype)`, made as `host_array` makes arrays."""
    return host_array(np.ones(shape), dtype)


def jitted(fn, /, **static_kwargs):
    """`fn` with `static_kwargs` bound, as one jitted program: for a reference computed by Flax
    (`module.init`, `module.apply`, a loss or gradient through Flax's layer).

    Run eagerly, JAX compiles each operation separately for each new shape: Flax's
    `InstanceNorm` some 12 tiny programs per input shape, its default initialisers a threefry
    program per parameter shape (0.3-1.5 s each on XLA:CPU); jitted, one program. Initial
    values are the same bit for bit; outputs may differ from the eager ones in the last bits
    (XLA fuses, so rounds, differently), which the tests' tolerances allow.
    """
    return jax.jit(functools.partial(fn, **static_kwargs))


@functools.cache
def _nnx_jitted_call():
    from flax import nnx

    return nnx.jit(lambda module, *args: module(*args))


def nnx_jitted_call(module, *args):
    """`module(*args)` for a Flax nnx module, as one jitted program (`nnx.jit`), for the
    reasons of `jitted`; its state updates (rng streams, statistics) are written back into
    `module` as an eager call's."""
    return _nnx_jitted_call()(module, *args)


@contextlib.contextmanager
def xla_optimisations_off(off: bool = True):
    """Compile with XLA's optimisation passes off (`jax_disable_most_optimizations`), or with
    `off=False` on again (XLA's default) within a module compiled unoptimised.

    For tests that compile many programs (each derivative check of `grad_check.py` is one; a
    model's training step; a Flax initialiser's truncated normal) and run each a few times:
    optimising them costs more than it saves (about half of such a test's time). The programs
    compute the same maths; only the rounding of a fused operation may differ, so a test using
    this compares at tolerances above it.

    JAX's caches of compiled programs do not key on this flag: they are cleared on entry and on
    exit, so that no program compiled one way is reused where the other is in force (a test
    comparing two programs bit for bit would otherwise compare an optimised with an unoptimised
    one).
    """
    name = "jax_disable_most_optimizations"
    previous = jax.config.read(name)
    jax.clear_caches()
    jax.config.update(name, off)
    try:
        yield
    finally:
        jax.clear_caches()
        jax.config.update(name, previous)


@pytest.fixture(scope="module")
def unoptimised_module():
    """`xla_optimisations_off` for the module's tests (their compiled programs shared).

    Each test using it joins its module's `xdist_group` (`pytest_collection_modifyitems`
    below), so that one worker runs the module in one stretch: under plain load balancing a
    worker switches modules often, and each switch would clear JAX's caches twice (and lose
    what the module's tests share).
    """
    with xla_optimisations_off():
        yield


def pytest_report_header() -> str:
    if FAST_COMPILE:
        return (
            f"XLA:CPU code generation: elemental emitters ({FAST_COMPILE_FLAG}, for compile "
            "time); tests marked default_codegen are refused here (make test runs them beside)"
        )
    return "XLA:CPU code generation: XLA's default"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FAST_COMPILE and item.get_closest_marker("default_codegen"):
            item.add_marker(
                pytest.mark.skip(
                    reason=f"a claim about XLA's default code generation, not {FAST_COMPILE_FLAG}'s"
                    " (make test runs it beside, in a process of its own)"
                )
            )
        fixtures = getattr(item, "fixturenames", ())
        if "unoptimised_module" in fixtures and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Tests marked `long_running` first (a stable sort keeps the order otherwise): pytest-xdist
    # hands out the groups (largest first), then single tests in collection order, so a test of
    # several seconds collected late would run on one worker while the other has run out.
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


# Hypothesis: every example of tests/test_properties.py draws a new shape, so a new program to
# compile; the default profile keeps `make test` short, `HYPOTHESIS_PROFILE=ci-long` searches
# wider (e.g. `HYPOTHESIS_PROFILE=ci-long make test`).
settings.register_profile("default", max_examples=12, deadline=None)
settings.register_profile("ci-long", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
