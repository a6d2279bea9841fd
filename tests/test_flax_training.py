"""End to end: a small CNN with our InstanceNorm learns sklearn's 8x8 digits (linen and nnx).

Real data that ships with scikit-learn (1797 images, 10 classes). Each test trains for
``STEPS`` Adam steps (a few seconds on CPU) and checks what training must show: the loss
falls, the running statistics settle (their step-to-step change shrinks; for linen, they also
end near the training set's statistics under the final weights) and eval mode (running
statistics) classifies held-out digits.
"""

from __future__ import annotations

import pytest

# Skips the module, with this reason, where only the core is installed.
pytest.importorskip("flax", reason="needs the flax extra (pip install '.[flax]')")

from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

from lucid_jax.flax import linen as lucid_linen
from lucid_jax.flax import nnx as lucid_nnx

STEPS = 150
BATCH = 64
N_TRAIN = 1500
#: Optimising the compiled programs (Flax's truncated-normal initialisers above all: 4.5 s for
#: one kernel shape) was most of these tests' time (`conftest.xla_optimisations_off`); the
#: training curves agree with the optimised run's to 4 digits.
pytestmark = pytest.mark.usefixtures("unoptimised_module")


@pytest.fixture(scope="module")
def digits():
    # Imported here, not at collection: sklearn takes ~2 s to import in every xdist worker.
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    images = (data.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), NHWC
    labels = data.target.astype(np.int32)
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(N_TRAIN, BATCH, replace=False) for _ in range(STEPS)]


def _max_change(old, new):
    # In numpy: eagerly, each JAX operation would compile once per leaf shape.
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
    )


def _check_history(losses, changes):
    losses, changes = np.asarray(losses), np.asarray(changes)
    assert np.isfinite(losses).all()
    # The loss falls: final (last 10 steps) well under initial (first 5).
    assert losses[-10:].mean() < 0.5 * losses[:5].mean(), (losses[:5], losses[-10:])
    # The running statistics settle: late step-to-step changes much smaller than early ones.
    assert changes[-10:].mean() < 0.25 * changes[:10].mean(), (changes[:10], changes[-10:])


# --- linen -------------------------------------------------------------------------------------


class LinenCNN(nn.Module):
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool):
        for features, stride in ((8, 1), (16, 2)):
            x = nn.Conv(features, (3, 3), strides=stride)(x)
            x = lucid_linen.InstanceNorm.lucid(momentum=self.momentum)(
                x, use_running_average=not train
            )
            x = nn.relu(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class TrainState(train_state.TrainState):
    """Flax's training state with the layers' running statistics beside the parameters."""

    batch_stats: Any


def test_linen_cnn_learns_digits_and_running_stats_settle(digits):
    """Trained the way Flax's guides train BatchNorm models: a TrainState with batch_stats."""
    x_train, y_train, x_test, y_test = digits
    model = LinenCNN()
    # Jitted, here and below: eagerly, each call compiled its operations one by one (some 60).
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), x_train[:2], train=False
    )
    state = jax.jit(
        lambda variables: TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            tx=optax.adam(1e-2),
        )
    )(variables)

    @jax.jit
    def step(state, x, y):
        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            logits, updates = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(batch_stats=batch_stats), loss

    losses, changes = [], []
    for idx in _batches():
        new_state, loss = step(state, x_train[idx], y_train[idx])
        changes.append(_max_change(state.batch_stats, new_state.batch_stats))
        state = new_state
        losses.append(float(loss))
    _check_history(losses, changes)
    params, batch_stats = state.params, state.batch_stats

    # The running stats end near the training set's statistics under the final weights
    # (momentum 0: one update replaces them by the full-batch averages): much nearer than
    # where they started (zeros/ones).
    _, exact = jax.jit(LinenCNN(momentum=0.0).apply, static_argnames=("train", "mutable"))(
        {"params": params, "batch_stats": batch_stats},
        x_train,
        train=True,
        mutable=("batch_stats",),
    )
    for running, target, start in zip(
        jax.tree.leaves(batch_stats),
        jax.tree.leaves(exact["batch_stats"]),
        jax.tree.leaves(variables["batch_stats"]),
        strict=True,
    ):
        running, target, start = (np.asarray(a) for a in (running, target, start))
        assert np.linalg.norm(running - target) < 0.15 * np.linalg.norm(start - target)

    logits = jax.jit(model.apply, static_argnames="train")(
        {"params": params, "batch_stats": batch_stats}, x_test, train=False
    )
    assert float((np.asarray(logits).argmax(-1) == y_test).mean()) > 0.85


# --- nnx ---------------------------------------------------------------------------------------


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.norm1 = lucid_nnx.InstanceNorm.lucid(8, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
        self.norm2 = lucid_nnx.InstanceNorm.lucid(16, rngs=rngs)
        self.head = nnx.Linear(16 * 4 * 4, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.norm1(self.conv1(x)))
        x = nnx.relu(self.norm2(self.conv2(x)))
        return self.head(x.reshape(x.shape[0], -1))


def test_nnx_cnn_learns_digits_and_running_stats_settle(digits):
    x_train, y_train, x_test, y_test = digits

    def create():
        model = NnxCNN(nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    # Built in one jitted program: eagerly, each initialiser compiled its own (some 20).
    model, optimizer = nnx.jit(create)()

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    losses, changes = [], []
    for idx in _batches(seed=1):
        before = nnx.to_pure_dict(nnx.clone(nnx.state(model, nnx.BatchStat)))
        losses.append(float(train_step(model, optimizer, x_train[idx], y_train[idx])))
        changes.append(_max_change(before, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))))
    _check_history(losses, changes)

    model.eval()
    logits = nnx.jit(lambda model, x: model(x))(model, x_test)
    assert float((np.asarray(logits).argmax(-1) == y_test).mean()) > 0.85
