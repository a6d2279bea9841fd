"""The issue's targets, as data, and their verdicts (PASS, FAIL, or SKIP when not measured).

Most targets bound a ratio of two candidates' times in units of R, taken configuration by
configuration within one question's run (so both were timed in the same rounds); the verdict
is on the worst configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

ISSUE_SHAPE = (16, 128, 128, 128)
FWD_LIMIT_R, FWD_BWD_LIMIT_R = 1.25, 2.5
#: bf16 statistics probe: the largest error allowed against a float32 computation on the same
#: bf16 values (bf16 rounding of outputs of magnitude ~3 is ~0.01; a mean rounded to bf16 costs
#: up to ~0.9).
BF16_PROBE_LIMIT = 0.05

#: (value, where) pairs for one target, from the result's configurations of its question.
Figures = Callable[[list[dict[str, Any]], dict[str, Any]], list[tuple[float, str]]]


@dataclasses.dataclass(frozen=True)
class Target:
    question: str  # the script that measures it: speed, vmap or compare
    text: str
    limit: float
    at_most: bool  # PASS when every figure is <= limit (else >= limit)
    figures: Figures


def _ratio_R(config: dict[str, Any], key: str | None, phase: str) -> float | None:
    if key is None:  # the roofline itself
        return 1.0
    cand = config["candidates"].get(key)
    return None if cand is None or cand[phase] is None else cand[phase]["ratio_R"]


def time_ratios(
    pairs: Sequence[tuple[str, str | None]], phase: str, shape: tuple[int, ...] | None = None
) -> Figures:
    """``time(a) / time(b)`` for each ``(a, b)`` of ``pairs`` (``b`` None: R) on every
    configuration that has both, or only float32 ones of ``shape`` when it is given."""

    def figures(configs: list[dict[str, Any]], result: dict[str, Any]) -> list:
        del result
        found = []
        for c in configs:
            if shape is not None and (
                tuple(c["shape"]) != shape or c["dtype"] != "float32" or c["offset"]
            ):
                continue
            for a, b in pairs:
                ta, tb = _ratio_R(c, a, phase), _ratio_R(c, b, phase)
                if ta is not None and tb is not None:
                    found.append((ta / tb, f"{c['label']} {a}"))
        return found

    return figures


def _temp_fractions(configs: list[dict[str, Any]], result: dict[str, Any]) -> list:
    return [
        (cand["temp_fraction_fwd_bwd"], f"{c['label']} {key}")
        for c in configs
        for key, cand in c["candidates"].items()
        if key in ("lucid_cf", "lucid_cl") and cand["temp_fraction_fwd_bwd"] is not None
    ]


def _bf16_probe(configs: list[dict[str, Any]], result: dict[str, Any]) -> list:
    probe = result.get("bf16_probe")
    return (
        []
        if probe is None
        else [(probe["lucid_cf"], f"lucid_jax (naive jnp {probe['naive_cf']:.3g})")]
    )


def _both_phases(question: str, text: str, limit: float, pairs: list) -> tuple[Target, ...]:
    """One target per phase: ``text`` with ``{phase}`` filled in, on ``time_ratios(pairs)``."""
    return tuple(
        Target(question, text.format(phase=what), limit, True, time_ratios(pairs, phase))
        for phase, what in (("fwd", "forward"), ("fwd_bwd", "forward+backward"))
    )


_ISSUE = "(" + ",".join(map(str, ISSUE_SHAPE)) + ") float32, channels first"
TARGETS = (
    Target(
        "speed",
        f"forward ≤ {FWD_LIMIT_R} R on {_ISSUE}",
        FWD_LIMIT_R,
        True,
        time_ratios([("lucid_cf", None)], "fwd", ISSUE_SHAPE),
    ),
    Target(
        "speed",
        f"forward+backward ≤ {FWD_BWD_LIMIT_R} R on {_ISSUE}",
        FWD_BWD_LIMIT_R,
        True,
        time_ratios([("lucid_cf", None)], "fwd_bwd", ISSUE_SHAPE),
    ),
    Target(
        "speed",
        "forward+backward ≥ 1.3× faster than flax.linen.InstanceNorm, channels last "
        "(time flax / lucid_jax)",
        1.3,
        False,
        time_ratios([("flax_cl", "lucid_cl")], "fwd_bwd"),
    ),
    Target(
        "speed",
        "XLA temporary memory of forward+backward ≤ 0.1× the input's bytes",
        0.1,
        True,
        _temp_fractions,
    ),
    Target(
        "speed",
        "forward no slower than naive jnp, both layouts (time lucid_jax / naive)",
        1.0,
        True,
        time_ratios([("lucid_cf", "naive_cf"), ("lucid_cl", "naive_cl")], "fwd"),
    ),
    *_both_phases(
        "speed",
        "bf16 {phase} no slower than float32 per element (time bf16 / float32)",
        1.0,
        [("lucid_cf", "lucid_cf_f32")],
    ),
    Target(
        "speed",
        "bf16 statistics in float32 (bf16 input 300 + N(0,1): max abs(y - y_f32))",
        BF16_PROBE_LIMIT,
        True,
        _bf16_probe,
    ),
    *_both_phases(
        "vmap",
        "vmap of the single-sample call ≤ 1.15× the batched call, {phase}",
        1.15,
        [("lucid_cf_vmap", "lucid_cf")],
    ),
    *_both_phases(
        "compare",
        "{phase} no slower than the baseline revision by more than 5 % (time new / old)",
        1.05,
        [("lucid_cf", "baseline_cf"), ("lucid_cl", "baseline_cl")],
    ),
)


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdict on every target of the questions in ``result`` (its ``questions``)."""
    verdicts = []
    for target in TARGETS:
        if target.question not in result["questions"]:
            continue
        configs = [c for c in result["configs"] if c["question"] == target.question]
        found = target.figures(configs, result)
        worst = (max if target.at_most else min)(found, default=None)
        if worst is None:
            status = "SKIP"
        elif worst[0] <= target.limit if target.at_most else worst[0] >= target.limit:
            status = "PASS"
        else:
            status = "FAIL"
        verdicts.append(
            {
                "question": target.question,
                "target": target.text,
                "limit": f"{'≤' if target.at_most else '≥'} {target.limit:g}",
                "measured": None if worst is None else worst[0],
                "status": status,
                "detail": ", ".join(f"{where}: {value:.3g}" for value, where in found)
                or "not measured in this run",
            }
        )
    return verdicts
