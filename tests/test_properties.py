"""Hypothesis properties of instance normalisation (against exact mathematical identities)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lucid_jax

#: The number of examples comes from the Hypothesis profile (conftest.py: 12 by default,
#: 300 with HYPOTHESIS_PROFILE=ci-long).
SETTINGS = settings(deadline=None)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 9), st.integers(1, 6))


@st.composite
def instances(draw):
    shape = draw(shapes)
    x = draw(hnp.arrays(np.float64, shape, elements=st.floats(-100, 100, width=32)))
    # Keep every instance well-conditioned (spread well above float32 resolution).
    noise = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape)
    return (x + 10 * noise).astype(np.float32)


@SETTINGS
@given(instances())
def test_zero_mean_unit_variance_per_instance(x):
    y = np.asarray(lucid_jax.instance_norm(jnp.asarray(x), eps=0.0).output, np.float64)
    axes = tuple(range(2, x.ndim))
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, rtol=1e-3)


@SETTINGS
@given(instances(), st.data())
def test_invariant_to_positive_per_instance_scale_and_shift(x, data):
    n, c = x.shape[:2]
    scale = data.draw(hnp.arrays(np.float32, (n, c, 1, 1), elements=st.floats(0.1, 10)))
    shift = data.draw(hnp.arrays(np.float32, (n, c, 1, 1), elements=st.floats(-50, 50)))
    y = lucid_jax.instance_norm(jnp.asarray(x), eps=0.0).output
    y2 = lucid_jax.instance_norm(jnp.asarray(x * scale + shift), eps=0.0).output
    np.testing.assert_allclose(y2, y, atol=2e-3)


@SETTINGS
@given(instances(), st.randoms(use_true_random=False))
def test_equivariant_under_permutation_of_spatial_positions(x, random):
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    order = list(range(flat.shape[-1]))
    random.shuffle(order)
    y = lucid_jax.instance_norm(jnp.asarray(flat)).output
    y_perm = lucid_jax.instance_norm(jnp.asarray(flat[..., order])).output
    np.testing.assert_allclose(y_perm, np.asarray(y)[..., order], rtol=1e-5, atol=1e-5)
