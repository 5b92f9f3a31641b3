"""Typed validation of values read from TOML or JSON against a dataclass's annotations.

Configs (`TrainConfig`, `ModelConfig`, …), the video work folder's state file and the model
config inside checkpoints and ONNX metadata are plain dicts until they are built into frozen
dataclasses; a dataclass does not check types, so a `batch_size = "eight"` would only fail deep
inside the work. `type_problem` walks `dataclasses.fields` and the type hints, so a field added
to a config is checked without touching this module. Callers turn the message into the right
`reenact.errors` class (a config: UsageError; a checkpoint: MissingWeights; …).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          type(None): "nothing (null)", dict: "a table"}


def type_problem(cls: type, values: Any, prefix: str = "") -> str | None:
    """A message naming the first value of `values` (a dict for dataclass `cls`) whose type does
    not match the field's annotation, e.g. "batch_size must be an integer, not the string 'eight'";
    None when all match. Unknown keys are not this function's business (they are ignored); nested
    dataclass fields are checked recursively with a dotted key path ("data.workers")."""
    if not isinstance(values, dict):
        return f"{prefix.rstrip('.') or 'the value'} must be a table, not {_describe_value(values)}"
    for _, hint, value, key in _present_fields(cls, values, prefix):
        if dataclasses.is_dataclass(hint):  # a nested dataclass given something else than a table
            return f"{key} must be a table, not {_describe_value(value)}"
        if not matches(value, hint):
            return f"{key} must be {describe(hint)}, not {_describe_value(value)}"
    return None


def _present_fields(cls: type, values: dict, prefix: str = ""):
    """(field, type hint, value, dotted key) of every field of dataclass `cls` present in `values`;
    a nested dataclass field given a table is walked instead of yielded."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        hint, value, key = hints[f.name], values[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            yield from _present_fields(hint, value, key + ".")
        else:
            yield f, hint, value, key


def range_problem(cls: type, values: Any, prefix: str = "") -> str | None:
    """A message naming the first number of `values` (already of the right types) outside its
    field's range, e.g. "lr_g must be a finite number ≥ 0, not -1.0"; None when all are in range.
    Every int and float field must be finite and ≥ 0 unless its metadata gives another
    `range=(low, high)` (either may be None). Nested dataclasses are walked as in type_problem."""
    if not isinstance(values, dict):
        return None
    for f, hint, value, key in _present_fields(cls, values, prefix):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not dataclasses.is_dataclass(hint):
            low, high = f.metadata.get("range", (0, None))
            finite = value == value and value not in (float("inf"), float("-inf"))
            if not finite or (low is not None and value < low) or (high is not None and value > high):
                bounds = " and ".join(b for b in ((f"≥ {low}" if low is not None else ""),
                                                  (f"≤ {high}" if high is not None else "")) if b)
                return f"{key} must be a finite number{' ' + bounds if bounds else ''}, not {value!r}"
    return None


def matches(value: Any, hint: Any) -> bool:
    """Whether a TOML/JSON value fits a type hint (ints are accepted where floats are expected,
    lists where tuples are; bools are never numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: Any) -> str:
    """Words for a type hint: "an integer", "a string or nothing (null)", "a list of numbers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list):
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _describe_value(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "the string",
            list: "a list", dict: "a table", type(None): "null"}.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, (list, dict)) else ""
    return f"{kind} {shown[:40]}".rstrip()
