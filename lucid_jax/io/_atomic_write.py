"""Replace a file's contents all at once: readers see the old file or the new one, never a mix.

The bytes go to a new temporary file in the destination's folder, created exclusively
(`O_CREAT | O_EXCL | O_NOFOLLOW`) under a random name, so nothing planted in the folder (a
symlink, a file) is ever opened or written through. It is flushed and fsync'd, then renamed over
the destination with `os.replace` (atomic on POSIX and Windows), and the folder is fsync'd so
the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

#: How a temporary is named: `.<first bytes of the name>.<random>.tmp`, a hidden file that no
#: suffix rule of `load` reads. Only the name's first bytes are kept, so the temporary stays
#: under the file system's 255-byte limit whatever the user's name.
TEMPORARY_PATTERN = ".{stem}.{random}.tmp"
_KEPT_NAME_BYTES = 200
_ATTEMPTS = 100
#: `open()`'s mode for a new file: the process's umask then applies, as it does to `open()`.
_NEW_FILE_MODE = 0o666


def write_replacing(path: Path, payload: bytes, caller: str = "lucid_jax.save") -> None:
    """Make `path` hold `payload`, atomically.

    - A kill at any moment leaves `path` as it was or as it is meant to be, never torn; it can
      leave a temporary `.<name>.<random>.tmp` beside it (nothing else removes one).
    - Any error (including `KeyboardInterrupt`) removes the temporary and leaves `path` as it
      was; an `OSError` is raised again with `path` as its filename, never the temporary's.
    - An existing regular file's permission bits are kept; a new file gets `0o666` less the
      umask, as `open()` gives it.
    - If `path` is a symlink, the link itself is replaced by the new file; what it pointed to
      is not touched.
    - Concurrent calls for one `path` all succeed; the last rename wins, whole.

    Raises:
        OSError: the folder is missing or not writable, `path` is a folder, the disk is
            full, ...: the subclass the system reports (`FileNotFoundError`,
            `PermissionError`, `IsADirectoryError`, ...), naming `path`.
    """
    folder = path.parent
    temporary: Path | None = None
    try:
        mode = _kept_mode(path)
        descriptor, temporary = _create_temporary(folder, path.name)
        with os.fdopen(descriptor, "wb") as file:
            if mode is not None and hasattr(os, "fchmod"):  # (Windows before Python 3.13)
                os.fchmod(file.fileno(), mode)
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
        _fsync_folder(folder)
    except OSError as error:
        raise OSError(
            error.errno, f"{caller} could not write the file ({error.strerror})", str(path)
        ) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _kept_mode(path: Path) -> int | None:
    """The permission bits of the regular file at `path` (not following a link), else None."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(status.st_mode) & 0o777 if stat.S_ISREG(status.st_mode) else None


def _random_part() -> str:
    return secrets.token_hex(8)


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    stem = os.fsencode(name)[:_KEPT_NAME_BYTES].decode("utf-8", errors="ignore")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for optional in ("O_NOFOLLOW", "O_CLOEXEC", "O_BINARY"):  # POSIX's, or Windows'
        flags |= getattr(os, optional, 0)
    for _ in range(_ATTEMPTS):
        candidate = folder / TEMPORARY_PATTERN.format(stem=stem, random=_random_part())
        try:
            return os.open(candidate, flags, _NEW_FILE_MODE), candidate
        except FileExistsError:  # anything already there, a symlink included, is never opened
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_ATTEMPTS} tries")


def _fsync_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a folder cannot be opened or fsync'd
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot
            raise
    finally:
        os.close(descriptor)
