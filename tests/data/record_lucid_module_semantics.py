"""Record the module details where lucid-jax once differed from Lucid 2.14.5.

Each case is a small experiment on the real Lucid; `tests/test_lucid_semantics.py` runs the
same one on lucid-jax and either checks the same answer or the documented difference
(`docs/semantics.md`, "Module details against Lucid"). Writes
`lucid_2_14_5_module_semantics.json` next to this script:

- `eval_dtypes`: `InstanceNorm1d(2)` with every (input, running stats, weight/bias) dtype among
  float32/float64, the output's dtype and values in evaluation and in training;
- `parameter_dtypes`: the dtype `nn.Parameter`/`nn.Buffer` give float64 tensors, NumPy arrays,
  lists and scalars, and the dtypes of a fresh `InstanceNorm2d`'s state;
- `del_bias`: `state_dict` keys and `hasattr` after `del m.bias`, and what a forward raises;
- `dotted_buffer`: `register_buffer("a.b", ...)`: its key, and a `load_state_dict` through it;
- `train_int`: `train(0)`: the `training` value and whether a forward updates the running stats;
- `shared_buffer_assignment`: two modules sharing one running-mean Buffer, an array assigned
  to the name in one of them: both modules' keys and the other module's statistics;
- `parameter_containers`: `ParameterList`/`ParameterDict` keys and values through append,
  insert, delete, replace, pop, and the errors for arrays;
- `subnormal_running_stats`: running statistics holding subnormal numbers after a training
  step and in an evaluation output (numpy keeps them; XLA on CPU flushes them to zero).

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<shared>/lucid_oracle <lucid-venv>/bin/python \
        tests/data/record_lucid_module_semantics.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
X = np.array([[[0.0, 1.0, 2.0, 4.0], [-1.0, 3.0, 0.5, 2.0]]])


def _floats(array) -> list:
    return np.asarray(array, dtype=np.float64).tolist()


def main() -> None:
    # Imported here, so that pytest (collecting doctests) can import this file without Lucid.
    import lucid
    import lucid.nn as nn

    record: dict = {"lucid": "2.14.5", "script": Path(__file__).name}

    eval_dtypes = []
    for input_dtype in ("float32", "float64"):
        for stats_dtype in ("float32", "float64"):
            for affine_dtype in ("float32", "float64"):
                m = nn.InstanceNorm1d(2)
                m.running_mean.data = np.array([0.5, -0.25], stats_dtype)
                m.running_var.data = np.array([2.0, 0.5], stats_dtype)
                m.weight.data = np.array([1.5, -1.0], affine_dtype)
                m.bias.data = np.array([0.25, 1.0], affine_dtype)
                x = lucid.Tensor(X.astype(input_dtype))
                y_eval = m.eval()(x)
                y_train = m.train()(x)
                eval_dtypes.append(
                    {
                        "input_dtype": input_dtype,
                        "stats_dtype": stats_dtype,
                        "affine_dtype": affine_dtype,
                        "eval_dtype": str(y_eval.data.dtype),
                        "eval_y": _floats(y_eval.data),
                        "train_dtype": str(y_train.data.dtype),
                    }
                )
    record["eval_dtypes"] = {
        "x": X.tolist(),
        "running_mean": [0.5, -0.25],
        "running_var": [2.0, 0.5],
        "weight": [1.5, -1.0],
        "bias": [0.25, 1.0],
        "cases": eval_dtypes,
    }

    f64 = np.array([1.0, 2.0])
    record["parameter_dtypes"] = {
        "parameter_of_float64_tensor": str(nn.Parameter(lucid.Tensor(f64)).data.dtype),
        "parameter_of_float64_tensor_dtype_float64": str(
            nn.Parameter(lucid.Tensor(f64), dtype=lucid.Float64).data.dtype
        ),
        "parameter_of_float32_tensor": str(
            nn.Parameter(lucid.Tensor(f64.astype(np.float32))).data.dtype
        ),
        "parameter_of_int64_tensor": str(nn.Parameter(lucid.Tensor([1, 2])).data.dtype),
        "parameter_of_parameter": str(
            nn.Parameter(nn.Parameter(lucid.Tensor(f64), dtype=lucid.Float64)).data.dtype
        ),
        "parameter_of_buffer": str(nn.Parameter(nn.Buffer(lucid.Tensor(f64))).data.dtype),
        "parameter_of_numpy_float64": str(nn.Parameter(f64).data.dtype),
        "parameter_of_list": str(nn.Parameter([1.0, 2.0]).data.dtype),
        "parameter_of_float": str(nn.Parameter(1.0).data.dtype),
        "buffer_of_float64_tensor": str(nn.Buffer(lucid.Tensor(f64)).data.dtype),
        "instancenorm2d_state": {
            key: str(value.dtype) for key, value in nn.InstanceNorm2d(3).state_dict().items()
        },
    }

    m = nn.InstanceNorm1d(2)
    del m.bias
    try:
        m(lucid.Tensor(X))
        forward_error = None
    except Exception as error:  # what Lucid raises is the record
        forward_error = type(error).__name__
    record["del_bias"] = {
        "keys": list(m.state_dict()),
        "hasattr_bias": hasattr(m, "bias"),
        "forward_error": forward_error,
    }

    m = nn.Module()
    m.register_buffer("a.b", np.zeros(2))
    keys = list(m.state_dict())
    m.load_state_dict({"a.b": np.array([1.0, 2.0])})
    record["dotted_buffer"] = {
        "keys": keys,
        "loaded": _floats(m.state_dict()["a.b"]),
        "attribute": _floats(getattr(m, "a.b").data),
    }

    m = nn.InstanceNorm1d(2)
    m.train(0)
    training = m.training
    y = m(lucid.Tensor(X))
    record["train_int"] = {
        "training": repr(training),
        "y": _floats(y.data),
        "running_mean_after": _floats(m.running_mean.data),
        "y_of_eval": _floats(nn.InstanceNorm1d(2).eval()(lucid.Tensor(X)).data),
    }

    a, b = nn.InstanceNorm1d(2), nn.InstanceNorm1d(2)
    b.running_mean = a.running_mean
    a.running_mean = np.full(2, 5.0)
    record["shared_buffer_assignment"] = {
        "a_keys": list(a.state_dict()),
        "a_attribute_type": type(a.running_mean).__name__,
        "a_attribute": _floats(a.running_mean),
        "b_keys": list(b.state_dict()),
        "b_running_mean": _floats(b.running_mean.data),
    }

    plist = nn.ParameterList([nn.Parameter(np.zeros(2)), nn.Parameter(np.ones(3))])
    pdict = nn.ParameterDict({"w": nn.Parameter(np.zeros(1)), "a": nn.Parameter(np.ones(1))})
    holder = nn.Module()
    holder.gains = plist
    holder.scales = pdict
    containers: dict = {"keys": list(holder.state_dict())}
    plist.append(nn.Parameter(np.full(1, 2.0)))
    containers["after_append"] = [_floats(v) for v in plist.state_dict().values()]
    plist.insert(0, nn.Parameter(np.full(1, 7.0)))
    containers["insert_keys"] = list(plist.state_dict())
    containers["after_insert"] = [_floats(v) for v in plist.state_dict().values()]
    del plist[1]
    containers["delete_keys"] = list(plist.state_dict())
    containers["after_delete"] = [_floats(v) for v in plist.state_dict().values()]
    containers["slice"] = [_floats(p.data) for p in plist[1:]]
    containers["last"] = _floats(plist[-1].data)
    plist[0] = nn.Parameter(np.full(1, 9.0))
    containers["replace_keys"] = list(plist.state_dict())  # Lucid moves the entry last
    containers["after_replace"] = [_floats(v) for v in plist.state_dict().values()]
    pdict["a"] = nn.Parameter(np.full(1, 3.0))
    pdict["z"] = nn.Parameter(np.full(1, 4.0))
    containers["dict_keys"] = list(pdict.state_dict())
    containers["dict_pop"] = _floats(pdict.pop("w").data)
    containers["dict_after_pop"] = {k: _floats(v.data) for k, v in pdict.items()}
    containers["len"] = [len(plist), len(pdict)]
    errors = {}
    for name, action in {
        "list_append_array": lambda: plist.append(np.zeros(1)),
        "dict_set_array": lambda: pdict.__setitem__("q", np.zeros(1)),
    }.items():
        try:
            action()
            errors[name] = None
        except Exception as error:  # what Lucid raises is the record
            errors[name] = type(error).__name__
    containers["errors"] = errors
    record["parameter_containers"] = containers

    m = nn.InstanceNorm1d(1)
    m.running_mean.data = np.array([1e-310])
    m.running_var.data = np.array([1.0])
    x = lucid.Tensor(np.zeros((1, 1, 2)))
    eval_y = m.eval()(x)
    m.train()(x)
    record["subnormal_running_stats"] = {
        "momentum": 0.1,
        "running_mean_in": 1e-310,
        "running_mean_after_step": float(m.running_mean.data[0]),
        "eval_y": _floats(eval_y.data),
        "float32_product": float(np.float32(1e-40) * np.float32(0.9)),
    }

    path = HERE / "lucid_2_14_5_module_semantics.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "eval_dtypes"}, indent=1))


if __name__ == "__main__":
    main()
