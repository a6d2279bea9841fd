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
# # Style transfer with adaptive instance normalisation (AdaIN)
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lucid-jax/lucid-jax/blob/main/notebooks/03_style_transfer.ipynb)
#
# Adaptive instance normalisation ([Huang & Belongie, 2017](https://arxiv.org/abs/1703.06868))
# re-styles *content* features with the per-channel statistics of *style* features:
#
# $$\mathrm{AdaIN}(c, s) = \sigma(s)\,\frac{c - \mu(c)}{\sigma(c)} + \mu(s)$$
#
# which is exactly `lucid_jax.instance_norm(c, weight=σ(s), bias=μ(s))`. Two versions:
#
# 1. AdaIN on the colour channels of a photograph (a colour transfer, in closed form);
# 2. AdaIN on the features of a small fixed random convolutional network, then `jax.grad`
#    to find an image whose features match the AdaIN target.
#
# The images ship inside scikit-learn (`load_sample_image`): nothing is downloaded. Runs on a
# CPU in well under a minute.

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
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_sample_image

import lucid_jax


def load(name, step=3):
    """A sample image as a (1, 3, H, W) array in [0, 1], downsampled by `step`."""
    image = load_sample_image(name)[::step, ::step].astype(np.float32) / 255.0
    return jnp.asarray(image.transpose(2, 0, 1)[None])


def show(ax, image, title):
    ax.imshow(np.clip(np.asarray(image[0]).transpose(1, 2, 0), 0.0, 1.0))
    ax.set_title(title)
    ax.axis("off")


content, style = load("china.jpg"), load("flower.jpg")
print("content", content.shape, " style", style.shape)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
show(axes[0], content, "content: china.jpg")
show(axes[1], style, "style: flower.jpg")
plt.show()


# %% [markdown]
# ## 1. AdaIN on colour channels
#
# The statistics of a `(N, C, H, W)` array, per sample and channel, over the spatial axes,
# are a `jnp.mean`/`jnp.std` away. AdaIN normalises the content with
# `lucid_jax.instance_norm` and hands it the style's standard deviations as `weight` and
# means as `bias`.


# %%
def channel_stats(features):
    """Per-(sample, channel) mean and (biased) standard deviation over H and W."""
    return features.mean(axis=(2, 3)), features.std(axis=(2, 3))


def adain(content_features, style_features):
    """AdaIN of (1, C, H, W) content features with (1, C, H', W') style features."""
    style_mean, style_std = channel_stats(style_features)
    return lucid_jax.instance_norm(content_features, weight=style_std[0], bias=style_mean[0]).output


recoloured = adain(content, style)
for name, image in [("content", content), ("style", style), ("AdaIN", recoloured)]:
    mean, std = channel_stats(image)
    mean, std = np.asarray(mean[0]).round(3), np.asarray(std[0]).round(3)
    print(f"{name:8s} RGB mean {mean}  RGB std {std}")

fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
show(axes[0], content, "content")
show(axes[1], style, "style")
show(axes[2], recoloured, "AdaIN on RGB channels")
plt.show()


# %% [markdown]
# ## 2. AdaIN on features, and an image optimised with `jax.grad`
#
# Colour statistics only carry the palette. Statistics of convolutional features also carry
# local texture. Here the features are a fixed, *random* three-layer ReLU network (no
# training, no download: random filters already respond to edges and textures). The AdaIN
# target `t = AdaIN(f(content), f(style))` is computed per layer; we then optimise an image
# `x`, starting from the recoloured content, to minimise
#
# $$\sum_{l \ge 2} \lVert f_l(x) - t_l \rVert^2
#   + \lambda \sum_l \lVert \mu(f_l(x)) - \mu(f_l(s)) \rVert^2
#   + \lVert \sigma(f_l(x)) - \sigma(f_l(s)) \rVert^2$$
#
# (a content term towards the AdaIN target and a style term on the channel statistics),
# with Adam on the gradient from `jax.grad`.


# %%
# Fixed random filters, drawn once by numpy: jax.random would compile a program per shape
# (seconds each on a CPU runtime) for arrays that are constants here.
def he_normal(rng, shape):
    fan_in = shape[1] * shape[2] * shape[3]
    return jnp.asarray(rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / fan_in))


rng = np.random.default_rng(0)
filters = [
    he_normal(rng, (32, 3, 3, 3)),
    he_normal(rng, (64, 32, 3, 3)),
    he_normal(rng, (128, 64, 3, 3)),
]


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME")


def pool(x):
    window = (1, 1, 2, 2)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") / 4


def features(image):
    """Three layers of ReLU features of a (1, 3, H, W) image, each twice coarser."""
    f1 = jax.nn.relu(conv((image - 0.5) / 0.25, filters[0]))
    f2 = jax.nn.relu(conv(pool(f1), filters[1]))
    f3 = jax.nn.relu(conv(pool(f2), filters[2]))
    return [f1, f2, f3]


style_features = features(style)
style_stats = [channel_stats(f) for f in style_features]
targets = [adain(c, s) for c, s in zip(features(content), style_features, strict=True)]
STYLE_WEIGHT = 10.0


def losses(image):
    image_features = features(image)
    content_loss = sum(
        jnp.mean((f - t) ** 2) for f, t in zip(image_features[1:], targets[1:], strict=True)
    )
    style_loss = 0.0
    for f, (style_mean, style_std) in zip(image_features, style_stats, strict=True):
        mean, std = channel_stats(f)
        style_loss += jnp.mean((mean - style_mean) ** 2) + jnp.mean((std - style_std) ** 2)
    return content_loss, style_loss


def total_loss(image):
    content_loss, style_loss = losses(image)
    return content_loss + STYLE_WEIGHT * style_loss


optimizer = optax.adam(0.01)


@jax.jit
def step(image, opt_state):
    loss, grad = jax.value_and_grad(total_loss)(image)
    updates, opt_state = optimizer.update(grad, opt_state)
    return jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0), opt_state, loss


stylised = recoloured
opt_state = optimizer.init(stylised)
loss_history = []
for _ in range(100):
    stylised, opt_state, loss = step(stylised, opt_state)
    loss_history.append(float(loss))
loss_history = np.asarray(loss_history)
print(f"loss: start {loss_history[0]:.3f}, end {loss_history[-1]:.3f}")

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 8))
show(axes[0, 0], content, "content")
show(axes[0, 1], style, "style")
show(axes[1, 0], recoloured, "AdaIN on RGB channels")
show(axes[1, 1], stylised, "AdaIN on random conv features + jax.grad")
plt.tight_layout()
plt.show()

plt.figure(figsize=(5, 3))
plt.plot(loss_history)
plt.yscale("log")
plt.title("loss while optimising the image")
plt.xlabel("step")
plt.show()

# %% [markdown]
# ## What this notebook showed
#
# Checked, so that a regression breaks the notebook (the project's tests run it):

# %%
content_mean, content_std = channel_stats(content)
style_mean, style_std = channel_stats(style)
recoloured_mean, recoloured_std = channel_stats(recoloured)
# AdaIN output has the style's per-channel mean and standard deviation...
np.testing.assert_allclose(recoloured_mean, style_mean, atol=1e-5)
np.testing.assert_allclose(recoloured_std, style_std, rtol=1e-3)
# ...and is, channel by channel, the content standardised: the picture's structure is kept.
np.testing.assert_allclose(
    (recoloured - recoloured_mean[..., None, None]) / recoloured_std[..., None, None],
    (content - content_mean[..., None, None]) / content_std[..., None, None],
    atol=2e-3,
)
assert float(jnp.abs(recoloured - content).mean()) > 0.05  # visibly different colours
# The optimisation brought the image's feature statistics close to the style's.
assert loss_history[-1] < 0.2 * loss_history[0], (loss_history[0], loss_history[-1])
_, style_loss_content = losses(content)
_, style_loss_stylised = losses(stylised)
assert float(style_loss_stylised) < 0.05 * float(style_loss_content)
print("all checks passed")
