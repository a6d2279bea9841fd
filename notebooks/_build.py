"""Write the notebooks in this folder from the cell sources below, with outputs stripped.

Run ``.venv/bin/python notebooks/_build.py`` after editing a cell here; the committed ``.ipynb``
files must equal what this script writes (``tests/test_notebooks.py`` checks it), so edit the
notebooks here rather than in Jupyter. Cell ids are fixed so that the output is reproducible.
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
#: The project's home, named once in pyproject.toml's [project.urls].
REPOSITORY_URL = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"
]
REPOSITORY = REPOSITORY_URL.removeprefix("https://github.com/")
PACKAGE = f"lucid-jax[flax] @ git+{REPOSITORY_URL}"


def colab_url(name: str) -> str:
    """The "Open in Colab" link of notebook ``name`` (without ``.ipynb``)."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{name}.ipynb"


def badge(name: str) -> str:
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(name)})"
    )


# The first code cell of every notebook: installs lucid-jax only when it is missing (so that
# running the notebook where it is installed, as in our tests, downloads nothing), from a wheel
# beside the notebook when there is one (lucid-jax is not on PyPI: build one with `make dist`
# and upload it to the Colab session), else from the repository.
INSTALL = f"""\
# Install lucid-jax (with its Flax extra) if it is missing: from a lucid_jax-*.whl beside
# this notebook (build one with `make dist`; in Colab, upload it to the session's files),
# else from its repository. Where lucid-jax is installed this does nothing.
import glob
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("lucid_jax") is None:
    wheels = sorted(glob.glob("lucid_jax-*.whl"))
    requirement = f"{{wheels[-1]}}[flax]" if wheels else "{PACKAGE}"
    print("installing", requirement)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)

import lucid_jax

print("lucid_jax", lucid_jax.__version__, "from", lucid_jax.__file__)"""


def md(text: str) -> tuple[str, str]:
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", textwrap.dedent(text).strip("\n"))


# --------------------------------------------------------------------------------------------
QUICKSTART = [
    md(
        """
        # lucid-jax quickstart

        {badge}

        [Lucid](https://github.com/ChanLumerico/lucid)'s `instance_norm`, on JAX:

        1. the seed example, written as Lucid code: the stateful `nn.functional.instance_norm` shim
           updating `nn.Buffer` running statistics in place;
        2. the plain-array pitfall: running statistics passed as plain arrays are **not** updated,
           exactly as in Lucid;
        3. the pure function `lucid_jax.instance_norm`, which returns the new statistics instead;
        4. `jax.jit`, `jax.vmap` and `jax.grad`;
        5. a picture of what instance normalisation does to per-channel statistics.

        Runs on a CPU in a few seconds and downloads nothing.
        """
    ),
    code(INSTALL),
    md(
        """
        ## 1. The seed example

        Lucid's instance-norm code runs unchanged once its imports point at `lucid_jax`. Here is
        the seed example: a batch of one sample with two channels of length two, normalised with
        running statistics, a weight and a bias, all given as `Tensor`s.
        """
    ),
    code(
        """
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np

        import lucid_jax as lucid
        import lucid_jax.nn as nn
        import lucid_jax.nn.functional as F
        from lucid_jax import Tensor

        input_ = Tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (N=1, C=2, L=2)
        out = F.instance_norm(
            input_,
            Tensor([0.0, 0.0]),
            Tensor([1.0, 1.0]),
            Tensor([1.0, 1.0]),
            Tensor([0.0, 0.0]),
            training=True,
        )
        print(out)
        """
    ),
    md(
        """
        `F.instance_norm` normalises every *instance* — one sample's one channel — by its own
        mean and biased variance over the remaining (spatial) axes, then applies the per-channel
        weight and bias:

        $$y_{n,c,s} = \\\\frac{x_{n,c,s} - \\\\mu_{n,c}}{\\\\sqrt{\\\\sigma^2_{n,c} + \\\\epsilon}}
          \\\\, w_c + b_c$$

        Both instances, `[1, 2]` and `[3, 4]`, have variance 0.25 and become
        `±0.5 / sqrt(0.25 + 1e-5) ≈ ±0.99998`.

        ## 2. The plain-array pitfall

        In training, the call also computes new running statistics with Lucid's momentum
        convention, `new = momentum * mean_n(stat) + (1 - momentum) * old`. But the seed example
        passes them as plain `Tensor`s, and plain arrays are **not** updated: the new statistics
        are computed, then lost. This is not a lucid-jax quirk — Lucid 2.14.5 does exactly the same
        with plain Tensors (the project's tests replay Lucid's own recordings of it); JAX arrays
        are immutable anyway. Running statistics must live in `nn.Buffer`s:
        """
    ),
    code(
        """
        plain_mean, plain_var = Tensor([0.0, 0.0]), Tensor([1.0, 1.0])
        F.instance_norm(input_, plain_mean, plain_var, training=True, momentum=0.1)
        print("plain arrays after the call:", plain_mean, plain_var, " <- not updated")

        buffer_mean, buffer_var = nn.Buffer(Tensor([0.0, 0.0])), nn.Buffer(Tensor([1.0, 1.0]))
        F.instance_norm(input_, buffer_mean, buffer_var, training=True, momentum=0.1)
        print("Buffers after the call:     ", buffer_mean, buffer_var)
        """
    ),
    md(
        """
        The Buffers moved 10% of the way towards the instance statistics: the means are
        `0.1 * [1.5, 3.5]`, the variances `0.1 * 0.25 + 0.9 * 1`. (The other fix is the pure
        function of section 3, which returns the new statistics.)

        The same on a larger batch: 8 images with 3 channels, each (sample, channel) with its own
        offset and scale. The running statistics follow the batch average of the instance
        statistics.
        """
    ),
    code(
        """
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
        print("per-instance mean of y, first 2 samples:\\n", y.mean(axis=(2, 3))[:2])
        print("per-instance variance of y, first 2 samples:\\n", y.var(axis=(2, 3))[:2])
        print("running_mean:", running_mean, " 0.1 * batch average:", 0.1 * instance_mean.mean(0))
        print("running_var: ", running_var, " 0.1 * batch average + 0.9:",
              0.1 * instance_var.mean(0) + 0.9)
        """
    ),
    md(
        """
        ## 3. The pure function

        `lucid_jax.instance_norm` takes the same arguments and returns everything it computes as
        an `InstanceNormOutput(output, running_mean, running_var)`, modifying nothing. With
        `training=False` the running statistics normalise instead of the instance statistics, so
        the instances are no longer exactly standardised.
        """
    ),
    code(
        """
        result = lucid.instance_norm(x, jnp.zeros(3), jnp.ones(3), training=True, momentum=0.1)
        print(type(result).__name__, result._fields)
        print("same output as the shim:       ", bool(jnp.allclose(result.output, y)))
        print("same running stats as Buffers: ",  # a Buffer holds its array in .data
              bool(jnp.allclose(result.running_mean, running_mean.data)),
              bool(jnp.allclose(result.running_var, running_var.data)))

        y_eval = lucid.instance_norm(x, result.running_mean, result.running_var, training=False)
        print("eval mode, per-instance means of sample 0:", y_eval.output[0].mean(axis=(1, 2)))
        """
    ),
    md(
        """
        ## 4. `jit`, `vmap`, `grad`

        **`jit`.** The pure function threads state explicitly, so a jitted training step returns
        the new statistics. After `k` steps on the same batch, the running mean is
        `(1 - 0.9**k)` times the batch average of the instance means.
        """
    ),
    code(
        """
        @jax.jit
        def train_step(x, running_mean, running_var):
            new = lucid.instance_norm(x, running_mean, running_var, training=True, momentum=0.1)
            return new.output, new.running_mean, new.running_var


        mean, var = jnp.zeros(3), jnp.ones(3)
        for step in range(50):
            _, mean, var = train_step(x, mean, var)
        print("running mean after 50 jitted steps:", mean)
        print("(1 - 0.9**50) * batch average:     ", (1 - 0.9**50) * instance_mean.mean(axis=0))
        """
    ),
    md(
        """
        The stateful shim cannot write a Buffer from inside a transformation (the new value is a
        tracer there), and says so instead of silently leaking it:
        """
    ),
    code(
        """
        try:
            jax.jit(lambda x: F.instance_norm(x, running_mean, running_var, training=True))(x)
        except TypeError as error:
            print("TypeError:", str(error)[:160], "...")
        """
    ),
    md(
        """
        **`vmap`.** Instances are independent, so normalising one image at a time with `vmap`
        gives the batched result.
        """
    ),
    code(
        """
        def normalise_one(image):  # image: (C, H, W), no batch axis
            return lucid.instance_norm(image[None]).output[0]


        y_vmapped = jax.vmap(normalise_one)(x)
        print("vmap == batched:", bool(jnp.allclose(y_vmapped, result.output, atol=1e-5)))
        """
    ),
    md(
        """
        **`grad`.** Instance norm's output does not change when an instance is shifted or scaled,
        so the gradient with respect to the input is orthogonal to both directions: for every
        instance it sums to zero, and it is orthogonal to the centred input. Gradients reach the
        affine `weight` and `bias` too.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 5. What instance norm does to per-channel statistics

        Left: every instance of `x` is a dot at its (mean, standard deviation), coloured by
        channel — spread all over. Middle: after instance normalisation every dot sits at (0, 1).
        Right: the values of three instances, before and after.
        """
    ),
    code(
        """
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
        picks = [np.unravel_index(i, before_mean.shape)
                 for i in (before_mean.argmin(), before_mean.argmax(), before_std.argmax())]
        for (n, c), colour in zip(picks, ["tab:orange", "tab:purple", "tab:gray"]):
            axes[2].hist(np.asarray(x[n, c]).ravel(), bins=25, density=True, alpha=0.35,
                         color=colour, label=f"x[{n}, {c}]")
            axes[2].hist(np.asarray(y[n, c]).ravel(), bins=25, density=True, histtype="step",
                         linewidth=2, color=colour, label=f"y[{n}, {c}]")
        axes[2].set(title="values of three instances: x filled, y outlined", xlabel="value")
        axes[2].legend(fontsize=8)
        plt.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## What this notebook showed

        Checked, so that a regression breaks the notebook (the project's tests run it):
        """
    ),
    code(
        """
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
        np.testing.assert_allclose(
            running_var, 0.1 * instance_var.mean(axis=0) + 0.9, rtol=1e-5)
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
        """
    ),
]

# --------------------------------------------------------------------------------------------
FLAX_TRAINING = [
    md(
        """
        # Training a Flax CNN with lucid-jax's `InstanceNorm`

        {badge}

        A small convolutional network with `lucid_jax.flax.linen.InstanceNorm` layers, trained on
        scikit-learn's handwritten digits (8×8 images that ship inside scikit-learn: nothing is
        downloaded). Along the way:

        - the layer's variables: `params` (`scale`, `bias`) and `batch_stats` (`mean`, `var`);
        - a training loop that updates the running statistics (`mutable=["batch_stats"]`), with
          loss curves and the running statistics over training;
        - Flax's momentum convention and how it maps to Lucid's;
        - train-mode versus eval-mode outputs (instance statistics versus running statistics).

        About 200 optimisation steps: well under a minute on a CPU.
        """
    ),
    code(INSTALL),
    code(
        """
        import functools

        import flax.linen as nn
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np
        import optax
        from sklearn.datasets import load_digits

        from lucid_jax.flax.linen import InstanceNorm
        """
    ),
    md(
        """
        ## Data

        1797 grey-scale 8×8 digits with values 0–16. We scale them to [0, 1], lay them out as
        Flax expects (`N, H, W, C`, channels last) and hold out 360 for testing.
        """
    ),
    code(
        """
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
        labels = digits.target.astype(np.int32)
        order = np.random.default_rng(0).permutation(len(images))
        test_index, train_index = order[:360], order[360:]
        x_train, y_train = jnp.asarray(images[train_index]), jnp.asarray(labels[train_index])
        x_test, y_test = jnp.asarray(images[test_index]), jnp.asarray(labels[test_index])
        print("train", x_train.shape, " test", x_test.shape)

        fig, axes = plt.subplots(1, 10, figsize=(10, 1.3))
        for ax, image, label in zip(axes, images[train_index][:10], labels[train_index][:10]):
            ax.imshow(image[..., 0], cmap="gray_r")
            ax.set_title(int(label))
            ax.axis("off")
        plt.show()
        """
    ),
    md(
        """
        ## The model

        Two convolutions, each followed by `InstanceNorm` and a ReLU (with 2×2 average pooling
        between them), then a linear classifier. `InstanceNorm` normalises each sample's each
        channel over its spatial positions (channels last: `channel_axis=-1`, the default).

        **Momentum conventions differ.** Flax's layers use
        `new = momentum * old + (1 - momentum) * batch`; Lucid's `momentum` is the weight of the
        *batch* (`new = momentum * batch + (1 - momentum) * old`). Flax `momentum=0.9` is Lucid's
        `momentum=0.1`; we use it so that the running statistics follow training closely (the
        Flax default, 0.99, averages over ~100 steps).

        `train=True` normalises with instance statistics and updates the running statistics;
        `train=False` (`use_running_average=True`) normalises with the running statistics, as
        Lucid's `InstanceNorm2d(track_running_stats=True)` does in eval mode.
        """
    ),
    code(
        """
        MOMENTUM = 0.9  # Flax convention: Lucid's momentum 0.1


        class CNN(nn.Module):
            @nn.compact
            def __call__(self, x, train: bool):
                x = nn.Conv(16, (3, 3), name="conv1")(x)
                x = InstanceNorm(use_running_average=not train, momentum=MOMENTUM, name="norm1")(x)
                x = nn.relu(x)
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 8x8 -> 4x4
                x = nn.Conv(32, (3, 3), name="conv2")(x)
                x = InstanceNorm(use_running_average=not train, momentum=MOMENTUM, name="norm2")(x)
                x = nn.relu(x)
                return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))


        model = CNN()
        variables = model.init(jax.random.key(0), x_train[:1], train=False)
        print(jax.tree.map(jnp.shape, variables["params"]["norm1"]))
        print(jax.tree.map(jnp.shape, variables["batch_stats"]))
        """
    ),
    md(
        """
        ## Training

        The training step applies the model with `mutable=["batch_stats"]` and returns the updated
        running statistics next to the loss. Every step we record the loss and `norm1`'s running
        statistics; every 10 steps, the test accuracy in both modes.
        """
    ),
    code(
        """
        optimizer = optax.adam(3e-3)


        @jax.jit
        def train_step(params, batch_stats, opt_state, x, y):
            def loss_fn(params):
                logits, updates = model.apply(
                    {"params": params, "batch_stats": batch_stats}, x, train=True,
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
                    accuracy(predict(params, batch_stats, x_test, train=True), y_test))
                test_accuracy_eval_mode.append(
                    accuracy(predict(params, batch_stats, x_test, train=False), y_test))
        losses, mean_history, var_history = map(np.asarray, (losses, mean_history, var_history))
        print(f"loss: first 10 steps {losses[:10].mean():.3f}, "
              f"last 10 steps {losses[-10:].mean():.3f}")
        print(f"test accuracy: train mode {test_accuracy_train_mode[-1]:.3f}, "
              f"eval mode {test_accuracy_eval_mode[-1]:.3f}")
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## What the running statistics are

        One more training-mode call on a batch, capturing `conv1`'s output (what `norm1`
        normalises). The new running mean is `0.9 * old + 0.1 * batch average of the instance
        means`, and the running variance the same with the biased instance variances.
        """
    ),
    code(
        """
        x_batch = x_train[:BATCH]
        _, state = model.apply(
            {"params": params, "batch_stats": batch_stats}, x_batch, train=True,
            capture_intermediates=True, mutable=["batch_stats", "intermediates"],
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
        """
    ),
    md(
        """
        ## Train versus eval outputs

        In train mode every instance of `norm1`'s output has exactly the learned `bias` as mean and
        `|scale|` as standard deviation: all test images land on one dot. In eval mode the running
        statistics normalise instead, so the instances are only standardised on average: they
        scatter around that dot, and the logits (and some predictions) differ from train mode.
        """
    ),
    code(
        """
        def norm1_input_and_output(train):
            _, state = model.apply(
                {"params": params, "batch_stats": batch_stats}, x_test, train=train,
                capture_intermediates=True, mutable=["intermediates"],
            )
            captured = state["intermediates"]
            # Each of shape (N, 8, 8, 16).
            return captured["conv1"]["__call__"][0], captured["norm1"]["__call__"][0]


        conv_train, norm_train = norm1_input_and_output(train=True)
        conv_eval, norm_eval = norm1_input_and_output(train=False)
        logits_train = predict(params, batch_stats, x_test, train=True)
        logits_eval = predict(params, batch_stats, x_test, train=False)
        print("predictions that differ between modes:",
              int((logits_train.argmax(-1) != logits_eval.argmax(-1)).sum()), "of", len(x_test))

        fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
        channel = 0
        for mode, norm, marker in [("eval mode", norm_eval, "."), ("train mode", norm_train, "o")]:
            mean, std = norm.mean(axis=(1, 2))[:, channel], norm.std(axis=(1, 2))[:, channel]
            axes[0].scatter(np.asarray(mean), np.asarray(std), marker=marker, label=mode)
        axes[0].scatter([float(params["norm1"]["bias"][channel])],
                        [abs(float(params["norm1"]["scale"][channel]))], marker="x", color="k",
                        s=80, label="(bias, |scale|)")
        axes[0].set(title=f"norm1 channel {channel}: one dot per test image", xlabel="mean",
                    ylabel="std")
        axes[0].legend()
        axes[1].scatter(np.asarray(logits_train).ravel(), np.asarray(logits_eval).ravel(), s=2)
        axes[1].set(title="logits: train vs eval mode", xlabel="train mode", ylabel="eval mode")
        bars = axes[2].bar(["train mode", "eval mode"],
                           [accuracy(logits_train, y_test), accuracy(logits_eval, y_test)])
        axes[2].bar_label(bars, fmt="%.3f")
        axes[2].set(title="test accuracy", ylim=(0, 1))
        plt.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## What this notebook showed

        Checked, so that a regression breaks the notebook (the project's tests run it):
        """
    ),
    code(
        """
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
            norm_train.mean(axis=(1, 2)), np.broadcast_to(bias, (len(x_test), 16)), atol=1e-4)
        np.testing.assert_allclose(
            norm_train.std(axis=(1, 2)), np.broadcast_to(jnp.abs(scale), (len(x_test), 16)),
            rtol=2e-3, atol=1e-4)
        # Eval mode normalises with the running statistics instead: different outputs.
        assert float(jnp.abs(norm_eval - norm_train).max()) > 1e-2
        print("all checks passed")
        """
    ),
]

# --------------------------------------------------------------------------------------------
STYLE_TRANSFER = [
    md(
        """
        # Style transfer with adaptive instance normalisation (AdaIN)

        {badge}

        Adaptive instance normalisation ([Huang & Belongie, 2017](https://arxiv.org/abs/1703.06868))
        re-styles *content* features with the per-channel statistics of *style* features:

        $$\\mathrm{AdaIN}(c, s) = \\sigma(s)\\,\\frac{c - \\mu(c)}{\\sigma(c)} + \\mu(s)$$

        which is exactly `lucid_jax.instance_norm(c, weight=σ(s), bias=μ(s))`. Two versions:

        1. AdaIN on the colour channels of a photograph (a colour transfer, in closed form);
        2. AdaIN on the features of a small fixed random convolutional network, then `jax.grad`
           to find an image whose features match the AdaIN target.

        The images ship inside scikit-learn (`load_sample_image`): nothing is downloaded. Runs on a
        CPU in well under a minute.
        """
    ),
    code(INSTALL),
    code(
        """
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np
        import optax
        from sklearn.datasets import load_sample_image

        import lucid_jax


        def load(name, step=3):
            \"\"\"A sample image as a (1, 3, H, W) array in [0, 1], downsampled by `step`.\"\"\"
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
        """
    ),
    md(
        """
        ## 1. AdaIN on colour channels

        The statistics of a `(N, C, H, W)` array, per sample and channel, over the spatial axes,
        are a `jnp.mean`/`jnp.std` away. AdaIN normalises the content with
        `lucid_jax.instance_norm` and hands it the style's standard deviations as `weight` and
        means as `bias`.
        """
    ),
    code(
        """
        def channel_stats(features):
            \"\"\"Per-(sample, channel) mean and (biased) standard deviation over H and W.\"\"\"
            return features.mean(axis=(2, 3)), features.std(axis=(2, 3))


        def adain(content_features, style_features):
            \"\"\"AdaIN of (1, C, H, W) content features with (1, C, H', W') style features.\"\"\"
            style_mean, style_std = channel_stats(style_features)
            return lucid_jax.instance_norm(
                content_features, weight=style_std[0], bias=style_mean[0]
            ).output


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
        """
    ),
    md(
        """
        ## 2. AdaIN on features, and an image optimised with `jax.grad`

        Colour statistics only carry the palette. Statistics of convolutional features also carry
        local texture. Here the features are a fixed, *random* three-layer ReLU network (no
        training, no download: random filters already respond to edges and textures). The AdaIN
        target `t = AdaIN(f(content), f(style))` is computed per layer; we then optimise an image
        `x`, starting from the recoloured content, to minimise

        $$\\sum_{l \\ge 2} \\lVert f_l(x) - t_l \\rVert^2
          + \\lambda \\sum_l \\lVert \\mu(f_l(x)) - \\mu(f_l(s)) \\rVert^2
          + \\lVert \\sigma(f_l(x)) - \\sigma(f_l(s)) \\rVert^2$$

        (a content term towards the AdaIN target and a style term on the channel statistics),
        with Adam on the gradient from `jax.grad`.
        """
    ),
    code(
        """
        def he_normal(key, shape):
            fan_in = shape[1] * shape[2] * shape[3]
            return jax.random.normal(key, shape) * jnp.sqrt(2.0 / fan_in)


        keys = jax.random.split(jax.random.key(0), 3)
        filters = [he_normal(keys[0], (32, 3, 3, 3)), he_normal(keys[1], (64, 32, 3, 3)),
                   he_normal(keys[2], (128, 64, 3, 3))]


        def conv(x, w):
            return jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME")


        def pool(x):
            window = (1, 1, 2, 2)
            return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") / 4


        def features(image):
            \"\"\"Three layers of ReLU features of a (1, 3, H, W) image, each twice coarser.\"\"\"
            f1 = jax.nn.relu(conv((image - 0.5) / 0.25, filters[0]))
            f2 = jax.nn.relu(conv(pool(f1), filters[1]))
            f3 = jax.nn.relu(conv(pool(f2), filters[2]))
            return [f1, f2, f3]


        style_features = features(style)
        style_stats = [channel_stats(f) for f in style_features]
        targets = [adain(c, s) for c, s in zip(features(content), style_features)]
        STYLE_WEIGHT = 10.0


        def losses(image):
            image_features = features(image)
            content_loss = sum(
                jnp.mean((f - t) ** 2) for f, t in zip(image_features[1:], targets[1:])
            )
            style_loss = 0.0
            for f, (style_mean, style_std) in zip(image_features, style_stats):
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
        for _ in range(300):
            stylised, opt_state, loss = step(stylised, opt_state)
            loss_history.append(float(loss))
        loss_history = np.asarray(loss_history)
        print(f"loss: start {loss_history[0]:.3f}, end {loss_history[-1]:.3f}")
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## What this notebook showed

        Checked, so that a regression breaks the notebook (the project's tests run it):
        """
    ),
    code(
        """
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
        """
    ),
]

NOTEBOOKS = {
    "01_quickstart": QUICKSTART,
    "02_flax_training": FLAX_TRAINING,
    "03_style_transfer": STYLE_TRANSFER,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name``, with no outputs and no execution counts."""
    cells = []
    for index, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell_id = f"cell-{index:02d}"
        if kind == "markdown":
            cells.append(
                nbformat.v4.new_markdown_cell(source.replace("{badge}", badge(name)), id=cell_id)
            )
        else:
            cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    """The text of ``notebooks/{name}.ipynb``."""
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str]) -> None:
    for name in argv or NOTEBOOKS:
        (HERE / f"{name}.ipynb").write_text(render(name))
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
