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
# # lucid-jax quickstart
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lucid-jax/lucid-jax/blob/main/notebooks/01_quickstart.ipynb)
#
# [Lucid](https://github.com/ChanLumerico/lucid)'s `instance_norm`, on JAX:
#
# 1. the seed example, written as Lucid code: the stateful `nn.functional.instance_norm` shim
#    updating `nn.Buffer` running statistics in place;
# 2. the plain-array pitfall: running statistics passed as plain arrays are **not** updated,
#    exactly as in Lucid;
# 3. the pure function `lucid_jax.instance_norm`, which returns the new statistics instead;
# 4. `jax.jit`, `jax.vmap` and `jax.grad`;
# 5. a picture of what instance normalisation does to per-channel statistics.
#
# Runs on a CPU in a few seconds and downloads nothing.

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

# %% [markdown]
# ## 1. The seed example
#
# Lucid's instance-norm code runs unchanged once its imports point at `lucid_jax`. Here is
# the seed example: a batch of one sample with two channels of length two, normalised with
# running statistics, a weight and a bias, all given as `Tensor`s.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import lucid_jax as lucid
import lucid_jax.nn as nn
import lucid_jax.nn.functional as F
from lucid_jax import Tensor

input_ = Tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (N=1, C=2, L=2)
# fmt: off
out = F.instance_norm(input_, Tensor([0.0, 0.0]), Tensor([1.0, 1.0]),
                      Tensor([1.0, 1.0]), Tensor([0.0, 0.0]), training=True)
# fmt: on
print(out)

# %% [markdown]
# `F.instance_norm` normalises every *instance* — one sample's one channel — by its own
# mean and biased variance over the remaining (spatial) axes, then applies the per-channel
# weight and bias:
#
# $$y_{n,c,s} = \frac{x_{n,c,s} - \mu_{n,c}}{\sqrt{\sigma^2_{n,c} + \epsilon}}
#   \, w_c + b_c$$
#
# Both instances, `[1, 2]` and `[3, 4]`, have variance 0.25 and become
# `±0.5 / sqrt(0.25 + 1e-5) ≈ ±0.99998`.
#
# ## 2. The plain-array pitfall
#
# In training, the call also computes new running statistics with Lucid's momentum
# convention, `new = momentum * mean_n(stat) + (1 - momentum) * old`. But the seed example
# passes them as plain `Tensor`s, and plain arrays are **not** updated: the new statistics
# are computed, then lost. This is not a lucid-jax quirk — Lucid 2.14.5 does exactly the same
# with plain Tensors (the project's tests replay Lucid's own recordings of it); JAX arrays
# are immutable anyway. Running statistics must live in `nn.Buffer`s:

# %%
plain_mean, plain_var = Tensor([0.0, 0.0]), Tensor([1.0, 1.0])
F.instance_norm(input_, plain_mean, plain_var, training=True, momentum=0.1)
print("plain arrays after the call:", plain_mean, plain_var, " <- not updated")

buffer_mean, buffer_var = nn.Buffer(Tensor([0.0, 0.0])), nn.Buffer(Tensor([1.0, 1.0]))
F.instance_norm(input_, buffer_mean, buffer_var, training=True, momentum=0.1)
print("Buffers after the call:     ", buffer_mean, buffer_var)

# %% [markdown]
# The Buffers moved 10% of the way towards the instance statistics: the means are
# `0.1 * [1.5, 3.5]`, the variances `0.1 * 0.25 + 0.9 * 1`. (The other fix is the pure
# function of section 3, which returns the new statistics.)
#
# The same on a larger batch: 8 images with 3 channels, each (sample, channel) with its own
# offset and scale. The running statistics follow the batch average of the instance
# statistics.

# %%
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
offsets = rng.uniform(-3.0, 5.0, size=(8, 3, 1, 1))
scales = rng.uniform(0.5, 4.0, size=(8, 3, 1, 1))
noise = rng.standard_normal((8, 3, 16, 16))
x = Tensor((offsets + scales * noise).astype(np.float32))  # (N, C, H, W)

running_mean, running_var = nn.Buffer(Tensor([0.0] * 3)), nn.Buffer(Tensor([1.0] * 3))
y = F.instance_norm(x, running_mean, running_var, training=True, momentum=0.1)

instance_mean = x.mean(axis=(2, 3))  # (N, C): one mean per (sample, channel)
instance_var = x.var(axis=(2, 3))  # biased, as Lucid
print("per-instance mean of y, first 2 samples:\n", y.mean(axis=(2, 3))[:2])
print("per-instance variance of y, first 2 samples:\n", y.var(axis=(2, 3))[:2])
print("running_mean:", running_mean, " 0.1 * batch average:", 0.1 * instance_mean.mean(0))
print("running_var: ", running_var, " 0.1 * batch average + 0.9:", 0.1 * instance_var.mean(0) + 0.9)

# %% [markdown]
# ## 3. The pure function
#
# `lucid_jax.instance_norm` takes the same arguments and returns everything it computes as
# an `InstanceNormOutput(output, running_mean, running_var)`, modifying nothing. With
# `training=False` the running statistics normalise instead of the instance statistics, so
# the instances are no longer exactly standardised.

# %%
result = lucid.instance_norm(x, jnp.zeros(3), jnp.ones(3), training=True, momentum=0.1)
print(type(result).__name__, result._fields)
print("same output as the shim:       ", bool(jnp.allclose(result.output, y)))
print(
    "same running stats as Buffers: ",  # a Buffer holds its array in .data
    bool(jnp.allclose(result.running_mean, running_mean.data)),
    bool(jnp.allclose(result.running_var, running_var.data)),
)

y_eval = lucid.instance_norm(x, result.running_mean, result.running_var, training=False)
print("eval mode, per-instance means of sample 0:", y_eval.output[0].mean(axis=(1, 2)))


# %% [markdown]
# ## 4. `jit`, `vmap`, `grad`
#
# **`jit`.** The pure function threads state explicitly, so a jitted training step returns
# the new statistics. After `k` steps on the same batch, the running mean is
# `(1 - 0.9**k)` times the batch average of the instance means.


# %%
@jax.jit
def train_step(x, running_mean, running_var):
    new = lucid.instance_norm(x, running_mean, running_var, training=True, momentum=0.1)
    return new.output, new.running_mean, new.running_var


mean, var = jnp.zeros(3), jnp.ones(3)
for _step in range(50):
    _, mean, var = train_step(x, mean, var)
print("running mean after 50 jitted steps:", mean)
print("(1 - 0.9**50) * batch average:     ", (1 - 0.9**50) * instance_mean.mean(axis=0))

# %% [markdown]
# The stateful shim cannot write a Buffer from inside a transformation (the new value is a
# tracer there), and says so instead of silently leaking it:

# %%
try:
    jax.jit(lambda x: F.instance_norm(x, running_mean, running_var, training=True))(x)
except TypeError as error:
    print("TypeError:", str(error)[:160], "...")


# %% [markdown]
# **`vmap`.** Instances are independent, so normalising one image at a time with `vmap`
# gives the batched result.


# %%
def normalise_one(image):  # image: (C, H, W), no batch axis
    return lucid.instance_norm(image[None]).output[0]


y_vmapped = jax.vmap(normalise_one)(x)
print("vmap == batched:", bool(jnp.allclose(y_vmapped, result.output, atol=1e-5)))

# %% [markdown]
# **`grad`.** Instance norm's output does not change when an instance is shifted or scaled,
# so the gradient with respect to the input is orthogonal to both directions: for every
# instance it sums to zero, and it is orthogonal to the centred input. Gradients reach the
# affine `weight` and `bias` too.

# %%
target = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)


def loss(x, weight, bias):
    y = lucid.instance_norm(x, weight=weight, bias=bias).output
    return jnp.mean((y - target) ** 2)


grad_loss = jax.grad(loss, argnums=(0, 1, 2))
grad_x, grad_weight, grad_bias = grad_loss(x, jnp.ones(3), jnp.zeros(3))
shift_component = grad_x.sum(axis=(2, 3))  # (N, C)
centred = x - x.mean(axis=(2, 3), keepdims=True)
scale_component = (grad_x * centred).sum(axis=(2, 3))
print("largest |sum of grad_x| over an instance:      ", jnp.abs(shift_component).max())
print("largest |<grad_x, centred x>| over an instance:", jnp.abs(scale_component).max())
print("grad_weight:", grad_weight, " grad_bias:", grad_bias)

# %% [markdown]
# ## 5. What instance norm does to per-channel statistics
#
# Left: every instance of `x` is a dot at its (mean, standard deviation), coloured by
# channel — spread all over. Middle: after instance normalisation every dot sits at (0, 1).
# Right: the values of three instances, before and after.

# %%
before_mean, before_std = np.asarray(x.mean(axis=(2, 3))), np.asarray(x.std(axis=(2, 3)))
after_mean, after_std = np.asarray(y.mean(axis=(2, 3))), np.asarray(y.std(axis=(2, 3)))

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for c, colour in enumerate(["tab:red", "tab:green", "tab:blue"]):
    axes[0].scatter(before_mean[:, c], before_std[:, c], color=colour, label=f"channel {c}")
    axes[1].scatter(after_mean[:, c], after_std[:, c], color=colour, label=f"channel {c}")
axes[0].set(title="before: one dot per (sample, channel)", xlabel="mean", ylabel="std")
axes[1].set(title="after instance_norm: all at (0, 1)", xlabel="mean", ylabel="std")
axes[1].set(xlim=axes[0].get_xlim(), ylim=(0, axes[0].get_ylim()[1]))
axes[0].set_ylim(axes[1].get_ylim())
axes[0].legend()
# Three contrasting instances: the lowest mean, the highest mean, the widest spread.
picks = [
    np.unravel_index(i, before_mean.shape)
    for i in (before_mean.argmin(), before_mean.argmax(), before_std.argmax())
]
for (n, c), colour in zip(picks, ["tab:orange", "tab:purple", "tab:gray"], strict=True):
    axes[2].hist(
        np.asarray(x[n, c]).ravel(),
        bins=25,
        density=True,
        alpha=0.35,
        color=colour,
        label=f"x[{n}, {c}]",
    )
    axes[2].hist(
        np.asarray(y[n, c]).ravel(),
        bins=25,
        density=True,
        histtype="step",
        linewidth=2,
        color=colour,
        label=f"y[{n}, {c}]",
    )
axes[2].set(title="values of three instances: x filled, y outlined", xlabel="value")
axes[2].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What this notebook showed
#
# Checked, so that a regression breaks the notebook (the project's tests run it):

# %%
# The seed example: each instance becomes ±0.5 / sqrt(0.25 + eps).
np.testing.assert_allclose(out, [[[-1.0, 1.0], [-1.0, 1.0]]] / np.sqrt(1 + 4e-5), rtol=1e-6)
# Every instance is standardised: zero mean, unit (biased) variance.
np.testing.assert_allclose(y.mean(axis=(2, 3)), 0.0, atol=1e-5)
np.testing.assert_allclose(y.var(axis=(2, 3)), 1.0, rtol=1e-3)
# Buffers were updated in place with Lucid's convention; plain arrays were not.
np.testing.assert_array_equal(plain_mean, [0.0, 0.0])
np.testing.assert_array_equal(plain_var, [1.0, 1.0])
np.testing.assert_allclose(buffer_mean, [0.15, 0.35], rtol=1e-6)
np.testing.assert_allclose(buffer_var, [0.925, 0.925], rtol=1e-6)
np.testing.assert_allclose(running_mean, 0.1 * instance_mean.mean(axis=0), rtol=1e-5)
np.testing.assert_allclose(running_var, 0.1 * instance_var.mean(axis=0) + 0.9, rtol=1e-5)
# The pure function returns what the shim wrote.
np.testing.assert_allclose(result.running_mean, running_mean, rtol=1e-6)
np.testing.assert_allclose(result.running_var, running_var, rtol=1e-6)
# jit threads the state; vmap over instances equals the batched call.
np.testing.assert_allclose(mean, (1 - 0.9**50) * instance_mean.mean(axis=0), rtol=1e-4)
np.testing.assert_allclose(y_vmapped, result.output, atol=1e-5)
# The input gradient is orthogonal to per-instance shifts and scalings.
scale = float(jnp.abs(grad_x).sum(axis=(2, 3)).max())
assert float(jnp.abs(shift_component).max()) < 1e-4 * scale
assert float(jnp.abs(scale_component).max()) < 1e-3 * scale * float(jnp.abs(centred).max())
print("all checks passed")
