"""Python source read as data, never executed: constants and literals of a third-party module.

The official agentic-misalignment templates and classifiers are Python modules in the user's
clones. Importing them would run their code (and pull in their dependencies); instead their
syntax tree is read and only what is plainly data is evaluated:

- :func:`module_constants` — module-level assignments built from literals: strings, numbers,
  ``+`` of strings or lists (also ``+=``), f-strings, lists, tuples, dicts, names bound
  earlier, tuple unpacking, list comprehensions without conditions, their loop targets names
  or tuples of names (``[A + pad + tools for pad, tools in [(X, T), ("\\n\\n", T)]]``), and
  module-level ``for`` loops of such assignments over such data. Anything else (calls,
  attribute access, imports) is skipped, not run, and remembered: :func:`need` then names the
  construct and its line;
- :func:`string_list_argument` — a list of strings passed to a call inside a method;
- :func:`in_test_strings` — strings tested with ``"x" in ...`` inside a function;
- :func:`keyword_constant` — the constant given as ``keyword=`` to a named call;
- :func:`call_keywords` — the literal keywords (of a set) of the first call that passes any;
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
    """A construct the reader does not evaluate; ``str()`` names it and its line."""

    def __init__(self, node: ast.AST, detail: str = ""):
        what = type(node).__name__ + (f" {detail}" if detail else "")
        line = getattr(node, "lineno", None)
        super().__init__(what + (f" at line {line}" if line else ""))


class Constants(dict):
    """The constants read from a module (name -> value), with ``skipped``: name -> the construct
    that kept an assignment to it from being read."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


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
            raise _Unsupported(node, f"{node.id!r} (not bound to literal data before)")
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _add(_eval(node.left, env), _eval(node.right, env), node)
    if isinstance(node, ast.JoinedStr):
        return "".join(_eval(v, env) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        if node.conversion != -1 or node.format_spec is not None:
            raise _Unsupported(node, "with a conversion or format spec")
        return str(_eval(node.value, env))
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unsupported(node, "with ** unpacking")
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.ListComp):
        return [_eval(node.elt, scope) for scope in _loops(node, node.generators, env)]
    raise _Unsupported(node)


def _add(left: Any, right: Any, node: ast.AST) -> Any:
    if type(left) is not type(right) or not isinstance(left, (str, list, tuple)):
        raise _Unsupported(node, f"+ of {type(left).__name__} and {type(right).__name__}")
    return left + right


def _items(value: Any, node: ast.AST) -> list:
    """What a ``for`` over ``value`` visits (literal data only)."""
    if not isinstance(value, (list, tuple, dict, str)):
        raise _Unsupported(node, f"loop over a {type(value).__name__}")
    return list(value)


def _loops(comp: ast.ListComp, generators: list[ast.comprehension], env: dict[str, Any]):
    """The scopes a comprehension's ``for`` clauses visit, in order (no ``if`` clauses)."""
    if not generators:
        yield env
        return
    gen = generators[0]
    if gen.ifs or gen.is_async:
        raise _Unsupported(comp, "with an if clause" if gen.ifs else "async")
    for item in _items(_eval(gen.iter, env), gen.iter):
        scope = dict(env)
        _bind(gen.target, item, scope)
        yield from _loops(comp, generators[1:], scope)


def _bind(target: ast.AST, value: Any, env: dict[str, Any]) -> None:
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (list, tuple)) \
            and len(value) == len(target.elts):
        for t, v in zip(target.elts, value, strict=True):
            _bind(t, v, env)
    elif isinstance(target, (ast.Tuple, ast.List)):
        raise _Unsupported(target, f"target of {len(target.elts)} names for a value that is not "
                                   f"{len(target.elts)} items")
    else:
        raise _Unsupported(target, "as a target")


def _bound_names(stmt: ast.stmt) -> list[str]:
    """The module-level names a statement assigns (imports and loop bodies included)."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    targets = {ast.Assign: lambda s: s.targets, ast.AnnAssign: lambda s: [s.target],
               ast.AugAssign: lambda s: [s.target],
               ast.For: lambda s: [s.target]}.get(type(stmt), lambda s: [])(stmt)
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    for inner in stmt.body if isinstance(stmt, ast.For) else []:
        names += _bound_names(inner)
    return names


def _run(stmt: ast.stmt, env: dict[str, Any]) -> None:
    """Evaluate one assignment or ``for`` loop of literal data into ``env``."""
    if isinstance(stmt, ast.Assign) or isinstance(stmt, ast.AnnAssign) and stmt.value:
        value = _eval(stmt.value, env)
        for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
            _bind(target, value, env)
    elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) \
            and isinstance(stmt.target, ast.Name):
        _bind(stmt.target, _add(_eval(stmt.target, env), _eval(stmt.value, env), stmt), env)
    elif isinstance(stmt, ast.For) and not stmt.orelse:
        for item in _items(_eval(stmt.iter, env), stmt.iter):
            _bind(stmt.target, item, env)
            for inner in stmt.body:
                _run(inner, env)
    elif not isinstance(stmt, (ast.Expr, ast.Pass, ast.AnnAssign)):  # skipped, never run
        raise _Unsupported(stmt)


def module_constants(path: Path) -> Constants:
    """Module-level names of ``path`` whose values are literal data (see the module doc);
    names whose assignment could not be read are in ``.skipped`` with the reason."""
    env = Constants()
    for stmt in parse(path).body:
        names = _bound_names(stmt)
        if not names:
            continue
        scratch = dict(env)
        try:
            _run(stmt, scratch)
        except _Unsupported as exc:
            for name in names:
                env.pop(name, None)
                env.skipped[name] = f"the statement at line {stmt.lineno} that assigns it " \
                                    f"uses {exc}"
            continue
        env.update(scratch)
        for name in names:
            env.skipped.pop(name, None)
    return env


def need(constants: dict[str, Any], name: str, path: Path, kind: type = str) -> Any:
    """``constants[name]``, which must be a ``kind``; else a SourceError naming the file, why
    the name was not read and the constants that were."""
    value = constants.get(name)
    if isinstance(value, kind):
        return value
    skipped = getattr(constants, "skipped", {})
    if name in constants:
        why = f"{name} is a {type(value).__name__}, not a {kind.__name__}"
    elif name in skipped:
        why = f"{skipped[name]}, which this reader does not evaluate (it executes nothing)"
    else:
        why = f"{name} is not assigned at module level"
    found = ", ".join(sorted(constants)) or "none"
    raise SourceError(f"{path}: no module-level {kind.__name__} constant {name}: {why}; "
                      f"constants read: {found}. Is this the right repository and commit? "
                      "(docs/eval.md)")


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


def call_keywords(paths: list[Path], names: tuple[str, ...]) -> dict[str, Any]:
    """The literal keyword arguments among ``names`` passed by the first call (in source order,
    file by file) that passes any of them; ``{}`` when none does (e.g. the generation settings
    a classifier sends with its judge call)."""
    for path in paths:
        calls = sorted((n for n in ast.walk(parse(path)) if isinstance(n, ast.Call)),
                       key=lambda n: (n.lineno, n.col_offset))
        for call in calls:
            found = {kw.arg: kw.value.value for kw in call.keywords
                     if kw.arg in names and isinstance(kw.value, ast.Constant)}
            if found:
                return found
    return {}


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
