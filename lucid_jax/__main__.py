"""`python -m lucid_jax`: a short tour (what `make demo` runs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import lucid_jax
import lucid_jax.nn.functional as F
from lucid_jax import Tensor
from lucid_jax.nn import Buffer, InstanceNorm2d, Sequential, functional_call


def _show(label: str, value: object) -> None:
    text = np.array2string(np.asarray(value), precision=4, suppress_small=True)
    print(f"  {label}:\n    " + text.replace("\n", "\n    "))


def main() -> None:
    np.set_printoptions(precision=4, suppress=True)
    print(f"lucid-jax {lucid_jax.__version__} on jax {jax.__version__}, {jax.devices()[0]}\n")

    print("1. Lucid's seed example, unchanged but for its imports")
    input_ = Tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # fmt: off
    out = F.instance_norm(input_, Tensor([0.0, 0.0]), Tensor([1.0, 1.0]),
                          Tensor([1.0, 1.0]), Tensor([0.0, 0.0]), training=True)
    # fmt: on
    # Five digits, as the README shows: the eighth differs between CPUs (an AVX-512 one prints
    # -0.99998003 where others print -0.99998).
    with np.printoptions(precision=5, suppress=False):
        print("  " + repr(out).replace("\n", "\n  "))

    print("\n2. Running statistics live in Buffers, updated in place (as in Lucid)")
    running_mean, running_var = Buffer(jnp.zeros(2)), Buffer(jnp.ones(2))
    for step in range(3):
        F.instance_norm(input_ + step, running_mean, running_var, momentum=0.1)
        print(
            f"  after step {step + 1}: running_mean={np.asarray(running_mean)} "
            f"running_var={np.asarray(running_var)}"
        )
    plain_mean = jnp.zeros(2)
    F.instance_norm(input_, plain_mean, jnp.ones(2))
    print(f"  a plain array is NOT updated (Lucid's pitfall): {np.asarray(plain_mean)}")

    print("\n3. Lucid-style module: train, then eval with the running stats")
    module = InstanceNorm2d(3, momentum=0.5)
    # The demo's data come from numpy: each new shape drawn by jax.random compiles a program
    # (1.5-4.6 s on XLA:CPU for these shapes, most of the demo's time), and they need no key.
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((4, 3, 8, 8), np.float32)) * 2.0 + 5.0
    module(images)
    print(f"  {module}")
    _show("running_mean after one step", module.running_mean)
    module.eval()
    _show("eval output mean per channel", module(images).mean(axis=(0, 2, 3)))

    print("\n4. The pure function: no side effects, safe under jit / vmap / grad")
    x = jnp.asarray(rng.standard_normal((2, 3, 16, 16), np.float32)) * 3.0 + 1.0
    norm = jax.jit(lucid_jax.instance_norm, static_argnames="training")
    result = norm(x, jnp.zeros(3), jnp.ones(3), momentum=0.1)
    _show("jit: new running_mean", result.running_mean)
    _show("jit: per-instance std of the output", result.output.std(axis=(2, 3)))
    batched = jax.vmap(lambda xi: lucid_jax.instance_norm(xi).output)(x[:, None])
    print(
        f"  vmap over samples: output shape {batched.shape}, equals the batched call: "
        f"{bool(jnp.allclose(batched[:, 0], lucid_jax.instance_norm(x).output, atol=1e-5))}"
    )

    def loss(weight: jax.Array) -> jax.Array:
        return jnp.sum(lucid_jax.instance_norm(x, weight=weight).output ** 2)

    _show("grad of sum(y²) w.r.t. weight (= 2·w·H·W·N)", jax.grad(loss)(jnp.ones(3)))

    print("\n5. A Lucid-style model trained under jax.jit: functional_call returns the new state")
    model = Sequential(InstanceNorm2d(3, affine=False), InstanceNorm2d(3))
    target = jnp.arange(3.0).reshape(1, 3, 1, 1)  # a constant per channel: the bias must learn it

    def mse(params: dict, buffers: dict, x: jax.Array) -> tuple[jax.Array, dict]:
        y, new_state = functional_call(model, {**params, **buffers}, x)
        return jnp.mean((y - target) ** 2), new_state

    step = jax.jit(jax.value_and_grad(mse, has_aux=True))
    state = model.state_dict()
    params = {name: state[name] for name, _ in model.named_parameters()}
    buffers = {name: state[name] for name, _ in model.named_buffers()}
    for number in range(1, 4):
        (value, new_state), grads = step(params, buffers, x)
        params = {name: params[name] - 0.25 * grads[name] for name in params}
        buffers = {name: new_state[name] for name in buffers}
        print(f"  SGD step {number}: loss {float(value):.4f}")
    model.load_state_dict({**params, **buffers})
    _show("the model's 1.bias after loading the trained state", model[1].bias)


if __name__ == "__main__":
    main()
