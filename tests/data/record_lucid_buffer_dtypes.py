"""Record the dtype Lucid 2.14.5 leaves in running-stat Buffers of another dtype than the input.

Lucid updates `Buffer.data` with `momentum * batch_stat + (1 - momentum) * running`, numpy
arithmetic between the input's dtype and the Buffer's: a float16 Buffer fed float32 input comes
back holding float32 (its stale `.dtype` attribute still says float16), float16 input with
float16 Buffers stays float16. Writes `lucid_2_14_5_buffer_dtypes.json` next to this script:
one case per (input dtype, Buffer dtype) pair with the input, the Buffers before and after (as
lists of floats) and the dtype of the data they hold after the call.

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<shared>/lucid_oracle <lucid-venv>/bin/python \
        tests/data/record_lucid_buffer_dtypes.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MOMENTUM = 0.25


def main() -> None:
    # Imported here, so that pytest (collecting doctests) can import this file without Lucid.
    import lucid
    import lucid.nn as nn
    import lucid.nn.functional as F

    rng = np.random.default_rng(16)
    cases = []
    for input_dtype in ("float16", "float32", "float64"):
        for buffer_dtype in ("float16", "float32"):
            x = rng.normal(1.0, 2.0, (2, 3, 4)).astype(input_dtype)
            mean_in = rng.normal(0.0, 1.0, 3).astype(buffer_dtype)
            var_in = rng.uniform(0.5, 2.0, 3).astype(buffer_dtype)
            running_mean, running_var = nn.Buffer(mean_in.copy()), nn.Buffer(var_in.copy())
            y = F.instance_norm(lucid.Tensor(x), running_mean, running_var, momentum=MOMENTUM)
            cases.append(
                {
                    "input_dtype": input_dtype,
                    "buffer_dtype": buffer_dtype,
                    "momentum": MOMENTUM,
                    "x": x.astype(np.float64).tolist(),
                    "running_mean_in": mean_in.astype(np.float64).tolist(),
                    "running_var_in": var_in.astype(np.float64).tolist(),
                    "output_dtype": str(y.data.dtype),
                    "running_dtype_out": str(running_mean.data.dtype),
                    "running_mean_out": running_mean.data.astype(np.float64).tolist(),
                    "running_var_out": running_var.data.astype(np.float64).tolist(),
                }
            )
            assert running_var.data.dtype == running_mean.data.dtype
    meta = {"lucid": "2.14.5", "script": Path(__file__).name, "cases": cases}
    (HERE / "lucid_2_14_5_buffer_dtypes.json").write_text(json.dumps(meta, indent=1) + "\n")
    for case in cases:
        print(case["input_dtype"], case["buffer_dtype"], "->", case["running_dtype_out"])


if __name__ == "__main__":
    main()
