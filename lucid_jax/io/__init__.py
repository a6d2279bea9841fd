"""Lucid's checkpoint files: [`load`][lucid_jax.load] and [`save`][lucid_jax.save].

`.lct` (a tensor) and `.lcd` (a state dict) are Lucid's pickles of
`{"type", "format_version", "content"}`, read without unpickling: a small interpreter of the
pickle opcodes builds plain data and numeric numpy arrays (from a checked dtype, shape and raw
bytes) and nothing else, in memory and time bounded by the file's size; `.safetensors` is parsed
with numpy alone.
"""

from lucid_jax.io._checkpoint import FORMAT_VERSION, load, save

__all__ = ["FORMAT_VERSION", "load", "save"]
