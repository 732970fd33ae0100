"""Turn ``--param KEY=VALUE`` strings into typed build arguments.

The type comes from the ``build`` callable's annotation: ``int``, ``float``,
``bool``, ``str``, ``Literal[...]`` (choices), ``tuple[int, ...]`` and ``list[int]``
(``4,3``) and ``X | None`` (``none``). Other annotations are refused when the
architecture registers (``parseable``), not when a file is verified.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zoo.errors import ParameterError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Parameter:
    """A build parameter, read from the ``build`` callable's signature."""

    name: str
    annotation: Any
    default: Any

    @property
    def type_name(self) -> str:
        return describe_type(self.annotation)


def build_parameters(build: Callable[..., Any], owner: str) -> dict[str, Parameter]:
    """The keyword parameters of ``build``, with their annotations evaluated.

    Only parameter annotations are evaluated (not the return annotation), so a
    plugin can annotate ``-> nn.Module`` without importing torch at module level.
    """
    signature = inspect.signature(build)
    namespace = getattr(inspect.unwrap(build), "__globals__", {})
    params: dict[str, Parameter] = {}
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise ValueError(f"architecture {owner!r}: build parameter {p.name!r} needs a default")
        annotation = p.annotation
        if isinstance(annotation, str):
            annotation = eval(annotation, {**vars(typing), **namespace})  # noqa: S307 - plugin's own source
        if annotation is p.empty:
            annotation = type(p.default)
        if not parseable(annotation):  # else it registers and exports, and only --param or verify fail
            raise ValueError(
                f"architecture {owner!r}: build parameter {p.name!r} has type {describe_type(annotation)}, which --param "
                "cannot parse; use int, float, bool, str, a Literal, a tuple or list of those, or X | None"
            )
        params[p.name] = Parameter(p.name, annotation, p.default)
    return params


def describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{describe_type(args[0])},..."
        return ",".join(describe_type(a) for a in args)
    if origin is list and args:
        return f"{describe_type(args[0])},..."
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _first_member(members: tuple[Any, ...], parse: Callable[[Any], Any]) -> Any:
    """A union's value: the first member type that parses it, else every reason."""
    errors = []
    for member in members:
        if member is type(None):
            continue
        try:
            return parse(member)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError("; ".join(errors))


def convert(text: str, annotation: Any) -> Any:
    """Parse ``text`` as ``annotation``; raises ``ValueError`` with the reason."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "") and type(None) in args:
            return None
        return _first_member(args, lambda arg: convert(text, arg))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        # Strict: 'hidden=' or 'hidden=4,,3' is a typo, not an empty or shorter tuple.
        if not text.strip():
            raise ValueError("the value is empty; give comma-separated values such as 4,3")
        items = [t.strip() for t in text.split(",")]
        if "" in items:
            raise ValueError("an item is empty; give comma-separated values such as 4,3, with no empty item")
        if origin is list:
            return [convert(item, args[0]) for item in items]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(item, args[0]) for item in items)
        if len(items) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values")
        return tuple(convert(item, arg) for item, arg in zip(items, args))
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if annotation is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if annotation is str:
        return text
    raise ValueError(f"zoo cannot parse parameters of type {describe_type(annotation)}")


def parseable(annotation: Any) -> bool:
    """Whether ``convert`` can parse ``--param`` text as ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return bool(rest) and all(parseable(a) for a in rest)
    if origin is typing.Literal:
        return True
    if origin is tuple:
        return bool(args) and all(parseable(a) for a in args if a is not Ellipsis)
    if origin is list:
        return len(args) == 1 and parseable(args[0])
    return annotation in (bool, int, float, str)


def from_json(value: Any, annotation: Any) -> Any:
    """A value read back from JSON (an exported file's metadata) as ``annotation``:
    lists become the tuples or lists the annotation asks for, item by item, so
    what ``zoo export`` wrote is what ``zoo verify`` builds. Raises ``ValueError``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _first_member(args, lambda arg: from_json(value, arg))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            return tuple(from_json(v, a) for v, a in zip(value, args))
        return origin(from_json(v, args[0]) for v in value)
    if isinstance(value, str):
        return convert(value, annotation)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValueError(f"expected one of {', '.join(map(str, args))}, got {value!r}")
    if annotation is float and type(value) is int:  # JSON writes 2.0 as 2.0, but a Python caller may pass 2
        return float(value)
    if annotation in (bool, int, float) and type(value) is annotation:
        return value
    raise ValueError(f"expected {describe_type(annotation)}, got {value!r}")


def parse_params(pairs: Iterable[str], parameters: Mapping[str, Parameter], owner: str) -> dict[str, Any]:
    """``["hidden=8,4", "activation=relu"]`` -> ``{"hidden": (8, 4), "activation": "relu"}``."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParameterError(f"--param {pair!r}: write it as KEY=VALUE ({valid_list(parameters)})")
        if key in values:  # the last one would silently win
            raise ParameterError(f"--param {key} is given twice ({values[key]!r} and {text!r}); give each parameter once")
        values[key] = text
    return coerce_params(values, parameters, owner)


def coerce_params(values: Mapping[str, Any], parameters: Mapping[str, Parameter], owner: str) -> dict[str, Any]:
    """Check names and convert strings; values already of the right kind pass through.

    Also used for parameters read back from JSON (an ONNX file's metadata), where
    tuples arrive as lists.
    """
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key not in parameters:
            raise ParameterError(f"{owner} has no parameter {key!r}; {valid_list(parameters)}")
        param = parameters[key]
        if isinstance(value, list):  # read back from JSON: already typed, not text to parse
            parse = from_json
        elif isinstance(value, str) and param.annotation is not str:
            parse = convert
        else:
            result[key] = value
            continue
        try:
            result[key] = parse(value, param.annotation)
        except ValueError as exc:
            raise ParameterError(
                f"{owner}: parameter {key}={value!r} is invalid: {exc} (type {describe_type(param.annotation)})"
            ) from None
    return result


def valid_list(parameters: Mapping[str, Parameter]) -> str:
    if not parameters:
        return "it takes no parameters"
    items = ", ".join(f"{p.name} ({describe_type(p.annotation)}, default {format_value(p.default)})" for p in parameters.values())
    return f"valid parameters: {items}"


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
