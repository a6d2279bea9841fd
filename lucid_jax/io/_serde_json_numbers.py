"""Which JSON numbers serde_json refuses as "number out of range", as the safetensors crate parses.

Python's `float()` rounds a decimal correctly; serde_json 1.0 (without its `float_roundtrip`
feature, as the `safetensors` package is built) does not: it keeps the first digits that fit a
`u64`, ignores the others, and multiplies by a power of ten in float64, refusing an infinite
product. Near float64's largest value the two disagree: serde_json refuses
`1.7976931348623158e308`, which Python reads as the largest float, and reads
`1.79769313486231581e308`, which Python rounds to infinity. The crate refuses a header with a
number it refuses, wherever the number is, so the reader needs serde_json's answer exactly.

This is that algorithm re-stated in Python (`parse_integer`, `parse_long_integer`,
`parse_decimal`, `parse_decimal_overflow`, `parse_exponent`, `parse_exponent_overflow` and
`f64_from_parts` in serde_json's `src/de.rs`, 1.0.150, https://github.com/serde-rs/json,
licensed MIT OR Apache-2.0), for a number Python's json module has already matched.
"""

from __future__ import annotations

_U64_MAX = 2**64 - 1
_I32_MAX = 2**31 - 1
_I32_MIN = -(2**31)
_POW10 = [float(f"1e{k}") for k in range(309)]  # serde_json's POW10 table: 1e0 ..= 1e308


def out_of_range(text: str) -> bool:
    """Whether serde_json refuses the JSON number `text` (a valid JSON number) as out of range."""
    digits = text.lstrip("-").lower()
    mantissa, _, exponent_text = digits.partition("e")
    integer, dot, fraction = mantissa.partition(".")
    significand, exponent = 0, 0
    position = 0
    for position, digit in enumerate(integer):  # parse_integer
        if significand * 10 + int(digit) > _U64_MAX:
            exponent = len(integer) - position  # parse_long_integer: the rest counted, ignored
            break
        significand = significand * 10 + int(digit)
    if not dot and not exponent_text and not exponent:
        return False  # an integer that fits 64 bits: no float at all
    for digit in fraction:  # parse_decimal (after a long integer too)
        if significand * 10 + int(digit) > _U64_MAX:
            break  # parse_decimal_overflow: the remaining digits are ignored
        significand = significand * 10 + int(digit)
        exponent -= 1
    if exponent_text:  # parse_exponent
        negative = exponent_text.startswith("-")
        value = 0
        for digit in exponent_text.lstrip("+-"):
            if value * 10 + int(digit) > _I32_MAX:  # parse_exponent_overflow
                return significand != 0 and not negative
            value = value * 10 + int(digit)
        exponent = exponent - value if negative else exponent + value
        exponent = min(max(exponent, _I32_MIN), _I32_MAX)  # i32 saturating arithmetic
    return _f64_from_parts_overflows(significand, exponent)


def _f64_from_parts_overflows(significand: int, exponent: int) -> bool:
    result = float(significand)  # u64 as f64: round to nearest, ties to even, as Python
    while True:
        if abs(exponent) <= 308:
            if exponent >= 0:
                return result * _POW10[exponent] == float("inf")
            return False
        if result == 0.0:
            return False
        if exponent >= 0:
            return True
        result /= 1e308
        exponent += 308
