"""Record a short SGD training run with the real Lucid 2.14.5 (float64, its default).

The model is what a Lucid user writes: their own Parameter-holding layers (a 1x1 "linear over
channels" and a per-channel affine) around two `InstanceNorm2d`, inside `Sequential`,
`ModuleList` and `ModuleDict`, trained on MSE with `lucid.optim.SGD` and `loss.backward()`.
`tests/test_lucid_training.py` trains the same model with lucid-jax and compares step by step.

Writes `lucid_2_14_5_training.npz` next to this script:
- `init/<key>`: the state loaded before the first step (every `state_dict` key);
- `x<s>`, `target<s>`: the batch of step s (float64);
- `loss`: the loss of each step, shape (STEPS,);
- `step<s>/<key>`: the full `state_dict` after step s (forward, backward, SGD update).
and `lucid_2_14_5_training.json`: the keys in Lucid's order, the learning rate, the steps.

Run it with the real Lucid (see the lucid_oracle README in the shared folder):

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<shared>/lucid_oracle <lucid-venv>/bin/python \
        tests/data/record_lucid_training.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
NAME = "lucid_2_14_5_training"
STEPS = 8
LR = 0.1
N, C_IN, C, H, W = 3, 3, 4, 5, 6


def build_net():
    """The model, built with Lucid (imported here, so that pytest can import this file)."""
    import lucid
    import lucid.nn as nn

    class ChannelLinear(nn.Module):
        """A 1x1 convolution written by hand: `y[n, o] = sum_c weight[o, c] x[n, c] + bias[o]`."""

        def __init__(self, in_channels: int, out_channels: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(np.zeros((out_channels, in_channels)))
            self.bias = nn.Parameter(np.zeros(out_channels))

        def forward(self, x):
            channels_last = lucid.transpose(x, (0, 2, 3, 1))
            mixed = lucid.matmul(channels_last, lucid.transpose(self.weight, (1, 0))) + self.bias
            return lucid.transpose(mixed, (0, 3, 1, 2))

    class ChannelAffine(nn.Module):
        """`y[n, c] = x[n, c] * scale[c] + shift[c]`, then tanh."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(np.ones(channels))
            self.shift = nn.Parameter(np.zeros(channels))

        def forward(self, x):
            c = self.scale.shape[0]
            return lucid.tanh(x * self.scale.reshape(1, c, 1, 1) + self.shift.reshape(1, c, 1, 1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(ChannelLinear(C_IN, C), nn.InstanceNorm2d(C))
            self.blocks = nn.ModuleList([ChannelAffine(C)])
            self.head = nn.ModuleDict({"norm": nn.InstanceNorm2d(C, momentum=0.3)})

        def forward(self, x):
            x = self.body(x)
            for block in self.blocks:
                x = block(x)
            return self.head["norm"](x)

    return Net()


def main() -> None:
    import lucid
    import lucid.nn.functional as F
    import lucid.optim as optim

    rng = np.random.default_rng(20261125)
    model = build_net()
    keys = list(model.state_dict())
    # Every entry float64 and away from the defaults, so each one matters.
    init = {}
    for key, value in model.state_dict().items():
        shape = np.shape(value)
        if key.endswith("running_var"):
            init[key] = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("running_mean"):
            init[key] = rng.normal(0.0, 0.5, shape)
        else:
            init[key] = rng.normal(0.0 if "bias" in key or "shift" in key else 1.0, 0.5, shape)
    model.load_state_dict(init)
    arrays = {f"init/{k}": np.asarray(v, np.float64) for k, v in init.items()}

    optimizer = optim.SGD(model.parameters(), lr=LR)
    losses = []
    for step in range(STEPS):
        x = rng.normal(0.5, 2.0, (N, C_IN, H, W))
        target = rng.normal(0.0, 1.0, (N, C, H, W))
        arrays[f"x{step}"], arrays[f"target{step}"] = x, target
        optimizer.zero_grad()
        loss = F.mse_loss(model(lucid.Tensor(x)), lucid.Tensor(target))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        for key, value in model.state_dict().items():
            value = np.asarray(value)
            assert value.dtype == np.float64, (key, value.dtype)
            arrays[f"step{step}/{key}"] = value
    arrays["loss"] = np.asarray(losses)
    np.savez_compressed(HERE / f"{NAME}.npz", **arrays)
    meta = {
        "lucid": lucid.__version__ if hasattr(lucid, "__version__") else "2.14.5",
        "script": Path(__file__).name,
        "keys": keys,
        "steps": STEPS,
        "lr": LR,
        "shapes": {"x": [N, C_IN, H, W], "target": [N, C, H, W]},
        "losses": losses,
    }
    (HERE / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("keys:", keys)
    print("losses:", losses)


if __name__ == "__main__":
    main()
