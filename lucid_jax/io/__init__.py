"""Lucid's checkpoint files: [`load`][lucid_jax.load] and [`save`][lucid_jax.save].

`.lct` (a tensor) and `.lcd` (a state dict) are Lucid's pickles of
`{"type", "format_version", "content"}`, read by an unpickler that builds nothing but arrays,
dicts, strings and numbers; `.safetensors` is parsed with numpy alone.
"""

from lucid_jax.io._checkpoint import FORMAT_VERSION, load, save

__all__ = ["FORMAT_VERSION", "load", "save"]
