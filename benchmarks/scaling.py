"""Scale-out benchmark of ``lucid_jax.instance_norm``: communication and time.

Run ``python -m benchmarks.scaling`` (``--help`` lists the options). It needs 8 devices: run as
a program it sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (and
``JAX_PLATFORMS=cpu``) before jax starts; called from a process where jax already runs with
fewer devices, :func:`main` re-runs itself in a subprocess.

For a channels-first volume (default ``(8, 16, 32, 32, 32)`` float32) sharded along the batch
(``data``), the channels (``channel``) or the depth (``spatial``) over 1, 2, 4 and 8 host
devices, and for the forward (training, with running stats, weight and bias) and the
forward+backward (``jax.vjp`` forward and pullback, jitted together), it

1. compiles the step and reads every collective of the compiled HLO
   (``jit(f).lower(...).compile().as_text()``: all-reduce, all-gather, all-to-all,
   collective-permute, reduce-scatter), with its per-device array sizes and group size;
2. estimates the bytes the step communicates, summed over devices, with the usual ring
   costs per device: an all-reduce of ``S`` bytes over ``g`` devices sends ``2 (g-1)/g · S``,
   an all-gather or all-to-all ``(g-1)/g · S`` of its result, a reduce-scatter
   ``(g-1)/g · S`` of its operand, a collective-permute its operand — and compares them with
   the activation's bytes (the global input);
3. checks the sharded result against the one-device result and times the step (median of
   ``--repeats`` calls, each blocked with ``block_until_ready``).

Host devices share this one process's CPU cores, so the times show the overhead of sharding,
not a speed-up; the communication figures are what carries over to real accelerators.
Collectives inside loops (``while`` bodies) are counted once (none are expected).

Outputs, in ``--out`` (default ``benchmarks/results``): ``scaling.json`` (every figure, each
step's collectives, the machine), ``scaling.md`` (the table, also printed) and ``scaling.png``.
"""

from __future__ import annotations

import os
import sys

DEVICE_COUNTS = (1, 2, 4, 8)
DEVICE_FLAG = f"--xla_force_host_platform_device_count={max(DEVICE_COUNTS)}"


def _with_device_flag(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        env["XLA_FLAGS"] = f"{flags} {DEVICE_FLAG}".strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


if __name__ == "__main__" and "jax" not in sys.modules:  # before the first jax import
    os.environ.update(_with_device_flag(dict(os.environ)))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lucid_jax  # noqa: E402
from benchmarks._report import machine_info, write_atomic  # noqa: E402
from tests import hlo_collectives  # noqa: E402  (one parser, shared with the sharding tests)

DEFAULT_SHAPE = (8, 16, 32, 32, 32)
QUICK_SHAPE = (8, 8, 8, 8, 8)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: sharding -> the input's PartitionSpec, channels first (N, C, D, H, W), one mesh axis "x".
SHARDINGS: dict[str, P] = {
    "data": P("x"),
    "channel": P(None, "x"),
    "spatial": P(None, None, "x"),
}
STEPS = ("fwd", "fwd_bwd")

# --------------------------------------------------------------------------------------------
# Collectives of a compiled HLO module, and what they cost.


def _group_size(attributes: str, devices: int) -> int:
    """Devices per replica group, from any of the HLO spellings of ``replica_groups``."""
    mesh_form = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes)
    if mesh_form:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh_form.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", mesh_form.group(2)))
    iota_form = re.search(r"replica_groups=\[([\d,]+)\]<=", attributes)
    if iota_form:
        return int(iota_form.group(1).split(",")[-1])
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
    if listed:
        return len([d for d in listed.group(1).split(",") if d])
    return devices


def collectives(hlo_text: str, devices: int) -> list[dict[str, Any]]:
    """Every collective of a compiled (per-device) HLO module, with sizes and a cost estimate.

    ``sent_bytes`` is the ring estimate of what the op sends, summed over ``devices``.
    """
    found = []
    for item in hlo_collectives.collectives(hlo_text):
        kind, results = item["kind"], item["results"]
        result_bytes = sum(a["bytes"] for a in results)
        operand_bytes = sum(a["bytes"] for a in item["operands"]) or result_bytes
        g = _group_size(item["attributes"], devices)
        share = (g - 1) / g if g > 1 else 0.0
        if kind == "all-reduce":
            per_device = 2 * share * result_bytes
        elif kind in ("all-gather", "all-to-all"):
            per_device = share * result_bytes
        elif kind == "reduce-scatter":
            per_device = share * operand_bytes
        else:  # collective-permute / broadcast: every device sends its operand (at most)
            per_device = float(operand_bytes)
        found.append(
            {
                "name": item["name"],
                "op": kind,
                "shapes": [f"{a['dtype']}{a['shape']}" for a in results],
                "result_bytes": result_bytes,
                "group_size": g,
                "sent_bytes": per_device * devices,
            }
        )
    return found


# --------------------------------------------------------------------------------------------
# The steps.


def _steps() -> dict[str, Callable[..., Any]]:
    def fwd(x, rm, rv, w, b, g):
        del g
        return lucid_jax.instance_norm(x, rm, rv, w, b)

    def fwd_bwd(x, rm, rv, w, b, g):
        def f(x, w, b):
            out = lucid_jax.instance_norm(x, rm, rv, w, b)
            return out.output, (out.running_mean, out.running_var)

        y, pullback, stats = jax.vjp(f, x, w, b, has_aux=True)
        return y, pullback(g), stats

    return {"fwd": jax.jit(fwd), "fwd_bwd": jax.jit(fwd_bwd)}


def _host_inputs(shape: tuple[int, ...], dtype: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    channels = shape[1]
    return [
        (rng.normal(size=shape) * 2 + 1).astype(dtype),
        np.zeros(channels, np.float32),
        np.ones(channels, np.float32),
        rng.uniform(0.5, 1.5, channels).astype(np.float32),
        rng.normal(size=channels).astype(np.float32),
        rng.normal(size=shape).astype(dtype),
    ]


def _time_interleaved(calls: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median seconds of each call, timed in ``repeats`` rounds that each run every call once
    (in a rotated order), so that a burst of load on a shared machine hits all of them alike."""
    for call in calls:
        jax.block_until_ready(call())  # warm-up (compiled already)
    samples: list[list[float]] = [[] for _ in calls]
    for round_ in range(repeats):
        for k in range(len(calls)):
            i = (k + round_) % len(calls)
            start = time.perf_counter()
            jax.block_until_ready(calls[i]())
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def _max_rel_err(a: Any, b: Any) -> float:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    errs = [
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        / max(float(np.max(np.abs(np.asarray(y, np.float64)))), 1e-12)
        for x, y in zip(leaves_a, leaves_b, strict=True)
    ]
    return max(errs)


def measure(
    shape: tuple[int, ...], dtype: str, device_counts: tuple[int, ...], repeats: int
) -> list[dict[str, Any]]:
    """One row per (sharding, device count, step)."""
    host = _host_inputs(shape, dtype)
    activation_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    steps = _steps()
    baseline = {}
    for step, fn in steps.items():
        args = [jax.device_put(a, jax.devices()[0]) for a in host]
        baseline[step] = jax.tree.map(np.asarray, fn(*args))
    rows, calls = [], []
    for sharding, spec in SHARDINGS.items():
        for n in device_counts:
            mesh = Mesh(np.array(jax.devices()[:n]), ("x",))
            x_sharding, replicated = NamedSharding(mesh, spec), NamedSharding(mesh, P())
            args = [
                jax.device_put(a, x_sharding if i in (0, 5) else replicated)
                for i, a in enumerate(host)
            ]
            for step, fn in steps.items():
                hlo = fn.lower(*args).compile().as_text()
                found = collectives(hlo, n)
                out = fn(*args)
                y = out[0] if step == "fwd_bwd" else out.output
                sent = sum(c["sent_bytes"] for c in found)
                rows.append(
                    {
                        "sharding": sharding,
                        "devices": n,
                        "step": step,
                        "input_spec": str(spec),
                        "activation_bytes": activation_bytes,
                        "sent_bytes": sent,
                        "sent_over_activation": sent / activation_bytes,
                        "largest_collective_bytes": max(
                            (c["result_bytes"] for c in found), default=0
                        ),
                        "collectives": found,
                        "output_sharded_like_input": bool(
                            y.sharding.is_equivalent_to(x_sharding, len(shape))
                        ),
                        "max_rel_err_vs_one_device": _max_rel_err(out, baseline[step]),
                    }
                )
                calls.append(lambda fn=fn, args=args: fn(*args))
    for row, seconds in zip(rows, _time_interleaved(calls, repeats), strict=True):
        row["median_s"] = seconds
    return rows


# --------------------------------------------------------------------------------------------
# Report.


def _bytes(n: float) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def table(rows: list[dict[str, Any]], shape: tuple[int, ...], dtype: str) -> str:
    by_key = {(r["sharding"], r["devices"], r["step"]): r for r in rows}
    activation = rows[0]["activation_bytes"]
    lines = [
        f"Input {shape} {dtype} ({_bytes(activation)}), channels first; "
        "sent = ring estimate summed over devices, from the compiled HLO.",
        "",
        "| sharding | devices | fwd sent | fwd sent / activation | fwd+bwd sent "
        "| fwd+bwd sent / activation | largest collective | fwd ms | fwd+bwd ms "
        "| max rel. err vs 1 device |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sharding in SHARDINGS:
        for n in sorted({r["devices"] for r in rows}):
            f, fb = by_key[(sharding, n, "fwd")], by_key[(sharding, n, "fwd_bwd")]
            largest = max(f["largest_collective_bytes"], fb["largest_collective_bytes"])
            err = max(f["max_rel_err_vs_one_device"], fb["max_rel_err_vs_one_device"])
            lines.append(
                f"| {sharding} | {n} | {_bytes(f['sent_bytes'])} | "
                f"{f['sent_over_activation']:.2e} | {_bytes(fb['sent_bytes'])} | "
                f"{fb['sent_over_activation']:.2e} | {_bytes(largest)} | "
                f"{f['median_s'] * 1e3:.2f} | {fb['median_s'] * 1e3:.2f} | {err:.1e} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bytes, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    counts = sorted({r["devices"] for r in rows})
    activation = rows[0]["activation_bytes"]
    styles = {"fwd": "-", "fwd_bwd": "--"}
    colors = {"data": "tab:blue", "channel": "tab:green", "spatial": "tab:red"}
    for sharding in SHARDINGS:
        for step in STEPS:
            sel = sorted(
                (r for r in rows if r["sharding"] == sharding and r["step"] == step),
                key=lambda r: r["devices"],
            )
            label = f"{sharding}, {'fwd' if step == 'fwd' else 'fwd+bwd'}"
            kw = {"color": colors[sharding], "linestyle": styles[step], "marker": "o"}
            # Zero bytes (one device) are drawn at 1 B on the log axis.
            ax_bytes.plot(counts, [max(r["sent_bytes"], 1.0) for r in sel], label=label, **kw)
            ax_time.plot(counts, [r["median_s"] * 1e3 for r in sel], label=label, **kw)
    ax_bytes.axhline(activation, color="black", linewidth=1)
    ax_bytes.annotate(
        f"activation ({activation / 2**20:.0f} MiB)",
        (counts[0], activation),
        textcoords="offset points",
        xytext=(2, -12),
        fontsize=8,
    )
    ax_bytes.set_yscale("log")
    ax_bytes.set_ylabel("bytes communicated per step (all devices)")
    ax_bytes.set_title("Communication (from the compiled HLO; 0 drawn as 1 B)")
    ax_time.set_ylabel("ms per step (one process, host devices)")
    ax_time.set_title("Time (host devices share the CPU: overhead, not speed-up)")
    for ax in (ax_bytes, ax_time):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("devices")
        ax.grid(True, which="major", alpha=0.3)
    ax_time.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=list(DEFAULT_SHAPE),
        help="channels-first input shape (N C D ...); N, C and D must divide "
        "by every device count (default %(default)s)",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=list(DEVICE_COUNTS),
        help="device counts (default %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=21, help="timed calls per step")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny shape {QUICK_SHAPE} and 2 repeats (a smoke test)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else tuple(args.shape)
    repeats = 2 if args.quick else args.repeats
    counts = tuple(sorted(set(args.devices)))
    if len(shape) < 3 or any(shape[axis] % n for axis in range(3) for n in counts):
        parser.error(f"--shape {shape}: N, C and D must divide by every device count {counts}")

    if jax.device_count() < max(counts):
        # jax started before XLA_FLAGS could ask for more host devices: run in a fresh process.
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            print(f"{jax.device_count()} devices, need {max(counts)}", file=sys.stderr)
            return 1
        argv = sys.argv[1:] if argv is None else list(argv)
        root = str(Path(__file__).resolve().parents[1])
        env = _with_device_flag(dict(os.environ))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "benchmarks.scaling", *argv], env=env, cwd=root, check=False
        ).returncode

    start = time.perf_counter()
    rows = measure(shape, args.dtype, counts, repeats)
    report = table(rows, shape, args.dtype)
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "shape": list(shape),
        "dtype": args.dtype,
        "device_counts": list(counts),
        "repeats": repeats,
        "machine": machine,
        "rows": rows,
        "elapsed_s": time.perf_counter() - start,
    }
    write_atomic(args.out / "scaling.json", json.dumps(result, indent=1) + "\n")
    header = (
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores; "
        f"jax {machine['jax']}, {machine['jax_devices']} host devices"
    )
    write_atomic(args.out / "scaling.md", f"{header}\n\n{report}\n")
    plot(rows, args.out / "scaling.png", f"lucid_jax.instance_norm, input {shape} {args.dtype}")
    print(header)
    print()
    print(report)
    print(
        f"\nwrote {args.out / 'scaling.json'}, scaling.md and scaling.png "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
