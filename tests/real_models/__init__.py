"""Model definitions copied from public Flax projects that use `flax.linen.InstanceNorm`.

Each module is the project's code as written (licence header and source link kept; what was
left out is said at its top), with its InstanceNorm imported on one line of its own,
`from flax.linen import InstanceNorm`. `load` executes a module with that one line swapped,
as a user would swap the import, so the tests compare the same model over Flax's layer and
over ours.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

#: The import line every module here has once, and the tests swap.
FLAX_IMPORT = "from flax.linen import InstanceNorm"
#: The swapped line: our layer, a drop-in.
OURS = "from lucid_jax.flax.linen import InstanceNorm"


def load(name: str, import_line: str = FLAX_IMPORT) -> types.ModuleType:
    """The module `name` of this folder, executed with its InstanceNorm import swapped.

    `import_line` replaces `FLAX_IMPORT` (default: none swapped, Flax's layer).
    """
    source = (Path(__file__).parent / f"{name}.py").read_text()
    if source.count(FLAX_IMPORT + "\n") != 1:
        raise AssertionError(f"{name}.py must import InstanceNorm once, as {FLAX_IMPORT!r}")
    # One module per swap; dataclasses (linen modules) look their module up in sys.modules.
    module_name = f"real_models.{name}_{len(_LOADED)}"
    module = _LOADED[module_name] = sys.modules[module_name] = types.ModuleType(module_name)
    code = compile(source.replace(FLAX_IMPORT + "\n", import_line + "\n"), f"{name}.py", "exec")
    exec(code, module.__dict__)  # our own test file, copied code kept as written
    return module


_LOADED: dict[str, types.ModuleType] = {}
