"""`save` replaces a file atomically and safely (issue 17, point 4).

References: the file system itself (what `os.lstat`, `os.readlink` and the bytes on disk say),
and `load`, which must read back one whole state whatever happened to the writer.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import lucid_jax
from lucid_jax.io import _atomic_write

WRITER = Path(_atomic_write.__file__)
pytestmark = pytest.mark.skipif(
    os.name != "posix", reason="POSIX permission bits, symlinks and SIGKILL are what is tested"
)


@pytest.fixture
def x64():
    # The states are float64, as Lucid's; compared bit for bit after loading.
    with jax.enable_x64(True):
        yield


def _state(value: float, size: int = 4) -> dict:
    return {"w": np.full(size, value), "b": np.arange(3.0) + value}


def _equals(loaded, state) -> bool:
    return list(loaded) == list(state) and all(
        np.array_equal(np.asarray(loaded[k]), state[k]) for k in state
    )


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.usefixtures("x64")
def test_symlinks_planted_at_temporary_names_are_never_written_through(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    elsewhere = tmp_path / "created-through-a-dangling-link"
    planted = {"aaaa": victim, "bbbb": elsewhere}
    for random_part, target in planted.items():
        (tmp_path / f".s.lcd.{random_part}.tmp").symlink_to(target)
    names = iter([*planted, "cccc"])  # the attacker guessed the first two names drawn
    monkeypatch.setattr(_atomic_write, "_random_part", lambda: next(names))

    path = lucid_jax.save(_state(1.0), tmp_path / "s.lcd")

    assert victim.read_bytes() == b"precious"
    assert not elsewhere.exists()
    for random_part, target in planted.items():
        assert os.readlink(tmp_path / f".s.lcd.{random_part}.tmp") == str(target)
    assert _equals(lucid_jax.load(path), _state(1.0))
    assert not (tmp_path / ".s.lcd.cccc.tmp").exists()


@pytest.mark.usefixtures("x64")
def test_the_old_predictable_temporary_name_is_left_alone(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / f".s.lcd.{os.getpid()}.tmp").symlink_to(victim)  # what the old save opened
    lucid_jax.save(_state(2.0), tmp_path / "s.lcd")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / f".s.lcd.{os.getpid()}.tmp").is_symlink()


@pytest.mark.usefixtures("x64")
def test_a_symlink_at_the_destination_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target.lcd"
    target.write_bytes(b"not touched")
    link = tmp_path / "s.lcd"
    link.symlink_to(target)
    lucid_jax.save(_state(3.0), link)
    assert not link.is_symlink() and link.is_file()
    assert target.read_bytes() == b"not touched"
    assert _equals(lucid_jax.load(link), _state(3.0))


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_an_existing_files_mode_is_kept(tmp_path, mode):
    path = tmp_path / "s.lcd"
    path.write_bytes(b"old")
    path.chmod(mode)
    lucid_jax.save(_state(1.0), path)
    assert stat.S_IMODE(os.lstat(path).st_mode) == mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_a_new_file_gets_opens_mode_under_the_umask(tmp_path, umask):
    reference = tmp_path / "opened"
    previous = os.umask(umask)
    try:
        reference.write_bytes(b"")  # what open() makes under this umask
        path = lucid_jax.save(_state(1.0), tmp_path / "s.lcd")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.lstat(path).st_mode) == stat.S_IMODE(os.lstat(reference).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666 & ~umask


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", ["n" * 246 + ".lcd", "\N{GRINNING FACE}" * 62 + ".lcd"])
def test_names_up_to_the_file_systems_limit_work(tmp_path, name):
    assert len(os.fsencode(name)) in (250, 252)
    path = lucid_jax.save(_state(4.0), tmp_path / name)
    assert path.name == name
    assert _equals(lucid_jax.load(path), _state(4.0))
    assert _temporaries(tmp_path) == []


def test_a_missing_folder_is_reported_under_the_users_path(tmp_path):
    path = tmp_path / "absent" / "s.lcd"
    with pytest.raises(FileNotFoundError) as raised:
        lucid_jax.save(_state(1.0), path)
    assert raised.value.filename == str(path)
    assert str(path) in str(raised.value) and ".tmp" not in str(raised.value)


def test_a_name_over_the_file_systems_limit_is_reported_under_the_users_path(tmp_path):
    path = tmp_path / ("n" * 300 + ".lcd")
    with pytest.raises(OSError) as raised:
        lucid_jax.save(_state(1.0), path)
    assert raised.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_at_the_destination_is_reported_under_the_users_path(tmp_path):
    path = tmp_path / "s.lcd"
    path.mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        lucid_jax.save(_state(1.0), path)
    assert raised.value.filename == str(path)
    assert _temporaries(tmp_path) == []


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_an_interrupted_save_removes_its_temporary_and_keeps_the_file(tmp_path, monkeypatch, error):
    path = lucid_jax.save(_state(1.0), tmp_path / "s.lcd")
    before = path.read_bytes()

    def failing_fsync(descriptor):
        raise error

    monkeypatch.setattr(_atomic_write.os, "fsync", failing_fsync)
    with pytest.raises(type(error)) as raised:
        lucid_jax.save(_state(2.0), path)
    if isinstance(error, OSError):
        assert raised.value.filename == str(path) and raised.value.errno == 28
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.lcd"]


@pytest.mark.usefixtures("x64")
def test_threads_saving_one_path_all_succeed_and_leave_one_whole_state(tmp_path):
    path = tmp_path / "s.lcd"
    threads_count, saves_each = 8, 20
    states = {i: _state(float(i), size=2_000) for i in range(threads_count)}
    errors: list[BaseException] = []
    returned = [0] * threads_count
    start = threading.Barrier(threads_count)

    def saver(i):
        start.wait()
        for _ in range(saves_each):
            try:
                lucid_jax.save(states[i], path)
                returned[i] += 1
            except BaseException as error:  # every failure is the finding
                errors.append(error)

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert returned == [saves_each] * threads_count
    loaded = lucid_jax.load(path)
    assert sum(_equals(loaded, state) for state in states.values()) == 1
    assert _temporaries(tmp_path) == []


_CHILD = r"""
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("atomic_write", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
target, payloads = Path(sys.argv[2]), [Path(p).read_bytes() for p in sys.argv[4:]]
count = int(sys.argv[3])
print("ready", flush=True)
i = 0
while count < 0 or i < count:
    module.write_replacing(target, payloads[i % len(payloads)])
    i += 1
"""


def _writer(target: Path, count: int, payloads: list[Path]) -> subprocess.Popen:
    # The writer alone, loaded from its file: a child without JAX starts in milliseconds.
    arguments = [str(WRITER), str(target), str(count), *map(str, payloads)]
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, *arguments], stdout=subprocess.PIPE, text=True
    )


def _payloads(tmp_path: Path, states: list[dict]) -> list[Path]:
    folder = tmp_path / "payloads"
    folder.mkdir()
    return [lucid_jax.save(state, folder / f"{i}.lcd") for i, state in enumerate(states)]


@pytest.mark.usefixtures("x64")
def test_processes_saving_one_path_all_succeed_and_leave_one_whole_state(tmp_path):
    states = [_state(float(i), size=50_000) for i in range(4)]
    payloads = _payloads(tmp_path, states)
    target = tmp_path / "s.lcd"
    writers = [_writer(target, 30, payloads[i : i + 1]) for i in range(4)]
    for writer in writers:
        writer.communicate(timeout=60)
    assert [writer.returncode for writer in writers] == [0] * 4
    loaded = lucid_jax.load(target)
    assert sum(_equals(loaded, state) for state in states) == 1
    assert _temporaries(tmp_path) == []


@pytest.mark.long_running
@pytest.mark.usefixtures("x64")
def test_kill_9_at_any_moment_leaves_the_old_or_the_new_file(tmp_path):
    # 2 x 8 MB states, saved in turn by a child killed with SIGKILL at a random moment.
    kills = 20
    states = [_state(1.0, size=1_000_000), _state(2.0, size=1_000_000)]
    payloads = _payloads(tmp_path, states)
    target = tmp_path / "s.lcd"
    target.write_bytes(payloads[0].read_bytes())
    seen = {0: 0, 1: 0}
    generator = random.Random(17)
    for _ in range(kills):
        writer = _writer(target, -1, payloads)
        assert writer.stdout.readline() == "ready\n"
        time.sleep(generator.uniform(0.0, 0.25))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL
        loaded = lucid_jax.load(target)
        whole = [i for i, state in enumerate(states) if _equals(loaded, state)]
        assert len(whole) == 1
        seen[whole[0]] += 1
    leftovers = _temporaries(tmp_path)
    # A kill between creating the temporary and renaming it leaves one hidden .tmp file.
    assert len(leftovers) <= kills
    assert all(name.startswith(".s.lcd.") and name.endswith(".tmp") for name in leftovers)
    print(
        f"{kills} kills, {kills} loads whole: {seen[0]} state 1.0, {seen[1]} state 2.0; "
        f"{len(leftovers)} temporaries left"
    )
