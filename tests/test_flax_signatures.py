"""Our Flax layers take every argument of the installed Flax's InstanceNorm, as Flax spells it.

The defaults are Flax's (`epsilon=1e-6` included) but for a documented two:
`use_fast_variance` is False (the two-pass variance, accurate at any mean; Flax: True) and
nnx's `promote_dtype` is Flax's rule, written out to also work under strict dtype promotion.
Our own additions default to Flax's behaviour: no running statistics.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

flax_linen = pytest.importorskip("flax.linen")
flax_nnx = pytest.importorskip("flax.nnx")

from lucid_jax.flax import linen as our_linen
from lucid_jax.flax import nnx as our_nnx

OUR_DEFAULTS = {"use_fast_variance": False}


def _parameters(function) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(function).parameters.items() if n != "self"}


def test_nnx_layer_takes_every_constructor_argument_of_flax_nnx_instance_norm():
    theirs, ours = (
        _parameters(flax_nnx.InstanceNorm.__init__),
        _parameters(our_nnx.InstanceNorm.__init__),
    )
    assert set(theirs) <= set(ours), sorted(set(theirs) - set(ours))
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        if name in OUR_DEFAULTS:
            assert ours[name].default == OUR_DEFAULTS[name] != parameter.default, name
        elif name != "promote_dtype":
            assert ours[name].default == parameter.default, name


def test_linen_layer_has_every_field_of_flax_linen_instance_norm():
    theirs = {f.name: f for f in dataclasses.fields(flax_linen.InstanceNorm)}
    ours = {f.name: f for f in dataclasses.fields(our_linen.InstanceNorm)}
    assert set(theirs) <= set(ours), sorted(set(theirs) - set(ours))
    for name, field in theirs.items():
        expected = OUR_DEFAULTS.get(name, field.default)
        assert ours[name].default == expected, name
        if name not in OUR_DEFAULTS:
            assert ours[name].default_factory == field.default_factory, name


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (flax_linen.InstanceNorm.__call__, our_linen.InstanceNorm.__call__),
        (flax_nnx.InstanceNorm.__call__, our_nnx.InstanceNorm.__call__),
    ],
    ids=["linen", "nnx"],
)
def test_call_takes_flax_s_arguments(theirs, ours):
    theirs, ours = _parameters(theirs), _parameters(ours)
    assert set(theirs) <= set(ours), sorted(set(theirs) - set(ours))
    assert all(ours[name].kind == parameter.kind for name, parameter in theirs.items())


@pytest.mark.parametrize(
    "ours",
    [
        inspect.signature(our_linen.InstanceNorm).parameters,
        _parameters(our_nnx.InstanceNorm.__init__),
    ],
    ids=["linen", "nnx"],
)
def test_our_additions_default_to_flax_s_layer_without_running_statistics(ours):
    assert ours["track_running_stats"].default is False
    assert ours["epsilon"].default == 1e-6
