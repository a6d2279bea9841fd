"""Record the dtype `lucid.Tensor(data)` gives each kind of data, in Lucid 2.14.5.

Python floats (and lists of them) become float64 and Python ints int64, as numpy makes them;
numpy arrays and scalars keep their dtype; `dtype=` overrides. Writes
`lucid_2_14_5_tensor_dtypes.json` next to this script: one case per input, given as the Python
expression that builds it, with the dtype of the tensor Lucid made.

    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=<shared>/lucid_oracle <lucid-venv>/bin/python \
        tests/data/record_lucid_tensor_dtypes.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
#: Each input as an expression over `np`, evaluated the same way on both sides.
INPUTS = (
    "1.5",
    "[1.0, 2.0]",
    "[[[1.0, 2.0], [3.0, 4.0]]]",
    "3",
    "[1, 2]",
    "[1, 2.5]",
    "np.float32(2.0)",
    "np.ones(2, np.float32)",
    "np.ones(2, np.float16)",
    "np.ones(2)",
    "np.array([1, 2], np.int32)",
)


def main() -> None:
    # Imported here, so that pytest (collecting doctests) can import this file without Lucid.
    import lucid
    import numpy as np

    cases = [
        {"data": text, "dtype": str(lucid.Tensor(eval(text, {"np": np})).data.dtype)}
        for text in INPUTS
    ]
    cases.append(
        {
            "data": "[1.0, 2.0]",
            "dtype_argument": "float32",
            "dtype": str(lucid.Tensor([1.0, 2.0], dtype=lucid.Float32).data.dtype),
        }
    )
    record = {
        "lucid": lucid.__version__ if hasattr(lucid, "__version__") else "2.14.5",
        "cases": cases,
    }
    (HERE / "lucid_2_14_5_tensor_dtypes.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
