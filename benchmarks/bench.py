"""Every benchmark question in one run: what ``make bench`` calls.

``python -m benchmarks.bench`` runs ``speed.py`` and ``vmap.py`` (and ``compare.py`` when
``--baseline REVISION`` is given) in one process on JAX's default device, and writes
``results/bench.{json,md,png}``: each configuration tagged with its question, and the issue's
targets judged on all of them. ``--help`` lists the options (those of every script).
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks import _runner, compare, speed, vmap

QUESTIONS = (speed.QUESTION, vmap.QUESTION, compare.QUESTION)


def main(argv: Sequence[str] | None = None) -> int:
    return _runner.main(
        QUESTIONS, argv, prog="python -m benchmarks.bench", stem="bench", baseline="optional"
    )


if __name__ == "__main__":
    raise SystemExit(main())
