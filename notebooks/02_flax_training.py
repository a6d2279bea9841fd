# ---
# jupyter:
#   colab:
#     provenance: []
#   jupytext:
#     notebook_metadata_filter: kernelspec,colab,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training a Flax CNN with lucid-jax's `InstanceNorm`
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lucid-jax/lucid-jax/blob/main/notebooks/02_flax_training.ipynb)
#
# A small convolutional network with `lucid_jax.flax.linen.InstanceNorm` layers, trained on
# scikit-learn's handwritten digits (8×8 images that ship inside scikit-learn: nothing is
# downloaded). Along the way:
#
# - the layer's variables: `params` (`scale`, `bias`) and `batch_stats` (`mean`, `var`);
# - a training loop that updates the running statistics (`mutable=["batch_stats"]`), with
#   loss curves and the running statistics over training;
# - Flax's momentum convention and how it maps to Lucid's;
# - train-mode versus eval-mode outputs (instance statistics versus running statistics).
#
# About 200 optimisation steps: well under a minute on a CPU.

# %%
# Install lucid-jax (with its Flax extra) if it is missing: from a lucid_jax-*.whl beside
# this notebook (build one with `make dist`; in Colab, upload it to the session's files),
# else from its repository. Where lucid-jax is installed this does nothing.
import glob
import importlib.util
import subprocess
import sys

REPOSITORY = "https://github.com/lucid-jax/lucid-jax"  # pyproject.toml's [project.urls]

if importlib.util.find_spec("lucid_jax") is None:
    wheels = sorted(glob.glob("lucid_jax-*.whl"))
    requirement = f"{wheels[-1]}[flax]" if wheels else f"lucid-jax[flax] @ git+{REPOSITORY}"
    print("installing", requirement)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)

import lucid_jax

print("lucid_jax", lucid_jax.__version__)

# %%
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

from lucid_jax.flax.linen import InstanceNorm

# %% [markdown]
# ## Data
#
# 1797 grey-scale 8×8 digits with values 0–16. We scale them to [0, 1], lay them out as
# Flax expects (`N, H, W, C`, channels last) and hold out 360 for testing.

# %%
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
labels = digits.target.astype(np.int32)
order = np.random.default_rng(0).permutation(len(images))
test_index, train_index = order[:360], order[360:]
x_train, y_train = jnp.asarray(images[train_index]), jnp.asarray(labels[train_index])
x_test, y_test = jnp.asarray(images[test_index]), jnp.asarray(labels[test_index])
print("train", x_train.shape, " test", x_test.shape)

fig, axes = plt.subplots(1, 10, figsize=(10, 1.3))
for ax, image, label in zip(axes, images[train_index][:10], labels[train_index][:10], strict=True):
    ax.imshow(image[..., 0], cmap="gray_r")
    ax.set_title(int(label))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The model
#
# Two convolutions, each followed by `InstanceNorm` and a ReLU (with 2×2 average pooling
# between them), then a linear classifier. `InstanceNorm` normalises each sample's each
# channel over its spatial positions (channels last: `channel_axis=-1`, the default).
#
# **Momentum conventions differ.** Flax's layers use
# `new = momentum * old + (1 - momentum) * batch`; Lucid's `momentum` is the weight of the
# *batch* (`new = momentum * batch + (1 - momentum) * old`). Flax `momentum=0.9` is Lucid's
# `momentum=0.1`; we use it so that the running statistics follow training closely (the
# Flax default, 0.99, averages over ~100 steps).
#
# By default the layer is Flax's `InstanceNorm` (no running statistics, `epsilon=1e-6`);
# `InstanceNorm.lucid(...)` is Lucid's behaviour: running statistics, `epsilon=1e-5`. Then
# `train=True` normalises with instance statistics and updates the running statistics;
# `train=False` (`use_running_average=True`) normalises with the running statistics, as
# Lucid's `InstanceNorm2d(track_running_stats=True)` does in eval mode.

# %%
MOMENTUM = 0.9  # Flax convention: Lucid's momentum 0.1


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(16, (3, 3), name="conv1")(x)
        x = InstanceNorm.lucid(momentum=MOMENTUM, use_running_average=not train, name="norm1")(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 8x8 -> 4x4
        x = nn.Conv(32, (3, 3), name="conv2")(x)
        x = InstanceNorm.lucid(momentum=MOMENTUM, use_running_average=not train, name="norm2")(x)
        x = nn.relu(x)
        return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))


model = CNN()
variables = model.init(jax.random.key(0), x_train[:1], train=False)
print(jax.tree.map(jnp.shape, variables["params"]["norm1"]))
print(jax.tree.map(jnp.shape, variables["batch_stats"]))

# %% [markdown]
# ## Training
#
# The training step applies the model with `mutable=["batch_stats"]` and returns the updated
# running statistics next to the loss. Every step we record the loss and `norm1`'s running
# statistics; every 10 steps, the test accuracy in both modes.

# %%
optimizer = optax.adam(3e-3)


@jax.jit
def train_step(params, batch_stats, opt_state, x, y):
    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss


@functools.partial(jax.jit, static_argnames="train")
def predict(params, batch_stats, x, train):
    # batch_stats is not mutable here: train mode uses instance stats and updates nothing.
    return model.apply({"params": params, "batch_stats": batch_stats}, x, train=train)


def accuracy(logits, y):
    return float((logits.argmax(axis=-1) == y).mean())


params, batch_stats = variables["params"], variables["batch_stats"]
opt_state = optimizer.init(params)
batch_rng = np.random.default_rng(1)
STEPS, BATCH = 200, 64
losses, mean_history, var_history = [], [], []
eval_steps, test_accuracy_train_mode, test_accuracy_eval_mode = [], [], []
for step in range(STEPS):
    batch = batch_rng.choice(len(x_train), size=BATCH, replace=False)
    params, batch_stats, opt_state, loss = train_step(
        params, batch_stats, opt_state, x_train[batch], y_train[batch]
    )
    losses.append(float(loss))
    mean_history.append(np.asarray(batch_stats["norm1"]["mean"]))
    var_history.append(np.asarray(batch_stats["norm1"]["var"]))
    if step % 10 == 9:
        eval_steps.append(step + 1)
        test_accuracy_train_mode.append(
            accuracy(predict(params, batch_stats, x_test, train=True), y_test)
        )
        test_accuracy_eval_mode.append(
            accuracy(predict(params, batch_stats, x_test, train=False), y_test)
        )
losses, mean_history, var_history = map(np.asarray, (losses, mean_history, var_history))
print(f"loss: first 10 steps {losses[:10].mean():.3f}, last 10 steps {losses[-10:].mean():.3f}")
print(
    f"test accuracy: train mode {test_accuracy_train_mode[-1]:.3f}, "
    f"eval mode {test_accuracy_eval_mode[-1]:.3f}"
)

# %%
fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
axes[0].plot(losses, lw=1)
axes[0].set(title="training loss", xlabel="step", yscale="log")
axes[1].plot(eval_steps, test_accuracy_train_mode, "o-", label="train mode: instance stats")
axes[1].plot(eval_steps, test_accuracy_eval_mode, "s-", label="eval mode: running stats")
axes[1].set(title="test accuracy", xlabel="step", ylim=(0, 1))
axes[1].legend()
axes[2].plot(mean_history[:, :6])
axes[2].set(title="norm1 running mean (6 channels)", xlabel="step")
axes[3].plot(var_history[:, :6])
axes[3].set(title="norm1 running var (6 channels)", xlabel="step", yscale="log")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What the running statistics are
#
# One more training-mode call on a batch, capturing `conv1`'s output (what `norm1`
# normalises). The new running mean is `0.9 * old + 0.1 * batch average of the instance
# means`, and the running variance the same with the biased instance variances.

# %%
x_batch = x_train[:BATCH]
_, state = model.apply(
    {"params": params, "batch_stats": batch_stats},
    x_batch,
    train=True,
    capture_intermediates=True,
    mutable=["batch_stats", "intermediates"],
)
conv1_out = state["intermediates"]["conv1"]["__call__"][0]  # (N, 8, 8, 16)
batch_mean = conv1_out.mean(axis=(1, 2)).mean(axis=0)
batch_var = conv1_out.var(axis=(1, 2)).mean(axis=0)
new_mean = state["batch_stats"]["norm1"]["mean"]
new_var = state["batch_stats"]["norm1"]["var"]
expected_mean = MOMENTUM * batch_stats["norm1"]["mean"] + (1 - MOMENTUM) * batch_mean
expected_var = MOMENTUM * batch_stats["norm1"]["var"] + (1 - MOMENTUM) * batch_var
print("largest error, running mean:", float(jnp.abs(new_mean - expected_mean).max()))
print("largest error, running var: ", float(jnp.abs(new_var - expected_var).max()))


# %% [markdown]
# ## Train versus eval outputs
#
# In train mode every instance of `norm1`'s output has exactly the learned `bias` as mean and
# `|scale|` as standard deviation: all test images land on one dot. In eval mode the running
# statistics normalise instead, so the instances are only standardised on average: they
# scatter around that dot, and the logits (and some predictions) differ from train mode.


# %%
def norm1_input_and_output(train):
    _, state = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x_test,
        train=train,
        capture_intermediates=True,
        mutable=["intermediates"],
    )
    captured = state["intermediates"]
    # Each of shape (N, 8, 8, 16).
    return captured["conv1"]["__call__"][0], captured["norm1"]["__call__"][0]


conv_train, norm_train = norm1_input_and_output(train=True)
conv_eval, norm_eval = norm1_input_and_output(train=False)
logits_train = predict(params, batch_stats, x_test, train=True)
logits_eval = predict(params, batch_stats, x_test, train=False)
print(
    "predictions that differ between modes:",
    int((logits_train.argmax(-1) != logits_eval.argmax(-1)).sum()),
    "of",
    len(x_test),
)

fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
channel = 0
for mode, norm, marker in [("eval mode", norm_eval, "."), ("train mode", norm_train, "o")]:
    mean, std = norm.mean(axis=(1, 2))[:, channel], norm.std(axis=(1, 2))[:, channel]
    axes[0].scatter(np.asarray(mean), np.asarray(std), marker=marker, label=mode)
axes[0].scatter(
    [float(params["norm1"]["bias"][channel])],
    [abs(float(params["norm1"]["scale"][channel]))],
    marker="x",
    color="k",
    s=80,
    label="(bias, |scale|)",
)
axes[0].set(title=f"norm1 channel {channel}: one dot per test image", xlabel="mean", ylabel="std")
axes[0].legend()
axes[1].scatter(np.asarray(logits_train).ravel(), np.asarray(logits_eval).ravel(), s=2)
axes[1].set(title="logits: train vs eval mode", xlabel="train mode", ylabel="eval mode")
bars = axes[2].bar(
    ["train mode", "eval mode"], [accuracy(logits_train, y_test), accuracy(logits_eval, y_test)]
)
axes[2].bar_label(bars, fmt="%.3f")
axes[2].set(title="test accuracy", ylim=(0, 1))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What this notebook showed
#
# Checked, so that a regression breaks the notebook (the project's tests run it):

# %%
# Training worked: the loss fell and the classifier generalises.
first_loss, last_loss = losses[:20].mean(), losses[-20:].mean()
assert last_loss < 0.25 * first_loss, (first_loss, last_loss)
assert accuracy(logits_train, y_test) > 0.9
# The running statistics moved away from their initial zeros and ones...
assert np.abs(mean_history[-1]).max() > 1e-2 and np.abs(var_history[-1] - 1).max() > 1e-2
# ...following new = momentum * old + (1 - momentum) * batch average (Flax convention).
np.testing.assert_allclose(new_mean, expected_mean, rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(new_var, expected_var, rtol=1e-4, atol=1e-5)
# Train mode: each instance of norm1's output has mean = bias and std = |scale|.
bias, scale = params["norm1"]["bias"], params["norm1"]["scale"]
np.testing.assert_allclose(
    norm_train.mean(axis=(1, 2)), np.broadcast_to(bias, (len(x_test), 16)), atol=1e-4
)
np.testing.assert_allclose(
    norm_train.std(axis=(1, 2)),
    np.broadcast_to(jnp.abs(scale), (len(x_test), 16)),
    rtol=2e-3,
    atol=1e-4,
)
# Eval mode normalises with the running statistics instead: different outputs.
assert float(jnp.abs(norm_eval - norm_train).max()) > 1e-2
print("all checks passed")
