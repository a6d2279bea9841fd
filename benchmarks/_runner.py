"""The command line shared by the benchmark scripts: each script is a ``Question``
(configurations, and the candidates to time on one), and ``main`` runs one or more of them
and writes their results."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from benchmarks import _report, _targets
from benchmarks._candidates import EPS, import_torch
from benchmarks._harness import Candidate, measure
from benchmarks._inputs import Config, Data, make_data, select

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: Inputs at least this large get fewer rounds (each is slow enough to be steady).
BIG_INPUT_BYTES = 32 * 2**20
BIG_ROUNDS, SMALL_ROUNDS, QUICK_ROUNDS = 11, 21, 3
#: An R sample lasts at least this long (small shapes repeat the call within a sample).
MIN_SAMPLE_S, QUICK_MIN_SAMPLE_S = 0.02, 0.002
TIMING = (
    "timeit.Timer.autorange on R picks the calls per sample, timeit.Timer.timeit times each "
    "sample (garbage collector off), numpy.percentile gives medians and quartiles"
)


@dataclasses.dataclass
class Context:
    """What candidates may need beyond the data: PyTorch, and lucid_jax at a baseline."""

    torch: Any = None
    torch_device: str = ""
    baseline: ModuleType | None = None
    baseline_revision: str | None = None


@dataclasses.dataclass(frozen=True)
class Question:
    """One benchmark script: what it answers, on which configurations, with which candidates
    (the roofline R first)."""

    name: str
    description: str
    configs: tuple[Config, ...]
    quick_configs: tuple[Config, ...]
    candidates: Callable[[Config, Data, Context], list[Candidate]]
    uses_torch: bool = False
    needs_baseline: bool = False  # runs only when --baseline names a revision
    #: Extra measurements for the JSON's top level, given the configurations that ran.
    probe: Callable[[list[Config]], dict[str, Any]] | None = None


def parse_args(prog: str, description: str, argv: Sequence[str] | None, baseline: str):
    """Options of every script; ``baseline``: "required", "optional" or "none"."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds (smoke test)")
    p.add_argument("--rounds", type=int, default=None, help="rounds for every configuration")
    p.add_argument(
        "--shapes",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated configurations, e.g. 16x128x128x128,8x64x64x64-bf16",
    )
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    if baseline != "none":
        p.add_argument(
            "--baseline",
            required=baseline == "required",
            default=None,
            metavar="REVISION",
            help="also time lucid_jax as it was at this git revision, in the same rounds",
        )
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be at least 1; got {args.rounds}")
    return args


def _context(questions: Sequence[Question], args: argparse.Namespace) -> tuple[Context, dict]:
    context, machine = Context(), {}
    if any(q.uses_torch for q in questions):
        context.torch, context.torch_device, note = import_torch(args.no_torch)
        machine = {
            "torch": None if context.torch is None else context.torch.__version__,
            "torch_device": context.torch_device or None,
            "torch_note": note,
        }
    revision = getattr(args, "baseline", None)
    if revision:
        from benchmarks import baseline

        context.baseline, context.baseline_revision = baseline.load(revision), revision
    return context, machine


def _rounds(args: argparse.Namespace, config: Config) -> int:
    if args.rounds is not None:
        return args.rounds
    if args.quick:
        return QUICK_ROUNDS
    return BIG_ROUNDS if config.input_bytes >= BIG_INPUT_BYTES else SMALL_ROUNDS


def run(
    questions: Sequence[Question],
    args: argparse.Namespace,
    command: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every selected configuration of every question: the result the JSON holds."""
    plan = [
        (q, select(q.quick_configs if args.quick else q.configs, args.shapes)) for q in questions
    ]
    plan = [(q, configs) for q, configs in plan if configs]
    if not plan:
        known = sorted({c.label for q in questions for c in (*q.configs, *q.quick_configs)})
        raise SystemExit(f"--shapes {','.join(args.shapes)} matches nothing; known: {known}")
    started = time.perf_counter()
    context, torch_info = _context([q for q, _ in plan], args)
    min_sample_s = QUICK_MIN_SAMPLE_S if args.quick else MIN_SAMPLE_S
    result: dict[str, Any] = {
        "schema": 2,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "questions": [q.name for q, _ in plan],
        "settings": {
            "quick": args.quick,
            "rounds": args.rounds,
            "shapes": args.shapes,
            "min_sample_s": min_sample_s,
            "eps": EPS,
            "baseline": context.baseline_revision,
            "timing": TIMING,
        },
        "machine": {**_report.machine_info(), **torch_info},
        "configs": [],
    }
    for question, configs in plan:
        for i, config in enumerate(configs, 1):
            log(f"[{question.name} {i}/{len(configs)}] {config.title}")
            data = make_data(config)
            candidates = question.candidates(config, data, context)
            measured = measure(
                candidates,
                data.reference,
                rounds=_rounds(args, config),
                min_sample_s=min_sample_s,
                log=log,
            )
            result["configs"].append(
                {
                    "question": question.name,
                    "label": config.label,
                    "title": config.title,
                    "shape": list(config.shape),
                    "dtype": config.dtype,
                    "offset": config.offset,
                    "input_bytes": config.input_bytes,
                    **measured,
                }
            )
            del data, candidates  # free this configuration's buffers before the next
            jax.clear_caches()
            gc.collect()
        if question.probe is not None:
            result.update(question.probe(configs))
    result["targets"] = _targets.evaluate(result)
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(
    questions: Sequence[Question],
    argv: Sequence[str] | None,
    *,
    prog: str,
    stem: str,
    baseline: str = "none",
) -> int:
    """Parse ``argv``, run ``questions``, print the report and write ``stem.{json,md,png}``
    (in ``results/``, or ``results/quick/`` with ``--quick``, unless ``--out`` says)."""
    description = "; ".join(f"{q.name}: {q.description}" for q in questions)
    args = parse_args(prog, description, argv, baseline)
    revision = getattr(args, "baseline", None)
    questions = [q for q in questions if revision or not q.needs_baseline]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command = [*prog.split(), *(sys.argv[1:] if argv is None else argv)]
    result = run(questions, args, command, log)
    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    report = _report.write(result, out, stem, {q.name: q.description for q in questions})
    print(report)
    log(f"wrote {stem}.json, {stem}.md and {stem}.png in {out} in {result['elapsed_s']:.0f} s")
    return 0


def run_question(question: Question, argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.NAME` for one question: writes `NAME.{json,md,png}`."""
    baseline = "required" if question.needs_baseline else "none"
    prog = f"python -m benchmarks.{question.name}"
    return main([question], argv, prog=prog, stem=question.name, baseline=baseline)
