"""Scale-out across processes: two processes of four host devices, one eight-device mesh.

Both processes run ``multiprocess_steps.py`` (joined by ``jax.distributed.initialize`` on
127.0.0.1, collectives over Gloo); their batch-sharded and instance-split training steps must
match this process's unsharded computation of the same step, which is itself checked against
a float64 reference.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from multiprocess_steps import PROCESSES, TOLERANCE, inputs, single_process
from sharding_cases import float64_reference, rel_err

# One worker for the module: its two module-scoped runs (the two processes, the single-process
# reference) are shared by its tests, which xdist would otherwise split, running each twice.
pytestmark = [pytest.mark.xdist_group("multiprocess"), pytest.mark.long_running]

STEPS = Path(__file__).with_name("multiprocess_steps.py")
#: Start-up, the coordinator handshake and two compilations take 5-15 s on two busy cores.
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_processes(tmp_path: Path) -> list[dict[str, np.ndarray]]:
    """Both processes' results; on a failure or a timeout, both are killed and reported."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # each process sets its own four devices
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    port = _free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(PROCESSES)]
    logs = [(tmp_path / f"process{i}.log").open("w+") for i in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(STEPS), str(i), str(port), str(outs[i])],
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(PROCESSES)
    ]
    try:
        codes = [proc.wait(timeout=TIMEOUT_S) for proc in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read()[-3000:])
        log.close()
    report = "\n".join(f"--- process {i}:\n{text}" for i, text in enumerate(texts))
    assert codes is not None, f"the processes ran past {TIMEOUT_S} s and were killed\n{report}"
    assert codes == [0] * PROCESSES, f"exit codes {codes}\n{report}"
    results = []
    for out in outs:
        with np.load(out) as npz:
            results.append({key: npz[key] for key in npz.files})
    return results


@pytest.fixture(scope="module")
def process_results(tmp_path_factory) -> list[dict[str, np.ndarray]]:
    return _run_processes(tmp_path_factory.mktemp("multiprocess"))


@pytest.fixture(scope="module")
def one_process() -> dict[str, np.ndarray]:
    return single_process(inputs())


def test_the_reference_step_is_right(one_process) -> None:
    # The unsharded step against float64: the cotangent of mean((y - target)**2) is
    # 2 (y - target) / size, pulled back through instance_norm.
    data = inputs()
    y = float64_reference({**data, "g": np.zeros_like(data["x"])}, channel_axis=1)["y"]
    dy = 2.0 * (y - data["target"]) / data["x"].size
    reference = float64_reference({**data, "g": dy}, channel_axis=1)
    assert rel_err(one_process["loss"], np.mean((y - data["target"]) ** 2)) <= 2e-5
    for key in ("rm", "rv", "dx", "dw", "db"):
        assert rel_err(one_process[key], reference[key]) <= 2e-5, key


@pytest.mark.parametrize("step", ["batch_sharded", "instance_split"])
def test_two_processes_match_one(process_results, one_process, step: str) -> None:
    assert [int(r["process_index"]) for r in process_results] == list(range(PROCESSES))
    for key, expected in one_process.items():
        if key in ("rm", "rv") and step == "instance_split":
            # One row per device, all equal: every shard holds the global running stats.
            for r in process_results:
                rows = r[f"{step}/{key}"]
                assert rows.shape == (8, *expected.shape), (key, rows.shape)
                for row in rows:
                    assert rel_err(row, expected) <= TOLERANCE, (step, key)
            continue
        for index, r in enumerate(process_results):
            actual = r[f"{step}/{key}"]
            assert actual.shape == expected.shape, (step, key, index, actual.shape)
            assert rel_err(actual, expected) <= TOLERANCE, (step, key, index)
