"""The file's side of a verification: its inputs and outputs matched to the architecture's names, the sizes it fixes, a static file's check."""

from __future__ import annotations

from typing import Any

from zoo.build.shapes import dynamic_dims
from zoo.errors import UsageError, VerificationFailed
from zoo.spec.architecture import Architecture, Dim
from zoo.spec.runner import Runner


class RenamedRunner(Runner):
    """A runner taking and giving the architecture's names, for a file whose inputs
    and outputs are named otherwise: matched by name, else by position."""

    def __init__(self, runner: Runner, arch: Architecture, file_name: str) -> None:
        declared_in = [i.name for i in arch.inputs]
        declared_out = [o.name for o in arch.outputs]
        self.feed_names = match_names(declared_in, list(runner.input_names), "inputs", arch.name, file_name)
        self.from_file = {v: k for k, v in match_names(declared_out, list(runner.output_names), "outputs", arch.name, file_name).items()}
        self.inner, self.info, self.abortable = runner, runner.info, runner.abortable
        self.input_names, self.output_names = declared_in, declared_out
        self.input_shapes = {name: runner.input_shapes.get(self.feed_names[name], ()) for name in declared_in}

    def run(self, feed: Any) -> dict[str, Any]:
        got = self.inner.run({self.feed_names[name]: value for name, value in feed.items()})
        return {self.from_file[name]: value for name, value in got.items() if name in self.from_file}

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()


def renamed_io(runner: Runner, arch: Architecture, file_name: str) -> Runner:
    return RenamedRunner(runner, arch, file_name)


def match_names(declared: list[str], found: list[str], kind: str, arch: str, file_name: str) -> dict[str, str]:
    """Declared name -> the file's name: the same names, else the same count by position."""
    if sorted(declared) == sorted(found):
        return {name: name for name in declared}
    if len(declared) == len(found):
        return dict(zip(declared, found))
    raise UsageError(
        f"{file_name} has {len(found)} {kind} ({', '.join(found) or '-'}) but {arch} declares {len(declared)} "
        f"({', '.join(declared)}); they match neither by name nor by position: pick the architecture the file was exported from"
    )


def fixed_sizes(runner: Runner, arch: Architecture, params: dict[str, Any]) -> dict[str, int]:
    """Dynamic dimensions of ``arch`` that the file fixes to one size (its inputs matched
    by name, else by position): only that size can be verified."""
    found = [(name, runner.input_shapes.get(name, ())) for name in runner.input_names]
    by_name = dict(found)
    dims = dynamic_dims(arch, params)
    fixed: dict[str, int] = {}
    for position, inp in enumerate(arch.inputs):
        match = by_name.get(inp.name) if inp.name in by_name else (found[position][1] if position < len(found) else None)
        for axis, dim in enumerate(inp.shape if match is not None else ()):
            name = dim.name if isinstance(dim, Dim) else dim
            if isinstance(name, str) and name in dims and axis < len(match) and isinstance(match[axis], int):
                fixed[name] = int(match[axis])
    return fixed


def file_cases(cases: list[dict[str, int]], fixed: dict[str, int]) -> list[dict[str, int]]:
    unique: list[dict[str, int]] = []
    for case in cases:
        case = {**case, **{k: v for k, v in fixed.items() if k in case}}
        if case not in unique:
            unique.append(case)
    return unique


def check_static(runner: Runner, path: Any) -> None:
    """A file whose metadata says static shapes must have them: otherwise verifying
    one case would silently skip the sizes the file accepts."""
    for name, shape in runner.input_shapes.items():
        symbolic = [str(d) for d in shape if not isinstance(d, int)]
        if symbolic:
            raise VerificationFailed(
                f"{path.name} says it was exported with static shapes (zoo.static), but its input {name!r} has "
                f"dynamic dimensions ({', '.join(map(str, symbolic))}); the metadata does not describe this file"
            )
