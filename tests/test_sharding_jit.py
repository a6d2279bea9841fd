"""``jit`` of ``instance_norm`` with ``NamedSharding`` on 8 host devices: results and HLO.

The input is sharded along the batch, the channels, the depth of a 3-D volume, or batch x depth
(a 2 x 4 mesh), channels first (``channel_axis=1``) and last (``channel_axis=-1``); the
function is the training forward, the eval forward or ``jax.vjp``, on an ``Auto`` mesh
(``jax.sharding.Mesh``'s default) and an ``Explicit`` one (``jax.make_mesh``'s default). Each
case compiles once (``jit(f).lower(...).compile()``), runs, and is checked from several sides:
its results against one device and a float64 reference, the shardings of its outputs, and the
collectives of its compiled HLO.

The cases compile with XLA's backend (LLVM) optimisations off (`conftest.xla_optimisations_off`;
optimising was about a third of the module's CPU time): the HLO they are partitioned and
checked in is the same as with them on (`test_unoptimised_compile_gives_the_same_hlo` checks
two cases), and their results differ from it by rounding far below the tolerances.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import pytest
from conftest import xla_optimisations_off
from hlo_collectives import collectives
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_cases import (
    LAYOUTS,
    TOL_FLOAT64,
    TOL_SINGLE_DEVICE,
    N,
    assert_only_statistics_cross_devices,
    describe,
    float64_reference,
    functions,
    host_devices,
    make_inputs,
    make_mesh,
    oversized,
    rel_err,
)

# Each case compiles once (the runs are cached): the fixture keeps the module on one worker.
pytestmark = pytest.mark.usefixtures("unoptimised_module")

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


@dataclass(frozen=True)
class JitCase:
    """A mesh mode, a layout, a sharding of the input and a function, on centred data or not."""

    mode: str
    layout: str
    sharding: str
    function: str
    centred: bool = False

    def __str__(self) -> str:
        centred = "-centred" if self.centred else ""
        return f"{self.mode}-{self.layout}-{self.sharding}-{self.function}{centred}"


CASES = [
    JitCase("auto", layout, sharding, function, centred)
    for layout in LAYOUTS
    for sharding in SHARDINGS
    for function, centred in [
        ("train", False),
        ("eval", False),
        ("vjp", False),
        ("train", True),
        ("vjp", True),
    ]
] + [
    JitCase("explicit", "ncdhw", sharding, function)
    for sharding in SHARDINGS
    for function in ("train", "vjp")
]


@dataclass(frozen=True)
class JitRun:
    """A case compiled and run: its outputs and HLO, and what they are compared with."""

    outputs: dict[str, jax.Array]
    input_sharding: NamedSharding
    hlo: str
    collectives: list[dict[str, Any]]
    single_device: dict[str, np.ndarray]
    float64: dict[str, np.ndarray]
    instance_elements: int
    shape: tuple[int, ...]

    @property
    def activation_elements(self) -> int:
        return int(np.prod(self.shape))


@functools.cache
def _single_device(layout: str, function: str, centred: bool) -> dict[str, np.ndarray]:
    channel_axis, shape = LAYOUTS[layout]
    inputs = make_inputs(shape, channel_axis, centred=centred)
    device = host_devices()[0]
    out = jax.jit(functions(channel_axis)[function])(
        *(jax.device_put(v, device) for v in inputs.values())
    )
    return {k: np.asarray(v) for k, v in out.items()}


def _compile_and_run(case: JitCase) -> tuple[dict[str, jax.Array], NamedSharding, str]:
    """The case's outputs, the input's sharding and the compiled HLO."""
    channel_axis, shape = LAYOUTS[case.layout]
    mesh_shape, axis_names, specs = SHARDINGS[case.sharding]
    mesh = make_mesh(mesh_shape, axis_names, case.mode)
    inputs = make_inputs(shape, channel_axis, centred=case.centred)
    x_sharding = NamedSharding(mesh, P(*specs[case.layout]))
    replicated = NamedSharding(mesh, P())
    explicit = case.mode == "explicit"
    with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
        args = [
            jax.device_put(v, x_sharding if k in ("x", "g") else replicated)
            for k, v in inputs.items()
        ]
        compiled = jax.jit(functions(channel_axis)[case.function]).lower(*args).compile()
        outputs = compiled(*args)
    return outputs, x_sharding, compiled.as_text()


@functools.cache
def run(case: JitCase) -> JitRun:
    channel_axis, shape = LAYOUTS[case.layout]
    inputs = make_inputs(shape, channel_axis, centred=case.centred)
    outputs, x_sharding, hlo = _compile_and_run(case)
    return JitRun(
        outputs=outputs,
        input_sharding=x_sharding,
        hlo=hlo,
        collectives=collectives(hlo),
        single_device=_single_device(case.layout, case.function, case.centred),
        float64=float64_reference(inputs, channel_axis, training=case.function != "eval"),
        instance_elements=shape[0] * shape[channel_axis],
        shape=shape,
    )


def _output_names(case: JitCase) -> set[str]:
    return {"y", "rm", "rv"} | ({"dx", "dw", "db"} if case.function == "vjp" else set())


def _errors_above(
    outputs: dict[str, jax.Array], expected: dict[str, np.ndarray], tol: float
) -> dict[str, float]:
    """The outputs whose relative error against ``expected`` is above ``tol`` (or NaN)."""
    errors = {k: rel_err(v, expected[k]) for k, v in outputs.items()}
    return {k: e for k, e in errors.items() if not e <= tol}


def _specs(outputs: dict[str, jax.Array]) -> dict[str, Any]:
    return {k: getattr(v.sharding, "spec", v.sharding) for k, v in outputs.items()}


def test_the_cases_cover_both_mesh_modes_every_sharding_and_function() -> None:
    assert {case.mode for case in CASES} == {"auto", "explicit"}
    assert {case.sharding for case in CASES} == set(SHARDINGS)
    assert {case.layout for case in CASES} == set(LAYOUTS)
    assert {(case.function, case.centred) for case in CASES} >= {
        (f, c) for f in ("train", "vjp") for c in (False, True)
    } | {("eval", False)}


def _without_debug_info(hlo: str) -> str:
    """The HLO without source locations (the ops' metadata and the tables it points into)."""
    hlo = re.sub(
        r"^(FileNames|FunctionNames|FileLocations|StackFrames)\n(.+\n)*", "", hlo, flags=re.M
    )
    return re.sub(r", metadata=\{[^}]*\}", "", hlo)


@pytest.mark.parametrize(
    "case",
    [JitCase(mode, "ncdhw", "batch_depth", "vjp") for mode in ("auto", "explicit")],
    ids=str,
)
def test_unoptimised_compile_gives_the_same_hlo(case: JitCase) -> None:
    """What lets the module compile unoptimised: XLA's flag changes only code generation.

    The HLO after XLA's passes (SPMD partitioning and its collectives, fusion) is the same,
    checked here for the 2 x 4 mesh's forward and backward under either mesh mode.
    """
    unoptimised = run(case).hlo
    with xla_optimisations_off(off=False):  # XLA's default optimisations, for once
        _, _, optimised = _compile_and_run(case)
    assert "all-reduce" in optimised
    assert _without_debug_info(unoptimised) == _without_debug_info(optimised)


# --- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sharded_result_equals_one_device(case: JitCase) -> None:
    result = run(case)
    assert set(result.outputs) == _output_names(case)
    bad = _errors_above(result.outputs, result.single_device, TOL_SINGLE_DEVICE)
    assert not bad, f"{case}: sharded differs from one device (max rel. error): {bad}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sharded_result_equals_float64_reference(case: JitCase) -> None:
    result = run(case)
    bad = _errors_above(result.outputs, result.float64, TOL_FLOAT64)
    assert not bad, f"{case}: sharded differs from the float64 reference: {bad}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_output_keeps_the_input_sharding(case: JitCase) -> None:
    result = run(case)
    activations = {"y", "dx"} & set(result.outputs)
    assert activations == ({"y", "dx"} if case.function == "vjp" else {"y"})
    keeps = {
        k: result.outputs[k].sharding.is_equivalent_to(result.input_sharding, len(result.shape))
        for k in activations
    }
    assert all(keeps.values()), (
        f"{case}: input sharded as {result.input_sharding.spec}, outputs came back as "
        f"{_specs(result.outputs)}"
    )


# --- what crosses devices ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_only_statistics_cross_devices(case: JitCase) -> None:
    result = run(case)
    assert_only_statistics_cross_devices(
        str(case), result.collectives, result.instance_elements, result.activation_elements
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.function == "eval"], ids=str)
def test_eval_with_running_stats_needs_no_communication(case: JitCase) -> None:
    # Normalising with (replicated) running stats is elementwise: nothing crosses devices.
    result = run(case)
    assert result.collectives == [], f"{case}:\n{describe(result.collectives)}"


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.sharding == "channel" and (c.mode == "auto" or c.function == "train")],
    ids=str,
)
def test_channel_sharding_compiles_with_no_collective_at_all(case: JitCase) -> None:
    # Every instance (n, c) lives on one device, and so do its channel's running stats:
    # nothing needs to travel, not even a flag (the core never branches on data).
    result = run(case)
    assert result.collectives == [], (
        f"{case}: channel-sharded, yet:\n{describe(result.collectives)}"
    )


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.mode == "explicit" and c.sharding == "channel" and c.function == "vjp"],
    ids=str,
)
def test_channel_sharding_with_replicated_weights_gathers_only_their_gradients(
    case: JitCase,
) -> None:
    # Under an explicit mesh, weight and bias typed as replicated must get replicated
    # gradients: their per-channel sums cross devices (at most N*C values), nothing else.
    result = run(case)
    too_big = oversized(result.collectives, result.instance_elements)
    assert not too_big, f"{case}:\n{describe(too_big)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.sharding == "batch"], ids=str)
def test_batch_sharding_communicates_only_per_channel_values(case: JitCase) -> None:
    # Instances are local; only the batch average of the running stats (and, for the vjp, the
    # weight/bias gradients) are reduced over devices: (C,)-sized, or (N, C) under an explicit
    # mesh, where JAX may gather the per-instance values and reduce them locally.
    result = run(case)
    channels = result.instance_elements // N
    limit = channels if case.mode == "auto" else result.instance_elements
    too_big = oversized(result.collectives, limit)
    assert not too_big, f"{case}: more than {limit} elements cross devices:\n{describe(too_big)}"
