"""Schemas: frozen dataclasses whose fields state a type and limits, never a default.

``check_section`` lists every problem of one config section against its
schema (unknown and missing keys, wrong types, values out of range, with
did-you-mean); ``typed`` builds the frozen object once the section is valid.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from dlrun.registry import closest


def spec(**limits: Any) -> Any:
    """A schema field: its type comes from the annotation, its limits from here.

    No default: every value is written once, in the group's YAML under conf/.
    """
    return field(metadata=limits)


@dataclass(frozen=True)
class Named:
    """The base of every ``dataset`` and ``model`` schema: the registry name it selects."""

    name: str = spec()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item)}"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _limits_problem(value: Any, meta: dict) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if "choices" in meta and value not in meta["choices"]:
        msg = f"must be one of {', '.join(map(str, meta['choices']))}"
        guess = closest(str(value), [str(c) for c in meta["choices"]])
        return msg + (f" (did you mean '{guess}'?)" if guess else "")
    checks = [
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("lt", lambda v, b: v < b, "<"),
        ("le", lambda v, b: v <= b, "<="),
    ]
    for key, ok, sym in checks:
        if key in meta and not ok(value, meta[key]):
            return f"must be {sym} {meta[key]}"
    return None


def check_section(prefix: str, node: Any, schema: type) -> list[str]:
    """Problems with one config section: unknown or missing keys, wrong types, values out
    of range."""
    if not isinstance(node, dict):
        return [f"{prefix}: expected a mapping of keys, got {node!r}"]
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in node:
        if key not in fields:
            guess = closest(str(key), list(fields))
            hint = f"did you mean '{prefix}.{guess}'?" if guess else ""
            problems.append(
                f"{prefix}.{key}: unknown key ({hint or 'valid keys: ' + ', '.join(fields)})"
            )
    for name, f in fields.items():
        if name not in node:
            problems.append(f"{prefix}.{name}: missing; set it with {prefix}.{name}=VALUE")
            continue
        value, tp = node[name], hints[name]
        section = _section_type(tp)
        if section is not None and (value is not None or section is tp):
            problems += check_section(f"{prefix}.{name}", value, section)
            continue
        if not _matches(value, tp):
            problems.append(f"{prefix}.{name}={value!r}: expected {_type_name(tp)}")
            continue
        items = value if isinstance(value, list) and typing.get_origin(tp) is list else [value]
        for item in items:
            problem = _limits_problem(item, dict(f.metadata))
            if problem:
                problems.append(f"{prefix}.{name}={value!r}: {problem}")
                break
    return problems


def typed(schema: type, node: dict) -> Any:
    """The frozen ``schema`` object of a section that ``check_section`` accepted."""
    hints = typing.get_type_hints(schema)
    values = {}
    for f in dataclasses.fields(schema):
        value, section = node[f.name], _section_type(hints[f.name])
        if section is not None and value is not None:
            value = typed(section, value)
        values[f.name] = value
    return schema(**values)


def _section_type(tp: Any) -> type | None:
    """The dataclass of a nested section typed ``Section`` or ``Section | None``."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [
            a for a in typing.get_args(tp) if isinstance(a, type) and dataclasses.is_dataclass(a)
        ]
        return found[0] if len(found) == 1 else None
    return None
