"""Run the Lucid tab of `docs/porting.md`'s training example with the real Lucid 2.14.5.

Writes `lucid_2_14_5_porting_example.json` (the losses it prints) next to this script;
`tests/test_lucid_training.py` runs the page's lucid-jax tab and compares. Run it from the
repository root with the real Lucid (see the lucid_oracle README in the shared folder):

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<shared>/lucid_oracle <lucid-venv>/bin/python \
        tests/data/record_lucid_porting_example.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).parent
PAGE = HERE.parent.parent / "docs" / "porting.md"


def tab_code(page: str, tab: str) -> str:
    """The fenced Python block of the content tab `=== "<tab>"` (indented by four spaces)."""
    pattern = rf'=== "{re.escape(tab)}"\n\n    ```python\n(.*?)\n    ```'
    return textwrap.dedent(re.search(pattern, page, re.DOTALL).group(1))


def printed_losses(output: str) -> list[float]:
    return [float(line.split()[1]) for line in output.splitlines() if line.strip()]


def main() -> None:
    code = tab_code(PAGE.read_text(), "Lucid")
    stdout = io.StringIO()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(stdout):
        os.chdir(scratch)  # the example saves model.lcd
        try:
            exec(compile(code, "porting.md[Lucid]", "exec"), {"__name__": "__main__"})
        finally:
            os.chdir(cwd)
    losses = printed_losses(stdout.getvalue())
    meta = {"lucid": "2.14.5", "script": Path(__file__).name, "losses": losses}
    (HERE / "lucid_2_14_5_porting_example.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(losses)


if __name__ == "__main__":
    main()
