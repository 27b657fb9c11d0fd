"""Python source read as data, never executed: constants and literals of a third-party module.

The official agentic-misalignment templates and classifiers are Python modules in the user's
clones. Importing them would run their code (and pull in their dependencies); instead their
syntax tree is read and only what is plainly data is evaluated:

- :func:`module_constants` — module-level assignments built from literals: strings, numbers,
  ``+`` of strings or lists, f-strings, lists, tuples, dicts, names bound earlier, tuple
  unpacking and one-loop list comprehensions (``[A + fmt + B for fmt in [X, "\\n\\n"]]``).
  Anything else (calls, attribute access, imports) is skipped, not run;
- :func:`string_list_argument` — a list of strings passed to a call inside a method;
- :func:`in_test_strings` — strings tested with ``"x" in ...`` inside a function;
- :func:`keyword_constant` — the constant given as ``keyword=`` to a named call;
- :func:`fstring_assigned` — an f-string assigned inside a function, as a template.

Every miss raises :class:`SourceError` naming the file and what was expected there.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any


class SourceError(ValueError):
    """An official file is missing or does not hold what the renderer reads from it."""


class _Unsupported(Exception):
    pass


def parse(path: Path) -> ast.Module:
    """The syntax tree of ``path`` (a clear error if it is missing or not Python)."""
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise SourceError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from exc


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise _Unsupported(node.id)
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if type(left) is not type(right) or not isinstance(left, (str, list, tuple)):
            raise _Unsupported("+")
        return left + right
    if isinstance(node, ast.JoinedStr):
        return "".join(_eval(v, env) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        if node.conversion != -1 or node.format_spec is not None:
            raise _Unsupported("format spec")
        return str(_eval(node.value, env))
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unsupported("**")
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.ListComp) and len(node.generators) == 1:
        gen = node.generators[0]
        if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
            raise _Unsupported("comprehension")
        return [_eval(node.elt, {**env, gen.target.id: item}) for item in _eval(gen.iter, env)]
    raise _Unsupported(type(node).__name__)


def _bind(target: ast.AST, value: Any, env: dict[str, Any]) -> None:
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (list, tuple)) \
            and len(value) == len(target.elts):
        for t, v in zip(target.elts, value, strict=True):
            _bind(t, v, env)
    else:
        raise _Unsupported("assignment target")


def module_constants(path: Path) -> dict[str, Any]:
    """Module-level names of ``path`` whose values are literal data (see the module doc)."""
    env: dict[str, Any] = {}
    for node in parse(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        if not targets:
            continue
        try:
            value = _eval(node.value, env)
            for target in targets:
                _bind(target, value, env)
        except _Unsupported:
            continue
    return env


def need(constants: dict[str, Any], name: str, path: Path, kind: type = str) -> Any:
    """``constants[name]``, which must be a ``kind``; else a SourceError naming the file."""
    value = constants.get(name)
    if not isinstance(value, kind):
        raise SourceError(f"{path}: no module-level {kind.__name__} constant {name} (written as "
                          "literals); is this the right repository and commit? (docs/eval.md)")
    return value


def _functions(tree: ast.AST, name: str, within_class: str | None = None):
    scopes = [tree]
    if within_class is not None:
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                  and n.name == within_class]
    for scope in scopes:
        for node in ast.walk(scope):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                yield node


def string_list_argument(path: Path, class_name: str, method: str = "__init__") -> list[str]:
    """The first list of string literals passed to a call inside ``class_name.method``."""
    for fn in _functions(parse(path), method, class_name):
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                for arg in node.args:
                    if isinstance(arg, ast.List) and arg.elts and all(
                            isinstance(e, ast.Constant) and isinstance(e.value, str)
                            for e in arg.elts):
                        return [e.value for e in arg.elts]
    raise SourceError(f"{path}: no list of string literals passed to a call in "
                      f"{class_name}.{method} (the classifier's target addresses)")


def in_test_strings(path: Path, function: str) -> list[str]:
    """String literals tested with ``"literal" in ...`` inside every ``function`` of ``path``,
    in source order (e.g. an override code, or keywords a classifier looks for)."""
    found: list[str] = []
    for fn in _functions(parse(path), function):
        for node in ast.walk(fn):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.left.value, str) and isinstance(node.ops[0], ast.In) \
                    and node.left.value not in found:
                found.append(node.left.value)
    if not found:
        raise SourceError(f"{path}: no string tested with `in` inside {function}()")
    return found


def keyword_constant(path: Path, call_name: str, keyword: str) -> Any:
    """The literal passed as ``keyword=`` to the first call of ``call_name`` in ``path``."""
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            for kw in node.keywords if name == call_name else []:
                if kw.arg == keyword and isinstance(kw.value, ast.Constant):
                    return kw.value.value
    raise SourceError(f"{path}: no call {call_name}(..., {keyword}=<literal>)")


def fstring_assigned(path: Path, function: str, target: str) -> Callable[[dict[str, str]], str]:
    """The f-string assigned to ``target`` inside ``function``, as ``render(names) -> str``
    (its placeholders must be plain names, given in ``names``)."""
    for fn in _functions(parse(path), function):
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.JoinedStr) and any(
                    isinstance(t, ast.Name) and t.id == target for t in node.targets):
                template = node.value

                def render(names: dict[str, str], template=template) -> str:
                    try:
                        return _eval(template, dict(names))
                    except _Unsupported as exc:
                        raise SourceError(f"{path}:{template.lineno}: the f-string uses "
                                          f"{exc}, which is not given") from exc
                return render
    raise SourceError(f"{path}: no f-string assigned to {target} in {function}()")
