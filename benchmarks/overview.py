"""Redraw the overview figure from a saved run, without timing anything again.

    python -m benchmarks.overview [benchmarks/results/bench.json]

writes ``bench_overview.png`` beside the JSON (``make bench`` writes it with every run): one
figure, lucid-jax against Flax and PyTorch per float32 shape, forward and forward+backward, in
units of R. docs/performance.md shows it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._report import overview

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS / "bench.json")
    args = parser.parse_args(argv)
    result = json.loads(args.json.read_text())
    out = args.json.with_name(f"{args.json.stem}_overview.png")
    if not overview(result, out):
        parser.error(f"{args.json} times none of lucid-jax, Flax, PyTorch on float32 shapes")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
