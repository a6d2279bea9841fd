"""Is every public symbol's type known? (`make lint`: what the shipped py.typed promises.)

    python scripts/verify_types.py [PYRIGHT]

Runs ``pyright --verifytypes lucid_jax --ignoreexternal`` (with this interpreter and the
source tree first on the path) and fails on any error it reports but one kind: the Flax
layers derive from ``flax.linen.Module`` and ``flax.nnx.Module``, whose metaclasses pyright
cannot resolve from Flax's own annotations, so it calls "Type of metaclass unknown" / "Type
of base class unknown" on every subclass. Those two messages are let through for classes
under ``lucid_jax.flax`` only; everything else (a missing annotation, a partially unknown
base of our own) fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Messages pyright gives for a subclass of a Flax module, whatever we write.
FLAX_BASES = {"Type of metaclass unknown", "Type of base class unknown"}


def main(argv: list[str]) -> int:
    pyright = argv[0] if argv else "pyright"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [pyright, "--pythonpath", sys.executable, "--verifytypes", "lucid_jax"]
    command += ["--ignoreexternal", "--outputjson"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    try:
        report = json.loads(result.stdout)["typeCompleteness"]
    except (json.JSONDecodeError, KeyError):
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", file=sys.stderr)
        return 2
    errors = []
    for symbol in report["symbols"]:
        for diagnostic in symbol["diagnostics"]:
            if diagnostic.get("severity") != "error":
                continue
            message = diagnostic["message"].split("\n")[0]
            if message in FLAX_BASES and symbol["name"].startswith("lucid_jax.flax."):
                continue
            errors.append(f"{symbol['name']}: {message}")
    for error in errors:
        print(error, file=sys.stderr)
    print(
        f"pyright --verifytypes lucid_jax: completeness {report['completenessScore']:.1%}, "
        f"{len(errors)} error(s) (Flax's base classes aside)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
