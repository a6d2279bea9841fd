"""What a run leaves behind: the machine's description, JSON, a markdown report and a plot."""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from benchmarks._targets import FWD_BWD_LIMIT_R, FWD_LIMIT_R, ISSUE_SHAPE

#: Bars taller than this many R are cut, their value printed inside.
PLOT_CAP_R = 9.0
COLOURS = {
    "roofline": "#9e9e9e",
    "lucid_cf": "#0b4f9c",
    "lucid_cl": "#3d8fe0",
    "lucid_cf_one_pass": "#7b68ee",
    "lucid_cf_vmap": "#00838f",
    "baseline_cf": "#8d6e63",
    "baseline_cl": "#bcaaa4",
    "naive_cf": "#e08a3d",
    "naive_cl": "#f2bd85",
    "flax_cl": "#4caf50",
    "torch_cf": "#c0392b",
}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """JAX's backend and device, the host, and the versions that matter, for the JSON."""
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "jax_device": str(device),
        "jax_devices": jax.device_count(),
        "cpu_model": _cpu_model(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "numpy": _version("numpy"),
        "lucid_jax": _version("lucid-jax"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }


def machine_line(m: dict[str, Any]) -> str:
    torch = m.get("torch")
    torch = f"torch {torch} on {m['torch_device']}" if torch else "no torch"
    return (
        f"JAX on {m['backend']} ({m['device_kind']}); host {m['cpu_model']}, "
        f"{m['usable_cores']} cores; {m['platform']}; Python {m['python']}; jax {m['jax']}, "
        f"jaxlib {m['jaxlib']}, flax {m['flax']}, numpy {m['numpy']}, {torch}"
    )


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write through a ``.tmp`` file, so that a killed run leaves no half-written result."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    os.replace(tmp, path)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3g}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _ratio(summary: dict[str, Any] | None) -> str:
    return "—" if summary is None else f"{summary['ratio_R']:.2f}"


def _summary_table(configs: list[dict[str, Any]]) -> list[str]:
    """One row per configuration: R, then each candidate's forward and forward+backward in
    units of R."""
    keys = list(dict.fromkeys(k for c in configs for k, v in c["candidates"].items()))
    keys = [k for k in keys if not k.startswith("roofline")]
    heads = [f"{k} {phase}" for k in keys for phase in ("fwd", "fwd+bwd")]
    lines = [
        "| configuration | R ms | " + " | ".join(heads) + " |",
        "|---|---:|" + "---:|" * len(heads),
    ]
    for c in configs:
        cells = []
        for key in keys:
            cand = c["candidates"].get(key)
            cells += ["—", "—"] if cand is None else [_ratio(cand["fwd"]), _ratio(cand["fwd_bwd"])]
        lines.append(f"| {c['title']} | {_ms(c['R_s'])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _config_table(c: dict[str, Any]) -> list[str]:
    lines = [
        f"##### {c['title']}: input {_bytes(c['input_bytes'])}, R = {_ms(c['R_s'])} ms, "
        f"{c['rounds']} rounds × {c['calls_per_sample']} call(s)",
        "",
        "| candidate | layout | fwd ms | fwd / R [IQR] | fwd+bwd ms | fwd+bwd / R [IQR] "
        "| XLA temp fwd+bwd | temp / input | max rel err |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cand in c["candidates"].values():
        cells = []
        for summary in (cand["fwd"], cand["fwd_bwd"]):
            if summary is None:
                cells += ["—", "—"]
            else:
                spread = f"[{summary['ratio_R_q25']:.2f}, {summary['ratio_R_q75']:.2f}]"
                cells += [_ms(summary["median_s"]), f"{summary['ratio_R']:.2f} {spread}"]
        fraction = cand["temp_fraction_fwd_bwd"]
        errors = cand["max_rel_err"].values()
        error = "—" if not errors else f"{max(errors):.1e}"
        lines.append(
            f"| {cand['label']}{' *(reference)*' if cand['reference'] else ''} "
            f"| {cand['layout']} | " + " | ".join(cells) + f" | "
            f"{_bytes(cand['temp_bytes_fwd_bwd'])} | "
            f"{'—' if fraction is None else format(fraction, '.3g')} | "
            f"{error}{' **WRONG**' if cand['correct'] is False else ''} |"
        )
    return [*lines, ""]


def markdown(result: dict[str, Any], descriptions: dict[str, str]) -> str:
    """The report: the machine, per question a summary and one table per configuration, then
    the targets."""
    lines = [
        f"### lucid_jax.instance_norm benchmarks: {', '.join(result['questions'])}",
        "",
        f"{machine_line(result['machine'])}.  ",
        f"Run {result['created']}. Times are medians over interleaved rounds; `/ R` is the "
        "median over rounds of the time over that round's R (jitted `x*w+b`: one read, one "
        "write); forward+backward = `jit` of `jax.vjp(f, x, w, b)` and its pullback of `g`.",
        "",
    ]
    for question in result["questions"]:
        configs = [c for c in result["configs"] if c["question"] == question]
        lines += [f"#### {question}: {descriptions[question]}", "", *_summary_table(configs)]
        for c in configs:
            lines += _config_table(c)
    lines += [
        "#### Targets",
        "",
        "| question | target | measured | required | status | detail |",
        "|---|---|---:|---|---|---|",
    ]
    for t in result["targets"]:
        measured = "—" if t["measured"] is None else f"{t['measured']:.3g}"
        lines.append(
            f"| {t['question']} | {t['target']} | {measured} | {t['limit']} | "
            f"**{t['status']}** | {t['detail']} |"
        )
    return "\n".join([*lines, ""])


def _panel(ax: Any, c: dict[str, Any], handles: dict[str, Any]) -> None:
    """Forward and forward+backward bars of every candidate but the references, in R; adds
    each candidate's first bar to ``handles`` (key -> legend label, bar)."""
    cands = [(k, v) for k, v in c["candidates"].items() if not v["reference"]]
    width = 0.84 / len(cands)
    values = [v[p]["ratio_R"] for _, v in cands for p in ("fwd", "fwd_bwd") if v[p]]
    top = 1.12 * min(max([FWD_BWD_LIMIT_R, *values]), PLOT_CAP_R) + 0.2
    for i, (key, cand) in enumerate(cands):
        for group, phase in enumerate(("fwd", "fwd_bwd")):
            if cand[phase] is None:
                continue
            value, x = cand[phase]["ratio_R"], group - 0.42 + width * (i + 0.5)
            bar = ax.bar(
                x,
                min(value, top),
                width * 0.92,
                color=COLOURS.get(key, "#777777"),
                edgecolor="black" if key.startswith("lucid") else "none",
            )
            handles.setdefault(key, (f"{key}: {cand['label']}", bar))
            cut = value > top
            ax.text(
                x,
                0.98 * top if cut else value,
                f"{value:.1f}↑" if cut else f"{value:.2f}",
                ha="center",
                va="top" if cut else "bottom",
                fontsize=6,
                rotation=90 if cut else 0,
            )
    ax.axhline(1.0, color="#555555", linewidth=0.8)
    if tuple(c["shape"]) == ISSUE_SHAPE and c["dtype"] == "float32":
        for group, limit in enumerate((FWD_LIMIT_R, FWD_BWD_LIMIT_R)):
            ax.hlines(limit, group - 0.45, group + 0.45, colors="crimson", linestyles="--")
    ax.set_xticks([0, 1], ["forward", "forward+backward"])
    ax.set_ylim(0, top)
    ax.set_ylabel("time / R (lower is better)")
    ax.set_title(f"{c['question']}: {c['title']}\nR = {_ms(c['R_s'])} ms", fontsize=9)


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per configuration: each candidate's times in units of R."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    cols = min(3, len(configs))
    rows = math.ceil(len(configs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows + 1.4), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, config in zip(axes.flat, configs, strict=False):
        _panel(ax, config, handles)
    for ax in list(axes.flat)[len(configs) :]:
        ax.axis("off")
    labels, bars = zip(*handles.values(), strict=True)
    fig.legend(bars, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(
        "lucid_jax.instance_norm: median time in units of R = jit(x*w+b); dashed: the issue's "
        f"targets\n{machine_line(result['machine'])}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 1.1 / (3.8 * rows + 1.4), 1, 0.95))
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)


#: The overview figure's bars: lucid_jax in both layouts against its peers, each in its own
#: layout (Flax's InstanceNorm is channels last, PyTorch's channels first).
OVERVIEW = {
    "lucid_cf": "lucid-jax, channels first",
    "lucid_cl": "lucid-jax, channels last",
    "flax_cl": "Flax linen.InstanceNorm (channels last)",
    "torch_cf": "PyTorch F.instance_norm (channels first)",
}


def _shape_label(c: dict[str, Any]) -> str:
    """``N=16 C=128`` over the spatial dims (and the data's mean where it is not zero)."""
    n, channels, *spatial = c["shape"]
    label = f"N={n} C={channels}\n{'×'.join(map(str, spatial))}"
    mean = c["title"].partition(", mean ")[2]
    return label + (f"\nmean {mean}" if mean else "")


def overview(result: dict[str, Any], path: Path) -> bool:
    """One readable figure: lucid-jax against Flax and PyTorch per float32 shape, forward and
    forward+backward side by side, in units of R with the interquartile range. False (and no
    file) when the run timed none of them."""
    configs = [
        c
        for c in result["configs"]
        if c["question"] == "speed"
        and c["dtype"] == "float32"
        and any(key in c["candidates"] for key in OVERVIEW)
    ]
    if not configs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in OVERVIEW if any(k in c["candidates"] for c in configs)]
    width = 0.8 / len(keys)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    for ax, (phase, title) in zip(
        axes, (("fwd", "forward"), ("fwd_bwd", "forward + backward")), strict=True
    ):
        for i, key in enumerate(keys):
            for group, c in enumerate(configs):
                timing = (c["candidates"].get(key) or {}).get(phase)
                if not timing:
                    continue
                x = group - 0.4 + width * (i + 0.5)
                value = timing["ratio_R"]
                low, high = timing.get("ratio_R_q25", value), timing.get("ratio_R_q75", value)
                ax.bar(
                    x,
                    value,
                    width * 0.9,
                    color=COLOURS.get(key, "#777777"),
                    label=OVERVIEW[key] if group == 0 else None,
                    yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                    error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"},
                )
                ax.text(x, high, f" {value:.2f}", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.axhline(1.0, color="#555555", linewidth=0.8, linestyle=":")
        ax.set_xticks(
            range(len(configs)),
            [_shape_label(c) for c in configs],
            fontsize=8,
        )
        ax.set_title(title, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("median time / R  (lower is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(keys), fontsize=9, frameon=False)
    m = result["machine"]
    fig.suptitle(
        "instance norm, float32, per input shape: time in units of R = jit(x*w+b), one read "
        f"and one write of the input\n{m['backend']} ({m['cpu_model']}, "
        f"{m['usable_cores']} cores), jax {m['jax']}, flax {m['flax']}"
        + (f", torch {m['torch']}" if m.get("torch") else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.98))
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return True


def write(result: dict[str, Any], out: Path, stem: str, descriptions: dict[str, str]) -> str:
    """``stem.json``, ``stem.md`` and ``stem.png`` in ``out``; the markdown report."""
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(result, descriptions)
    write_atomic(out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    write_atomic(out / f"{stem}.md", report)
    plot(result, out / f"{stem}.png")
    overview(result, out / f"{stem}_overview.png")
    return report
