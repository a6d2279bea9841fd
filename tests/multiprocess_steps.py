"""Two training steps that span processes, and the script each process of the test runs.

``tests/test_multiprocess.py`` starts this file twice (``python multiprocess_steps.py
PROCESS_ID PORT OUT``): two processes of four host devices each, joined by
``jax.distributed.initialize`` on 127.0.0.1 (process 0 is the coordinator), so that one mesh
spans eight devices in two processes and every collective crosses the process boundary. Each
process writes what it computed, gathered to full arrays, to ``OUT`` (an ``.npz``); the test
compares both with one process's unsharded computation of the same steps.

The steps:

* ``batch_sharded``: a training step under ``jit`` with the batch sharded over all eight
  devices (``NamedSharding``): the loss, its gradients and the running stats.
* ``instance_split``: the same step under ``shard_map`` with every instance split along its
  depth over all eight devices, ``instance_axis_name`` averaging the per-instance statistics.

This module imports only jax, numpy and lucid_jax (not conftest, which asks for eight devices
per process), so that the test and its processes share one definition of the steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lucid_jax import instance_norm

PROCESSES, LOCAL_DEVICES = 2, 4
#: (N, C, D, H, W): the batch and the depth both split evenly over the eight devices.
SHAPE = (8, 4, 16, 4, 4)
MOMENTUM, EPS = 0.1, 1e-5
#: float32 results of sharded against unsharded sums: only the summation order differs.
TOLERANCE = 1e-5


def inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Instances with their own offsets and scales, float32: the same in every process."""
    rng = np.random.default_rng(seed)
    n, c = SHAPE[:2]
    offsets = rng.normal(3.0, 2.0, (n, c, 1, 1, 1))
    scales = rng.uniform(0.5, 2.0, (n, c, 1, 1, 1))
    return {
        "x": (rng.normal(size=SHAPE) * scales + offsets).astype(np.float32),
        "target": rng.normal(size=SHAPE).astype(np.float32),
        "w": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "b": rng.normal(size=c).astype(np.float32),
        "rm": rng.normal(size=c).astype(np.float32),
        "rv": rng.uniform(0.5, 1.5, c).astype(np.float32),
    }


def _loss(params, stats, x, target, scale, instance_axis_name=None):
    """``scale * sum((y - target)**2)`` and the new running stats."""
    out = instance_norm(
        x,
        stats[0],
        stats[1],
        params["w"],
        params["b"],
        True,
        MOMENTUM,
        EPS,
        instance_axis_name=instance_axis_name,
    )
    return scale * jnp.sum((out.output - target) ** 2), (out.running_mean, out.running_var)


def _step(params, stats, x, target):
    """One unsharded (or ``jit``-sharded) step: loss, ``dw``, ``db``, ``dx``, running stats."""
    (value, new_stats), grads = jax.value_and_grad(_loss, argnums=(0, 2), has_aux=True)(
        params, stats, x, target, 1.0 / x.size
    )
    return {
        "loss": value,
        "dw": grads[0]["w"],
        "db": grads[0]["b"],
        "dx": grads[1],
        "rm": new_stats[0],
        "rv": new_stats[1],
    }


def single_process(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both steps' reference: the unsharded step on one device of this process."""
    args = _arguments(data)
    device = jax.devices("cpu")[0]
    result = jax.jit(_step)(*jax.device_put(args, device))
    return {key: np.asarray(value) for key, value in result.items()}


def _arguments(data):
    params = {"w": data["w"], "b": data["b"]}
    return params, (data["rm"], data["rv"]), data["x"], data["target"]


def batch_sharded(mesh: Mesh, data: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """The step under ``jit``, the batch of ``x`` and ``target`` sharded over ``"devices"``."""
    params, stats, x, target = _arguments(data)
    batch = NamedSharding(mesh, P("devices"))
    replicated = NamedSharding(mesh, P())
    x, target = (_global_array(a, batch) for a in (x, target))
    params, stats = jax.tree.map(lambda a: _global_array(a, replicated), (params, stats))
    return jax.jit(_step)(params, stats, x, target)


def instance_split(mesh: Mesh, data: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """The step under ``shard_map``, every instance split along its depth over ``"devices"``."""
    params, stats, x, target = _arguments(data)
    depth = P(None, None, "devices")
    scale = 1.0 / x.size  # the global mean: each shard's sum over the global element count

    def per_shard(params, stats, x, target):
        # params are replicated (in_specs P()): shard_map's default check_vma sums their
        # gradients over "devices" already.
        (value, new_stats), grads = jax.value_and_grad(_loss, argnums=(0, 2), has_aux=True)(
            params, stats, x, target, scale, "devices"
        )
        return {
            "loss": jax.lax.psum(value, "devices"),
            "dw": grads[0]["w"],
            "db": grads[0]["b"],
            "dx": grads[1],
            # Every shard holds the same (pmean'd) statistics: stacked, the test sees each.
            "rm": new_stats[0][None],
            "rv": new_stats[1][None],
        }

    out_specs = {"loss": P(), "dw": P(), "db": P(), "dx": depth}
    out_specs |= {"rm": P("devices"), "rv": P("devices")}
    mapped = jax.jit(
        jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(), depth, depth), out_specs=out_specs)
    )
    x, target = (_global_array(a, NamedSharding(mesh, depth)) for a in (x, target))
    params, stats = jax.tree.map(
        lambda a: _global_array(a, NamedSharding(mesh, P())), (params, stats)
    )
    return mapped(params, stats, x, target)


def _global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the full value every process holds (each places its own shards)."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def main(argv: list[str]) -> int:
    process_id, port, out = int(argv[0]), int(argv[1]), Path(argv[2])
    # Gloo is JAX's default for CPU collectives across processes; said here so that a JAX
    # whose default differs still joins the processes' collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    from jax.experimental import multihost_utils

    devices = jax.devices()
    assert jax.process_count() == PROCESSES, jax.process_count()
    assert len(devices) == PROCESSES * LOCAL_DEVICES, devices
    assert len(jax.local_devices()) == LOCAL_DEVICES, jax.local_devices()
    mesh = Mesh(np.array(devices), ("devices",))
    data = inputs()
    results = {}
    for name, step in (("batch_sharded", batch_sharded), ("instance_split", instance_split)):
        for key, value in step(mesh, data).items():
            results[f"{name}/{key}"] = np.asarray(
                multihost_utils.process_allgather(value, tiled=True)
            )
    results["process_index"] = np.asarray(jax.process_index())
    np.savez(out, **results)
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
