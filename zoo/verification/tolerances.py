"""Tolerances: --rtol/--atol parsed and checked, and the one that applies to each output."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from zoo.errors import ParameterError
from zoo.spec.architecture import DEFAULT_TOLERANCES, Architecture, Tolerance

# A tolerance option: one number for every output, or per output name ("*": the rest).
ToleranceOption = float | Mapping[str, float] | None


def parse_tolerance(flag: str, values: Sequence[str] | ToleranceOption) -> ToleranceOption:
    """``--atol 1e-4`` and ``--atol logits=1e-4`` (repeatable) as a ``ToleranceOption``;
    a number or a mapping (a library caller's) is one already."""
    if values is None or isinstance(values, (int, float, Mapping)):
        return values
    if not values:
        return None
    parsed: dict[str, float] = {}
    for text in values:
        name, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise ParameterError(f"{flag} {text!r}: give a number, or OUTPUT=NUMBER for one output") from None
        parsed[name or "*"] = value
    return parsed["*"] if list(parsed) == ["*"] else parsed


def check_tolerances(rtol: ToleranceOption, atol: ToleranceOption, outputs: Sequence[str] | None = None) -> None:
    """``--rtol``/``--atol`` must be finite, not negative and below 1 (a tolerance of
    1 or more passes any output of the right sign), and name outputs the model has
    (when ``outputs`` is known): refuse before any work."""
    for flag, option in (("--rtol", rtol), ("--atol", atol)):
        per_output = dict(option) if isinstance(option, Mapping) else {"*": option}
        for name, value in per_output.items():
            where = "" if name == "*" else f"{name}="
            if value is not None and not (math.isfinite(value) and 0 <= value < 1):
                raise ParameterError(f"{flag} {where}{value}: a tolerance must be a finite number >= 0 and below 1")
            if outputs is not None and name != "*" and name not in outputs:
                raise ParameterError(f"{flag} {name}=...: the model has no output {name!r}; its outputs are {', '.join(outputs)}")


def option_for(option: ToleranceOption, output: str) -> float | None:
    if isinstance(option, Mapping):
        return option.get(output, option.get("*"))
    return option


def tolerance_for(
    arch: Architecture, device: str, dtype: str, rtol: ToleranceOption, atol: ToleranceOption, output: str = ""
) -> Tolerance | None:
    """The tolerance to compare an output with; ``None`` means exact (integers, bools)."""
    if not dtype.startswith(("float", "bfloat")):
        return None
    base = (
        arch.tolerances.get(device)
        or arch.tolerances.get("*")
        or DEFAULT_TOLERANCES.get((device, dtype))
        or DEFAULT_TOLERANCES.get(("*", dtype))
        or DEFAULT_TOLERANCES[("cuda" if device == "cuda" else "cpu", "float32")]
    )
    rtol_value, atol_value = option_for(rtol, output), option_for(atol, output)
    return Tolerance(base.rtol if rtol_value is None else rtol_value, base.atol if atol_value is None else atol_value)
