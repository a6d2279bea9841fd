"""The compiled HLO of ``instance_norm`` at full size, sharded on 8 host devices.

Larger shapes than ``test_sharding_jit.py`` runs, compiled (never run) from abstract sharded
inputs (``jax.ShapeDtypeStruct``), so that a size-dependent fast path is inspected too: no
collective may move more than the per-instance statistics. A control function that does gather
its input proves that the HLO parser sees such a gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hlo_collectives import collectives
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_cases import (
    LAYOUTS,
    C,
    N,
    assert_only_statistics_cross_devices,
    describe,
    functions,
    largest_array,
    make_inputs,
    make_mesh,
    oversized,
)

# Not with the other sharding modules: each compiles its own cases, so the two xdist workers
# can share the work.
pytestmark = pytest.mark.xdist_group("sharding_hlo")

#: mesh -> (mesh shape, mesh axis names)
MESHES = {"1d": ((8,), ("x",)), "2d": ((2, 4), ("data", "space"))}


@dataclass(frozen=True)
class HloCase:
    """An input shape, layout, sharding (``PartitionSpec`` entries over a mesh) and dtype."""

    name: str
    shape: tuple[int, ...]
    channel_axis: int
    spec: tuple[Any, ...]
    mesh: str = "1d"
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"{self.name}-{'x'.join(map(str, self.shape))}"


CASES = [
    # nnU-Net-sized 3-D volume, sharded along depth, and along batch x depth.
    HloCase("depth", (2, 32, 128, 128, 128), 1, (None, None, "x")),
    HloCase("batch_depth", (4, 32, 64, 128, 128), 1, ("data", None, "space"), mesh="2d"),
    # The benchmark's 2-D shape, batch- and height-sharded; bf16 too.
    HloCase("batch", (16, 128, 128, 128), 1, ("x",)),
    HloCase("height", (16, 128, 128, 128), 1, (None, None, "x")),
    HloCase("height_bf16", (16, 128, 128, 128), 1, (None, None, "x"), dtype="bfloat16"),
    HloCase("batch_ndhwc", (16, 64, 64, 64, 32), -1, ("x",)),
    HloCase("depth_ndhwc", (2, 128, 128, 128, 32), -1, (None, "x")),
]


@pytest.mark.parametrize("function", ["train", "vjp"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_large_shapes_only_statistics_cross_devices(case: HloCase, function: str) -> None:
    mesh = make_mesh(*MESHES[case.mesh])
    channels = case.shape[case.channel_axis]
    x = jax.ShapeDtypeStruct(
        case.shape, jnp.dtype(case.dtype), sharding=NamedSharding(mesh, P(*case.spec))
    )
    vector = jax.ShapeDtypeStruct((channels,), jnp.float32, sharding=NamedSharding(mesh, P()))
    fn = functions(case.channel_axis)[function]
    hlo = jax.jit(fn).lower(x, vector, vector, vector, vector, x).compile().as_text()
    assert_only_statistics_cross_devices(
        f"{case}/{function}",
        collectives(hlo),
        instance_elements=case.shape[0] * channels,
        activation_elements=int(np.prod(case.shape)),
    )


def test_hlo_parser_sees_a_gathered_activation() -> None:
    # Control: a function that replicates its depth-sharded input must be caught by the same
    # criterion, or the tests of what crosses devices could not fail.
    mesh = make_mesh(*MESHES["1d"])
    channel_axis, shape = LAYOUTS["ncdhw"]
    x = jax.device_put(
        make_inputs(shape, channel_axis)["x"], NamedSharding(mesh, P(None, None, "x"))
    )

    def gathers(x):
        # A "fast path" that reshapes each instance to one row forces the data together.
        rows = jax.lax.with_sharding_constraint(x.reshape(N * C, -1), NamedSharding(mesh, P()))
        return (rows * 2.0).reshape(x.shape)

    found = collectives(jax.jit(gathers).lower(x).compile().as_text())
    too_big = oversized(found, N * C)
    assert [c["op"] for c in too_big] == ["all-gather"], describe(found)
    assert largest_array(too_big[0]) == int(np.prod(shape))
