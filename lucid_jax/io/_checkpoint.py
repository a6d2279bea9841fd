r"""`load` and `save`: Lucid's checkpoint files, as `lucid.load` and `lucid.save` handle them."""

from __future__ import annotations

import os
import pickle
import stat
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lucid_jax.io import _safetensors
from lucid_jax.io._atomic_write import write_replacing
from lucid_jax.io._pickle_reader import PickleRefused, read_pickle, short_repr

#: The `format_version` Lucid 2.14.5 writes and the only one it reads.
FORMAT_VERSION = 1.1
#: The pickle protocol Lucid's files have (Python 3.12's default).
PICKLE_PROTOCOL = 4
_STATE_DICT_TYPES = ("OrderedDict", "dict")
#: numpy dtype kinds a Lucid tensor can have: bool, signed, unsigned, float, complex.
_ARRAY_KINDS = "biufc"


def load(path: str | os.PathLike[str]) -> Any:
    r"""Read a checkpoint written by `lucid.save` (or by [`save`][lucid_jax.save]).

    Returns what `lucid.load` returns, with JAX arrays where Lucid has numpy arrays or Tensors:

    - `.lcd` (and any other pickled state dict): the state dict, an `OrderedDict` (or `dict`,
      as saved) from Lucid's dotted names (`"0.weight"`, `"1.running_mean"`) to arrays, in the
      saved order; ready for a module's `load_state_dict`;
    - `.lct`: the tensor, as a `jax.Array` of its dtype (what [`Tensor`][lucid_jax.Tensor]
      makes of a numpy array);
    - `.safetensors`: an `OrderedDict` of arrays by name, in sorted order (as Lucid's).

    Arrays keep their dtype (Lucid's default is float64) when JAX's x64 mode is on
    (`jax.config.update("jax_enable_x64", True)`). When it is off, JAX holds no 64-bit arrays:
    float64 values are rounded to float32 and complex128 to complex64, as by
    `jnp.asarray`; int64/uint64 arrays become int32/uint32, and an array with a value that does
    not fit is refused rather than wrapped around.

    Nothing in the file is ever run, and nothing is unpickled. Pickled files (`.lcd`, `.lct`)
    are read by a small interpreter of the pickle opcodes that builds only plain data (dicts
    with string keys, `OrderedDict`s, lists, tuples, strings, bytes, numbers, `None`) and numpy
    arrays and scalars of the numeric dtypes (bool, (u)int8-64, float16/32/64, complex64/128,
    either byte order), each rebuilt from a checked type code, a checked shape and its raw
    bytes: the names the file gives are markers, never imported or called, and no
    `__setstate__` or attribute assignment ever sees the file's values. Safetensors files are
    parsed here (numpy only) and their header checked.

    The path must be a regular file (or a link to one), checked before it is opened for
    reading: a folder, FIFO or device is refused without reading from it. Reading is bounded
    by the file's size: lengths are checked against the bytes present before anything is
    allocated, containers nest at most 100 levels, and the time taken grows in proportion to
    the size. Memory: the reader holds the file's bytes and refuses a file whose contents
    would need more than twice its size plus 128 MiB in Python objects; a Lucid `.lcd`/`.lct`
    (its bulk the arrays' raw bytes) peaks at about twice its size, the JAX arrays included.

    Args:
        path: the file. `.safetensors` files are read as safetensors, every other suffix as
            Lucid's pickled format (as `lucid.load` does).

    Returns:
        A state dict (`OrderedDict` or `dict` of `jax.Array`) or a `jax.Array`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a regular file; or the file is not a Lucid checkpoint: its
            pickle holds anything beyond the plain data and numeric arrays above, or is
            truncated or malformed (the message gives the byte offset and what was refused),
            it has a `format_version` other than 1.1, an unknown `type`, content that is not
            an array or a mapping of names to arrays, or (x64 off) 64-bit integers beyond 32
            bits. The message names the file.

    Examples:
        >>> import tempfile, pathlib
        >>> import jax.numpy as jnp
        >>> import lucid_jax
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> layer = lucid_jax.nn.InstanceNorm2d(3)
        >>> path = lucid_jax.save(layer, folder / "norm")          # Lucid adds .lcd
        >>> path.name
        'norm.lcd'
        >>> state = lucid_jax.load(path)
        >>> list(state)
        ['weight', 'bias', 'running_mean', 'running_var']
        >>> layer.load_state_dict(state)
        >>> lucid_jax.load(lucid_jax.save(jnp.arange(3.0), folder / "x")).tolist()
        [0.0, 1.0, 2.0]
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        # The bytes are dropped on return: the arrays are views of them until converted.
        tensors = _decode_safetensors(_read_regular_file(path), path)
        return OrderedDict((name, _to_jax(tensors.pop(name), path, name)) for name in list(tensors))
    return _from_record(_read_record(path), path)


def _decode_safetensors(data: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        return dict(_safetensors.decode(data))
    except ValueError as error:
        raise ValueError(
            f"lucid_jax.load: {path} is not a valid safetensors file: {error}."
        ) from None


def _read_record(path: Path) -> Any:
    # A function of its own so that the file's bytes are released when it returns, before
    # the arrays are converted to JAX: the peak stays near twice the file's size.
    try:
        return read_pickle(_read_regular_file(path))
    except PickleRefused as error:
        raise ValueError(
            f"lucid_jax.load: refused {path} at byte {error.offset}: {error.reason}. "
            "A Lucid .lcd/.lct file is a pickle of plain data and numeric numpy arrays; "
            "nothing in this one was imported or run."
        ) from None


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, which must be a regular file; reads at most its size."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"lucid_jax.load: no such file: {path}") from None
    if not stat.S_ISREG(before.st_mode):
        raise ValueError(
            f"lucid_jax.load: refused {path}: {_file_kind(before.st_mode)}, not a file."
        )
    # O_NONBLOCK: should the path be swapped for a FIFO after the check, open still returns.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as file:
        opened = os.fstat(file.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise ValueError(
                f"lucid_jax.load: refused {path}: it was replaced while being opened "
                f"(now {_file_kind(opened.st_mode)})."
            )
        data = file.read(opened.st_size + 1)
    if len(data) > opened.st_size:
        raise ValueError(
            f"lucid_jax.load: refused {path}: it grew while being read (past "
            f"{opened.st_size} bytes); save it again and retry once it is written."
        )
    return data


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "it is a folder",
        stat.S_ISFIFO: "it is a FIFO (named pipe)",
        stat.S_ISCHR: "it is a character device",
        stat.S_ISBLK: "it is a block device",
        stat.S_ISSOCK: "it is a socket",
        stat.S_ISREG: "a regular file",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "it is not a regular file")


def _from_record(record: Any, path: Path) -> Any:
    if not isinstance(record, dict) or not {"type", "format_version", "content"} <= set(record):
        found = short_repr(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f"lucid_jax.load: {path} is not a Lucid checkpoint: expected a dict with 'type', "
            f"'format_version' and 'content' (what lucid.save writes); got {found}."
        )
    version, kind, content = record["format_version"], record["type"], record["content"]
    # Types first: the file's values may be arrays, which compare element by element.
    if type(version) is not float or version != FORMAT_VERSION:
        raise ValueError(
            f"lucid_jax.load: {path} has format_version {short_repr(version)}; Lucid 2.14.5 and "
            f"lucid_jax read only {FORMAT_VERSION}."
        )
    if type(kind) is str and kind == "Tensor":
        if not _is_array(content):
            raise ValueError(
                f"lucid_jax.load: {path} is a Lucid Tensor file whose content is "
                f"{_describe(content)}; expected a numeric numpy array."
            )
        return _to_jax(content, path, "content")
    if type(kind) is not str or kind not in _STATE_DICT_TYPES:
        raise ValueError(
            f"lucid_jax.load: {path} holds type {short_repr(kind)}; expected 'Tensor', "
            "'OrderedDict' or 'dict'."
        )
    if not isinstance(content, dict):
        raise ValueError(
            f"lucid_jax.load: {path} is a Lucid state dict file whose content is "
            f"{_describe(content)}; expected a mapping of names to arrays."
        )
    for name, value in content.items():
        if not _is_array(value):
            raise ValueError(
                f"lucid_jax.load: {path} is a Lucid state dict file with entry {short_repr(name)}: "
                f"{_describe(value)}; expected numeric numpy arrays."
            )
    # Each numpy array is dropped as soon as its JAX copy exists.
    converted = ((name, _to_jax(content.pop(name), path, name)) for name in list(content))
    return OrderedDict(converted) if kind == "OrderedDict" else dict(converted)


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in _ARRAY_KINDS


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, np.generic)):
        return f"an array of dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _to_jax(array: np.ndarray | np.generic, path: Path, name: str) -> jax.Array:
    array = np.asarray(array)
    if not array.dtype.isnative:  # numpy pickles keep big-endian arrays so; JAX takes native
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8 and array.size:
        if not jax.config.read("jax_enable_x64"):
            narrow = np.iinfo(np.int32 if array.dtype.kind == "i" else np.uint32)
            if array.min() < narrow.min or array.max() > narrow.max:
                raise ValueError(
                    f"lucid_jax.load: {path}: {name!r} is {array.dtype} with values in "
                    f"[{array.min()}, {array.max()}], beyond {narrow.dtype}, the widest integer "
                    "JAX holds with x64 off. Enable it: "
                    'jax.config.update("jax_enable_x64", True).'
                )
    return jnp.asarray(array)


def save(obj: Any, path: str | os.PathLike[str], safetensors: bool = False) -> Path:
    r"""Write `obj` as `lucid.save` does, in files `lucid.load` reads.

    - A tensor (a `jax.Array`, numpy array or [`Buffer`][lucid_jax.nn.Buffer]) goes to a `.lct`
      file: `{"type": "Tensor", "format_version": 1.1, "content": numpy array}`, pickled.
    - A module (its `state_dict()`) or a state dict (`OrderedDict`/`dict` of names to arrays)
      goes to a `.lcd` file: `{"type": "OrderedDict" (or "dict"), "format_version": 1.1,
      "content": the mapping with numpy arrays}`, pickled; or, with `safetensors=True`, to a
      `.safetensors` file (written here, without the `safetensors` package, with the bytes
      `safetensors.numpy.save_file`, which Lucid calls, writes; complex64 as `C64`).

    The suffix is handled as Lucid handles it: `safetensors=True` replaces any suffix with
    `.safetensors`; a path without one gets `.lct` for a tensor, `.lcd` for a state dict; an
    unknown suffix is an error. Arrays are copied to the host with their dtype.

    The file is replaced atomically: the bytes go to a new hidden file `.<name>.<random>.tmp`
    in the same folder, created exclusively (never opening anything already there, a planted
    symlink included), fsync'd, then renamed over `path` (and the folder fsync'd). So a reader,
    a crash or a `kill -9` at any moment sees the old file or the new one, whole; a failed
    save (an error, `KeyboardInterrupt`) removes its temporary and leaves the old file as it
    was; concurrent saves to one path all succeed, the last one's state remaining. An existing
    file's permission bits are kept; a new file gets `0o666` less the umask, as `open()`
    gives. If `path` is a symlink, the link itself is replaced by the file (what it pointed
    to is left untouched, where Lucid's `open(path, "wb")` writes through it). A killed save
    can leave its `.tmp` file behind; nothing reads or removes it, and it may be deleted.

    !!! note
        safetensors files may hold bfloat16 and float8 arrays (JAX and PyTorch read them), but
        `lucid.load` reads safetensors through numpy, which has neither: cast to float32 first
        for a file Lucid must read.

    Args:
        obj: a tensor, a [`Module`][lucid_jax.nn.Module] or a state dict.
        path: where to write.
        safetensors: write the safetensors format instead of Lucid's pickle.

    Returns:
        The absolute path written (with the suffix chosen).

    Raises:
        TypeError: `obj` is not something the suffix can hold (as Lucid: a tensor for `.lct`,
            a state dict for `.lcd`/`.safetensors`), or has a non-string key or a value of a
            dtype the format cannot store.
        ValueError: the suffix is not `.lct`, `.lcd` or `.safetensors`; or a safetensors
            file would hold a name its readers refuse (`"__metadata__"`, a string with an
            unpaired surrogate) or a header over 100 MB.
        OSError: the file cannot be written (a missing folder, no permission, a folder at
            `path`, a full disk): the system's subclass (`FileNotFoundError`, ...), its
            filename `path`, never the temporary's.

    Examples:
        >>> import tempfile, pathlib
        >>> from collections import OrderedDict
        >>> import jax.numpy as jnp
        >>> import lucid_jax
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> state = OrderedDict([("0.weight", jnp.ones(3)), ("0.bias", jnp.zeros(3))])
        >>> lucid_jax.save(state, folder / "model.lcd", safetensors=True).name
        'model.safetensors'
        >>> list(lucid_jax.load(folder / "model.safetensors"))         # sorted, as Lucid's
        ['0.bias', '0.weight']
    """
    from lucid_jax.nn import Module

    path = Path(path)
    if safetensors:
        path = path.with_suffix(".safetensors")
    is_tensor = _is_tensor(obj)
    if isinstance(obj, Module):
        obj = obj.state_dict()
    if path.suffix == "":
        if is_tensor:
            path = path.with_suffix(".lct")
        elif isinstance(obj, Mapping):
            path = path.with_suffix(".lcd")
        else:
            raise TypeError(
                f"lucid_jax.save: cannot infer the file extension of {path} for a "
                f"{type(obj).__name__}: give a full path, or save a tensor (jax.Array), a "
                "Module or a state dict."
            )

    if path.suffix == ".lct":
        if not is_tensor:
            raise TypeError(
                f"lucid_jax.save: a .lct file holds a tensor (jax.Array, numpy array or "
                f"Buffer); got a {type(obj).__name__} for {path}."
            )
        content: Any = _to_numpy(obj, path, "the tensor", pickled=True)
        payload = _pickle_record("Tensor", content)
    elif path.suffix in (".lcd", ".safetensors"):
        if not isinstance(obj, Mapping):
            raise TypeError(
                f"lucid_jax.save: a {path.suffix} file holds a state dict (a Module or a "
                f"mapping of names to arrays); got a {type(obj).__name__} for {path}."
            )
        pickled = path.suffix == ".lcd"
        for name in obj:
            if not isinstance(name, str):
                raise TypeError(
                    f"lucid_jax.save: state dict keys must be strings; got {name!r} "
                    f"({type(name).__name__}) for {path}."
                )
        arrays = [
            (name, _to_numpy(value, path, repr(name), pickled)) for name, value in obj.items()
        ]
        if pickled:
            kind = (
                "OrderedDict"
                if isinstance(obj, OrderedDict) or not isinstance(obj, dict)
                else "dict"
            )
            content = OrderedDict(arrays) if kind == "OrderedDict" else dict(arrays)
            payload = _pickle_record(kind, content)
        else:
            try:
                payload = _safetensors.encode(dict(arrays))
            except ValueError as error:
                raise ValueError(f"lucid_jax.save: cannot write {path}: {error}.") from None
    else:
        raise ValueError(
            f"lucid_jax.save: unsupported file extension {path.suffix!r} in {path}; expected "
            "'.lct' (a tensor), '.lcd' (a state dict) or '.safetensors'."
        )
    write_replacing(path, payload)
    return path.resolve()


def _is_tensor(obj: Any) -> bool:
    return isinstance(obj, (jax.Array, np.ndarray)) or hasattr(obj, "__jax_array__")


def _to_numpy(value: Any, path: Path, what: str, pickled: bool) -> np.ndarray:
    if hasattr(value, "__jax_array__"):
        value = value.__jax_array__()
    if not isinstance(value, (jax.Array, np.ndarray, np.generic)):
        raise TypeError(
            f"lucid_jax.save: {what} must be an array (jax.Array or numpy array); got a "
            f"{type(value).__name__} for {path}."
        )
    array = np.asarray(value)
    storable = (
        array.dtype.kind in _ARRAY_KINDS
        if pickled
        else _safetensors.dtype_name(array.dtype) is not None
    )
    if not storable:
        hint = (
            "Lucid's pickled files hold numpy's own dtypes; cast it, or save with safetensors=True"
            if pickled
            else "safetensors holds bool, (u)int8-64, float16/32/64, complex64, bfloat16 and float8"
        )
        raise TypeError(
            f"lucid_jax.save: {what} has dtype {array.dtype}, which {path.suffix} cannot "
            f"store ({hint})."
        )
    return array


def _pickle_record(kind: str, content: Any) -> bytes:
    record = {"type": kind, "format_version": FORMAT_VERSION, "content": content}
    return pickle.dumps(record, protocol=PICKLE_PROTOCOL)
