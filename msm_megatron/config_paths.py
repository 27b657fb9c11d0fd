"""Which config fields hold paths, and how loading makes them absolute.

Declared once, on the dataclass (:func:`path_field`), with the rule that makes a value
absolute; loading (:mod:`msm_megatron.config`) applies it: values read from a YAML file are
relative to that file's directory, command-line overrides to the current directory
(docs/configs.md#paths). Fields holding dotlist overrides of another config class
(:func:`overrides_field`) have the path values inside those strings resolved the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

PathRule = Callable[[str, Path], str]


def as_path(value: str, base: Path) -> str:
    """A file or directory: ``~`` expanded, made absolute against ``base``, normalized."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def model_ref(value: str, base: Path) -> str:
    """A model directory or a Hugging Face hub id (``org/name``): a path when it starts with
    ``/``, ``.`` or ``~``, or when it names something that exists under ``base``; else an id."""
    if value.startswith(("/", ".", "~")) or (base / value).exists():
        return as_path(value, base)
    return value


def env_file(value: str, base: Path) -> str:
    """A name (``mycluster``: looked up by the code that reads it) or, with a file suffix
    (``clusters/mine.env``), a path."""
    return as_path(value, base) if Path(value).suffix else value


def keeping(*words: str, rule: PathRule = as_path) -> PathRule:
    """``rule``, but the literal ``words`` stay as written (``base_model: toy``)."""
    return lambda value, base: value if value in words else rule(value, base)


def named_entry(rule: PathRule) -> PathRule:
    """``rule`` applied to the part after ``=`` of a ``name=path`` entry."""
    def resolve(value: str, base: Path) -> str:
        name, sep, rest = value.partition("=")
        return f"{name}={rule(rest, base)}" if sep and rest else value

    return resolve


def path_field(rule: PathRule = as_path, **kwargs: Any) -> Any:
    """A dataclass field holding a path (or a list / dict of paths) that loading makes
    absolute with ``rule``; ``kwargs`` go to :func:`dataclasses.field`."""
    return field(metadata={"path": rule}, **kwargs)


def overrides_field(target: Callable[[], type]) -> Any:
    """A list of dotlist overrides of the config class ``target()`` returns (imported lazily);
    loading resolves the path values in them like that class's own path fields."""
    return field(default_factory=list, metadata={"overrides_of": target})


def resolve_override(cls: type, item: str, base: Path) -> str:
    """One dotlist override of ``cls`` (``key=value``) with its path value made absolute
    against ``base``; anything else (other keys, unknown keys, bad syntax) is returned as is."""
    dotted, sep, raw = item.partition("=")
    target = _field_at(cls, dotted.strip().split(".")) if sep and raw else None
    if target is None:
        return item
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return item
    resolved = resolve_value(target, value, base)
    return item if resolved == value else f"{dotted}={_flow(resolved)}"


def resolve_section(cls: type, data: dict, base: Path) -> None:
    """Make the path values of ``data`` (a dict of ``cls``, nested sections included) absolute
    against ``base``, in place."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            if isinstance(data[f.name], dict):
                resolve_section(hints[f.name], data[f.name], base)
        else:
            data[f.name] = resolve_value(f, data[f.name], base)


def resolve_value(f: dataclasses.Field, value: Any, base: Path) -> Any:
    """``value`` of field ``f`` with its paths made absolute against ``base``."""
    rule = f.metadata.get("path")
    if rule is not None:
        return _map_paths(value, rule, base)
    target = f.metadata.get("overrides_of")
    if target is not None and isinstance(value, list):
        return [resolve_override(target(), item, base) if isinstance(item, str) else item
                for item in value]
    return value


def _map_paths(value: Any, rule: PathRule, base: Path) -> Any:
    if isinstance(value, str):
        return rule(value, base) if value and "://" not in value else value
    if isinstance(value, list):
        return [_map_paths(v, rule, base) for v in value]
    if isinstance(value, dict):
        return {k: _map_paths(v, rule, base) for k, v in value.items()}
    return value


def field_named(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _field_at(cls: type, parts: list[str]) -> dataclasses.Field | None:
    """The field a dotted key names in ``cls`` (None if there is none)."""
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return None
        found = [f for f in dataclasses.fields(cls) if f.name == part]
        if not found:
            return None
        if depth == len(parts) - 1:
            return found[0]
        cls = typing.get_type_hints(cls)[part]
    return None


def _flow(value: Any) -> str:
    """``value`` as YAML flow text that parses back to it (for a rewritten override)."""
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and not any(c in value for c in ",[]{}")
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)
