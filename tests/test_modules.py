"""The module system as in Lucid 2.14.5: registration, traversal, containers, state dicts.

Expected names, orders and reprs are Lucid's own (printed by Lucid 2.14.5 for the same
constructions; the training recording's keys are checked in test_lucid_training.py).
"""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict

import jax.numpy as jnp
import numpy as np
import pytest

from lucid_jax import nn


class Affine(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.scale = nn.Parameter(jnp.ones(c))


def _lucid_example():
    return nn.Sequential(
        nn.InstanceNorm1d(2),
        nn.ModuleDict({"a": Affine(2)}),
        nn.ModuleList([nn.InstanceNorm1d(2, affine=False)]),
    )


def test_keys_children_and_repr_match_lucid():
    m = _lucid_example()
    assert list(m.state_dict()) == [
        "0.weight",
        "0.bias",
        "0.running_mean",
        "0.running_var",
        "1.a.scale",
        "2.0.running_mean",
        "2.0.running_var",
    ]
    assert [type(c).__name__ for c in m.children()] == [
        "InstanceNorm1d",
        "ModuleDict",
        "ModuleList",
    ]
    assert len(list(m.modules())) == 6
    assert repr(m) == (
        "Sequential(\n"
        "  (0): InstanceNorm1d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (1): ModuleDict(\n"
        "    (a): Affine(c=2)\n"
        "  )\n"
        "  (2): ModuleList(\n"
        "    (0): InstanceNorm1d(2, eps=1e-05, momentum=0.1, affine=False, "
        "track_running_stats=True)\n"
        "  )\n"
        ")"
    )


def test_named_traversals_use_dotted_paths():
    m = _lucid_example()
    assert [name for name, _ in m.named_modules()] == ["", "0", "1", "1.a", "2", "2.0"]
    assert [name for name, _ in m.named_children()] == ["0", "1", "2"]
    assert [name for name, _ in m.named_parameters()] == ["0.weight", "0.bias", "1.a.scale"]
    assert [name for name, _ in m.named_buffers()] == [
        "0.running_mean",
        "0.running_var",
        "2.0.running_mean",
        "2.0.running_var",
    ]
    assert [name for name, _ in m.named_parameters(recurse=False)] == []
    assert [p.shape for p in m.parameters()] == [(2,), (2,), (2,)]
    assert len(list(m.buffers())) == 4 and len(list(m[0].buffers(recurse=False))) == 2
    assert m.count_parameters() == 6 == m.parameter_size
    state = m.state_dict(keep_vars=True)
    assert state["1.a.scale"] is m[1]["a"].scale
    assert isinstance(m.state_dict()["0.weight"], type(jnp.zeros(1)))


def test_train_and_eval_reach_every_descendant():
    m = _lucid_example()
    assert m.eval() is m
    assert [sub.training for sub in m.modules()] == [False] * 6
    m.train()
    assert all(sub.training for sub in m.modules())
    with pytest.raises(TypeError, match=r"mode must be a bool .*got str"):
        m.train("no")
    assert all(sub.training for sub in m.modules())


def test_apply_visits_self_first_as_lucid():
    visited = []
    m = _lucid_example()
    assert m.apply(lambda sub: visited.append(type(sub).__name__)) is m
    assert visited == [
        "Sequential",
        "InstanceNorm1d",
        "ModuleDict",
        "Affine",
        "ModuleList",
        "InstanceNorm1d",
    ]


def test_shared_parameter_is_listed_once_but_named_in_state_dict_twice():
    first, second = Affine(2), Affine(2)
    second.scale = first.scale
    m = nn.ModuleList([first, second])
    assert [name for name, _ in m.named_parameters()] == ["0.scale"]
    assert list(m.state_dict()) == ["0.scale", "1.scale"]


def test_registration_follows_the_assigned_value():
    m = Affine(2)
    scale = m.scale
    m.scale = jnp.array([2.0, 3.0])  # an array rebinds the name to a new Parameter
    assert m.scale is not scale and isinstance(m.scale, nn.Parameter)
    np.testing.assert_array_equal(m.scale.data, [2.0, 3.0])
    np.testing.assert_array_equal(scale.data, [1.0, 1.0])  # the old holder is not written
    assert list(m.state_dict()) == ["scale"]
    m.scale = nn.Buffer(jnp.zeros(2))  # a Buffer moves the name to the buffers
    assert [n for n, _ in m.named_buffers()] == ["scale"] and list(m.parameters()) == []
    m.scale = None  # None unregisters it, as in Lucid
    assert m.scale is None and m.state_dict() == {}
    m.register_buffer("stat", [1.0, 2.0], dtype=jnp.float16)
    assert isinstance(m.stat, nn.Buffer) and m.stat.dtype == jnp.float16
    m.register_parameter("gain", nn.Parameter(jnp.ones(1)))
    m.add_module("child", Affine(1))
    assert list(m.state_dict()) == ["gain", "stat", "child.scale"]
    del m.child
    assert list(m.state_dict()) == ["gain", "stat"]
    with pytest.raises(AttributeError, match="child"):
        _ = m.child


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m.add_module("x", jnp.ones(2)), TypeError, "'x' must be a Module or None"),
        (
            lambda m: m.register_parameter("p", jnp.ones(2)),
            TypeError,
            "wrap arrays in nn.Parameter",
        ),
        (lambda m: m.add_module("a.b", Affine(1)), ValueError, "without '.'"),
        (lambda m: m.add_module("", Affine(1)), ValueError, "non-empty"),
        (lambda m: m.register_buffer(3, jnp.ones(1)), TypeError, "must be a str; got int"),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(call, error, message):
    m = Affine(2)
    with pytest.raises(error, match=f"(?i){message}"):
        call(m)
    assert list(m.state_dict()) == ["scale"]


def test_assigning_state_before_super_init_is_explained():
    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(jnp.ones(1))

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) first"):
        Forgetful()


def test_sequential_indexing_and_editing():
    a, b, c = nn.InstanceNorm1d(2), nn.InstanceNorm1d(2), nn.InstanceNorm1d(2, affine=False)
    seq = nn.Sequential(a, b)
    assert seq[0] is a and seq[-1] is b and len(seq) == 2 and list(seq) == [a, b]
    seq[0] = c  # keeps its position (Lucid moves the replaced entry last)
    assert list(seq) == [c, b] and next(seq.named_children()) == ("0", c)
    seq.append(a)
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2"]
    sliced = seq[1:]
    assert isinstance(sliced, nn.Sequential) and list(sliced.named_children()) == [
        ("1", b),
        ("2", a),
    ]
    del seq[1]
    assert list(seq) == [c, a]
    named = nn.Sequential(OrderedDict([("norm", a), ("plain", c)]))
    assert list(named.state_dict())[:2] == ["norm.weight", "norm.bias"]
    with pytest.raises(IndexError, match="index 5 out of range"):
        seq[5]
    with pytest.raises(TypeError, match="index must be an int or a slice; got str"):
        seq["0"]
    with pytest.raises(TypeError, match="must be a Module"):
        nn.Sequential(a, jnp.ones(2))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 5)), jnp.float32)
    np.testing.assert_array_equal(named(x), c(a(x)))


def test_module_list_insert_delete_and_replace():
    mods = [Affine(i + 1) for i in range(3)]
    ml = nn.ModuleList(mods[:2])
    ml.insert(0, mods[2])
    assert list(ml) == [mods[2], mods[0], mods[1]]
    assert [name for name, _ in ml.named_children()] == ["0", "1", "2"]
    del ml[1]  # removed and renumbered (Lucid's own __delitem__ removes nothing)
    assert list(ml) == [mods[2], mods[1]] and list(ml.state_dict()) == ["0.scale", "1.scale"]
    ml[0] = mods[0]
    assert list(ml) == [mods[0], mods[1]]
    assert isinstance(ml[:1], nn.ModuleList) and list(ml[:1]) == [mods[0]]
    with pytest.raises(TypeError, match="entries must be Modules; got int"):
        ml[0] = 3


def test_module_dict_behaves_as_a_mapping_of_children():
    a, b = Affine(1), Affine(2)
    md = nn.ModuleDict({"a": a})
    md["b"] = b
    assert list(md) == ["a", "b"] and list(md.keys()) == ["a", "b"] and "a" in md
    assert list(md.values()) == [a, b] and dict(md.items()) == {"a": a, "b": b}
    assert md.pop("a") is a and len(md) == 1 and list(md.state_dict()) == ["b.scale"]
    del md["b"]
    assert len(md) == 0
    with pytest.raises(TypeError, match=r"ModuleDict\['c'\]: expected a Module; got float"):
        md["c"] = 1.0
    md.update({"a": a})
    md.clear()
    assert md.state_dict() == {}


def _norm_with_state():
    m = nn.Sequential(nn.InstanceNorm1d(2), Affine(2))
    m.load_state_dict(
        {
            "0.weight": np.array([2.0, 3.0]),
            "0.bias": np.array([0.5, -0.5]),
            "0.running_mean": np.array([1.0, 2.0]),
            "0.running_var": np.array([3.0, 4.0]),
            "1.scale": np.array([5.0, 6.0]),
        }
    )
    return m


def test_load_state_dict_loads_every_dotted_key_in_the_modules_dtype():
    m = _norm_with_state()
    np.testing.assert_array_equal(m[0].running_var.data, [3.0, 4.0])
    assert m[0].running_var.dtype == jnp.float32  # float64 numpy converted to the entry's dtype
    np.testing.assert_array_equal(m[1].scale.data, [5.0, 6.0])
    other = nn.Sequential(nn.InstanceNorm1d(2), Affine(2))
    other.load_state_dict({**m.state_dict(), "1.scale": nn.Parameter(jnp.ones(2))})
    np.testing.assert_array_equal(other[0].weight.data, [2.0, 3.0])
    np.testing.assert_array_equal(other[1].scale.data, [1.0, 1.0])


@pytest.mark.parametrize(
    "value, error, message",
    [
        (np.array([1 + 1j, 2]), TypeError, "'1.scale' has dtype complex128"),
        (np.array([True, False]), TypeError, "'1.scale' has dtype bool"),
        (np.array(["a", "b"]), TypeError, "'1.scale' has dtype <U1"),
        (np.array([None, None]), TypeError, "'1.scale' has dtype object"),
        (None, TypeError, "'1.scale' is None"),
        (np.array([1, 2]), TypeError, "'1.scale' has dtype int64"),
        (np.ones(3), ValueError, r"'1.scale' has shape \(3,\); expected an array of shape \(2,\)"),
        ("ab", TypeError, "'1.scale' has dtype <U2"),
    ],
)
def test_load_state_dict_refuses_a_bad_value_and_changes_nothing(value, error, message):
    m = _norm_with_state()
    before = m.state_dict()
    state = {key: np.asarray(v) * 10 for key, v in before.items()}
    state["1.scale"] = value  # the last key: every earlier one passed its checks
    with pytest.raises(error, match=message):
        m.load_state_dict(state)
    for key, array in m.state_dict().items():
        assert array is before[key]


def test_load_state_dict_strict_and_not():
    m = _norm_with_state()
    with pytest.raises(KeyError, match=r"missing keys \['0.bias'.*unexpected keys \['extra'\]"):
        m.load_state_dict({"0.weight": np.ones(2), "extra": np.ones(2)})
    np.testing.assert_array_equal(m[0].weight.data, [2.0, 3.0])
    m.load_state_dict({"0.weight": np.ones(2), "extra": np.ones(2)}, strict=False)
    np.testing.assert_array_equal(m[0].weight.data, [1.0, 1.0])
    np.testing.assert_array_equal(m[1].scale.data, [5.0, 6.0])
    with pytest.raises(TypeError, match=r"state_dict must be a mapping .* got list"):
        m.load_state_dict([("0.weight", np.ones(2))])


def test_copies_and_pickles_are_independent_modules():
    m = _norm_with_state()
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert list(twin.state_dict()) == list(m.state_dict())
        assert twin[0].weight is not m[0].weight
        twin[0].weight.data = jnp.zeros(2)
        np.testing.assert_array_equal(m[0].weight.data, [2.0, 3.0])
        np.testing.assert_array_equal(twin[1].scale.data, [5.0, 6.0])
