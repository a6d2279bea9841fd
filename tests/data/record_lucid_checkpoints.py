"""Record checkpoints written by the real Lucid 2.14.5, and check that Lucid reads ours.

Run with Lucid's interpreter (see ``/work/shared/lucid_oracle/README.md``; ``safetensors`` must
be importable there, e.g. ``pip install --target DIR safetensors`` and ``DIR`` on
``PYTHONPATH``), from the repository root::

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<lucid_oracle>:<safetensors dir> \\
        <lucid-python> tests/data/record_lucid_checkpoints.py record

writes, next to this script:

- ``lucid_2_14_5_instancenorm2d.lcd`` / ``.safetensors``: ``InstanceNorm2d(3)``'s state dict
  after one SGD step in training mode (weight, bias, running_mean, running_var; float64);
- ``lucid_2_14_5_sequential.lcd`` / ``.safetensors``: a ``Sequential(Conv2d(3, 3, 1),
  InstanceNorm2d(3))`` after the same step, so the keys are dotted (``0.weight``, ...);
- ``lucid_2_14_5_tensor.lct``: a float64 Tensor; ``lucid_2_14_5_tensor_f32.lct``: a float32 one;
- ``lucid_2_14_5_checkpoints.npz``: what Lucid held (``<file stem>/<key>``) before saving, plus
  the step's input ``x`` and the module's momentum, read back by ``tests/test_checkpoint.py``;
- ``lucid_2_14_5_checkpoints.json``: the order of the keys ``lucid.load`` returned per file.

``... record_lucid_checkpoints.py verify DIR`` loads with the real ``lucid.load`` every file in
``DIR`` that ``tests/test_checkpoint.py`` wrote with ``lucid_jax.save`` (set
``LUCID_JAX_CHECKPOINT_DIR=DIR`` when running that test to keep them) and compares each with the
``.npz`` of the arrays it was written from; it prints one line per file and exits non-zero on any
difference.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path

import lucid
import lucid.nn as nn
import lucid.optim as optim
import numpy as np

HERE = Path(__file__).resolve().parent
PREFIX = "lucid_2_14_5_"


def _one_training_step(model: nn.Module, x: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.train()
    y = model(lucid.Tensor(x))
    upstream = lucid.Tensor(rng.standard_normal(y.shape))
    loss = (y * upstream).sum()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def record() -> None:
    rng = np.random.default_rng(2145)
    x = rng.standard_normal((2, 3, 4, 5)) * 2.0 + 0.5

    norm = nn.InstanceNorm2d(3)
    norm.weight.data = rng.uniform(0.5, 1.5, 3)
    norm.bias.data = rng.uniform(-0.5, 0.5, 3)
    _one_training_step(norm, x, seed=1)

    sequential = nn.Sequential(nn.Conv2d(3, 3, 1), nn.InstanceNorm2d(3))
    _one_training_step(sequential, x, seed=2)

    tensor64 = lucid.Tensor(rng.standard_normal((2, 3)))
    tensor32 = lucid.Tensor(rng.standard_normal((4,)), dtype=lucid.Float32)

    expected: dict[str, np.ndarray] = {"x": x, "momentum": np.asarray(norm.momentum)}
    key_order: dict[str, list[str]] = {}
    for name, module in (("instancenorm2d", norm), ("sequential", sequential)):
        state = module.state_dict()
        for key, value in state.items():
            expected[f"{PREFIX}{name}/{key}"] = np.array(value)
        for suffix, safetensors in ((".lcd", False), (".safetensors", True)):
            path = lucid.save(module, HERE / f"{PREFIX}{name}{suffix}", safetensors=safetensors)
            loaded = lucid.load(path)
            key_order[path.name] = list(loaded)
            _check_equal(path.name, state, loaded)
    for name, tensor in (("tensor", tensor64), ("tensor_f32", tensor32)):
        expected[f"{PREFIX}{name}"] = tensor.numpy().copy()
        path = lucid.save(tensor, HERE / f"{PREFIX}{name}")  # Lucid adds .lct
        loaded = lucid.load(path)
        _check_equal(path.name, {"": tensor.numpy()}, {"": loaded.numpy()})
        print(f"{path.name}: lucid.load returned {type(loaded).__name__} {loaded.dtype}")

    np.savez(HERE / f"{PREFIX}checkpoints.npz", **expected)
    (HERE / f"{PREFIX}checkpoints.json").write_text(
        json.dumps({"lucid": version("lucid-dl"), "key_order": key_order}, indent=1) + "\n"
    )
    for key, value in expected.items():
        print(f"{key}: {value.dtype} {value.shape}")


def _check_equal(label: str, expected, loaded) -> None:
    if list(expected) != list(loaded) and sorted(expected) != sorted(loaded):
        raise SystemExit(f"{label}: keys {list(loaded)} != {list(expected)}")
    for key, value in expected.items():
        got = loaded[key]
        got = got.numpy() if hasattr(got, "numpy") else got
        if not isinstance(got, np.ndarray):
            raise SystemExit(f"{label}[{key}]: lucid.load gave {type(got).__name__}")
        if got.dtype != np.asarray(value).dtype or not np.array_equal(got, value):
            raise SystemExit(f"{label}[{key}]: {got.dtype} {got} != {value}")


def verify(directory: Path) -> None:
    """Load with ``lucid.load`` each file ``lucid_jax.save`` wrote, against its ``.npz``."""
    checked = 0
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".lcd", ".lct", ".safetensors"):
            continue
        with np.load(path.with_name(path.name + ".npz")) as npz:
            expected = OrderedDict((key, npz[key]) for key in npz.files)
        loaded = lucid.load(path)
        if path.suffix == ".lct":
            if not isinstance(loaded, lucid.Tensor):
                raise SystemExit(f"{path.name}: lucid.load gave {type(loaded).__name__}")
            _check_equal(path.name, {"": expected["tensor"]}, {"": loaded.numpy()})
        else:
            if not isinstance(loaded, dict):
                raise SystemExit(f"{path.name}: lucid.load gave {type(loaded).__name__}")
            _check_equal(path.name, expected, loaded)
            for model in (
                nn.InstanceNorm2d(3),
                nn.Sequential(nn.Conv2d(3, 3, 1), nn.InstanceNorm2d(3)),
            ):
                if set(loaded) == set(model.state_dict()):
                    model.load_state_dict(loaded)
                    _check_equal(
                        f"{path.name} in {type(model).__name__}", expected, model.state_dict()
                    )
                    print(f"{path.name}: {type(model).__name__}.load_state_dict OK")
        print(f"{path.name}: lucid.load read {type(loaded).__name__} OK")
        checked += 1
    if not checked:
        raise SystemExit(f"no checkpoint found in {directory}")
    print(f"{checked} files read by lucid {version('lucid-dl')}: all equal")


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"]:
        record()
    elif sys.argv[1:2] == ["verify"] and len(sys.argv) == 3:
        verify(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
