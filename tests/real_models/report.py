# ruff: noqa
"""The figures behind tests/test_flax_real_models.py and test_flax_contract.py, printed.

Run from the repository root: `python tests/real_models/report.py`. For each real model, the
largest differences from Flax (InstanceNorm outputs, model output, gradients of the first
step) for our layer with `use_fast_variance=True` and with the default, and the losses of a
few optax steps side by side; then the nnx Dropout + `eval()` case.
"""

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
import test_flax_real_models as T
from lucid_jax.flax import nnx as lnnx
import test_flax_contract as C


for name, make in T.MODELS.items():
    runs = make()
    f = runs["flax"]
    print(f"== {name}: {T.NORMS[name]} InstanceNorms")
    print(
        "variables trees identical:",
        all(T._bitwise_equal(runs[k].variables, f.variables) for k in runs),
    )
    for k in ("ours_fast", "ours"):
        r = runs[k]
        print(
            f"{k:10s} norm outputs max|diff| {T._max_difference(r.norm_outputs, f.norm_outputs):.3g} (bitwise {T._bitwise_equal(r.norm_outputs, f.norm_outputs)}), "
            f"model output max|diff| {T._max_difference(r.output, f.output):.3g} (bitwise {T._bitwise_equal(r.output, f.output)}), "
            f"grads max|diff| {T._max_difference(r.grads, f.grads):.3g} (bitwise {T._bitwise_equal(r.grads, f.grads)})"
        )
    print("max |grad|:", T._max_abs(f.grads), " max|norm output|:", T._max_abs(f.norm_outputs))
    print("losses per step:")
    for k in runs:
        print(f"  {k:10s}", " ".join(f"{l:.9g}" for l in runs[k].losses))

X = C.X
for fast in (True, False):
    theirs = C._nnx_model(nnx.InstanceNorm)
    ours = C._nnx_model(lnnx.InstanceNorm, use_fast_variance=fast)
    state = jax.tree.map(lambda v: v + 0.25, nnx.state(theirs, nnx.Param))
    nnx.update(theirs, state)
    nnx.update(ours, state)
    tt, to = theirs(X), ours(X)
    theirs.eval()
    ours.eval()
    et, eo = theirs(X), ours(X)
    print(
        f"nnx Conv-InstanceNorm-Dropout-Linear, use_fast_variance={fast}: train max|diff| {float(jnp.abs(tt - to).max()):.3g}, "
        f"eval max|diff| {float(jnp.abs(et - eo).max()):.3g}, eval output scale {float(jnp.abs(et).max()):.3g}, train-vs-eval {float(jnp.abs(tt - et).max()):.3g}"
    )
# the failure: the old default (running stats, eval() switches to untrained stats)
theirs = C._nnx_model(nnx.InstanceNorm)
old = C._nnx_model(lnnx.InstanceNorm.lucid)
nnx.update(old, nnx.state(theirs, nnx.Param))
theirs.eval()
old.eval()
print(
    f"old default (running stats) after eval(): max|diff| vs Flax {float(jnp.abs(theirs(X) - old(X)).max()):.3g}"
)
