"""Static reading of templates: every file a template reaches through include/import/extends,
and the names it uses. `check` reports what is wrong with them; a config reload compares their
text to know which templates changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import jinja2.meta
from jinja2 import nodes

from confsync.sources import Functions, path_problem

if TYPE_CHECKING:
    from confsync.config import Config

# Names Jinja2 provides inside blocks, loops, macros and call blocks.
BUILTINS = frozenset({"loop", "self", "super", "varargs", "kwargs", "caller", "true", "false", "none", "True",
                      "False", "None"})


@dataclass
class Walk:
    texts: dict[str, str] = field(default_factory=dict)  # template name → its text, for each one reached
    names: dict[str, tuple[str, int]] = field(default_factory=dict)  # undeclared name → where first used
    problems: list[str] = field(default_factory=list)  # "file:line: what"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.texts):
            digest.update(f"{len(name)}:{name}{len(self.texts[name])}:".encode() + self.texts[name].encode())
        return digest.hexdigest()


def walk(env: jinja2.Environment, name: str, functions: Mapping[str, type[Functions]]) -> Walk:
    """Parse `name` and every template it names literally (dynamic names cannot be followed); check
    the names it uses against `functions` (source name → its template functions) and the globals.
    An inline template (`contents`, an `exec.env` value) is read from env's loader like a file
    (render.loader_name puts it there)."""
    result = Walk()
    todo: list[tuple[str, str, int]] = [(name, "", 0)]
    while todo:
        current, parent, line = todo.pop()
        if current in result.texts:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, current)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            result.problems.append(f"{parent}:{line}: template {current!r} not found")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(f"{parent}:{line}: cannot read template {current!r}: {exc}")
            continue
        except jinja2.exceptions.SecurityError as exc:  # a symlink out of the folder (render.FolderLoader)
            result.problems.append(f"{parent}:{line}: refused: {exc}")
            continue
        result.texts[current] = source
        where = filename or current
        try:
            ast = env.parse(source, current, filename)
        except jinja2.TemplateSyntaxError as exc:
            result.problems.append(f"{where}:{exc.lineno}: syntax error: {exc.message}")
            continue
        for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            template = getattr(node, "template", None)
            if isinstance(template, nodes.Const) and isinstance(template.value, str):
                if not getattr(node, "ignore_missing", False):
                    todo.append((template.value, where, node.lineno))
        # Names set anywhere in the file count as declared everywhere in it: an import at the top of
        # a child template is seen by its blocks, which jinja2.meta tracks one by one.
        declared = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        declared |= {n.target for n in ast.find_all(nodes.Import)} | {n.name for n in ast.find_all(nodes.Macro)}
        declared |= {name if isinstance(name, str) else name[1] or name[0]
                     for n in ast.find_all(nodes.FromImport) for name in n.names}
        undeclared = jinja2.meta.find_undeclared_variables(ast) - declared
        for ref in ast.find_all(nodes.Name):
            if ref.name in undeclared and ref.name not in result.names:
                result.names[ref.name] = (where, ref.lineno)
        result.problems += _calls(ast, where, functions)
    known = set(functions) | set(env.globals) | BUILTINS
    result.problems += [f"{where}:{line}: {name!r} is undefined (sources: {', '.join(sorted(functions)) or 'none'})"
                        for name, (where, line) in sorted(result.names.items()) if name not in known]
    return result


def _calls(ast: nodes.Template, where: str, functions: Mapping[str, type[Functions]]) -> list[str]:
    """`kv.kye("a")` and `kv.key("a/./b")`: wrong whatever the data, so said before any is read."""
    problems = []
    for call in ast.find_all(nodes.Call):
        target = call.node
        if not (isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name)
                and target.node.name in functions):
            continue
        source, method = target.node.name, target.attr
        if method.startswith("_") or not callable(getattr(functions[source], method, None)):
            public = sorted(m for m in dir(functions[source]) if not m.startswith("_"))
            problems.append(f"{where}:{call.lineno}: {source}.{method}: no such function "
                            f"(one of {', '.join(public)})")
            continue
        first = call.args[0] if call.args else None
        if isinstance(first, nodes.Const) and isinstance(first.value, str):
            problem = path_problem(first.value)
            if problem:
                problems.append(f"{where}:{call.lineno}: {source}.{method}({first.value!r}): {problem}")
    return problems


def check(config: Config) -> list[str]:
    """Every problem of every template of `config`, each as "file:line: what"."""
    from confsync.render import environments, loader_name
    from confsync.sources import source_class

    functions = {name: source_class(s.type).functions for name, s in config.sources.items()}
    env_for = environments(frozenset(config.env_allow) if config.env_allow is not None else None)
    problems: dict[str, None] = {}  # ordered, and a file included twice is reported once
    for i, tpl in enumerate(config.templates):
        folder, path = tpl.located(config.path, i)
        env = env_for(folder, tpl.delimiters)
        name = loader_name(env, path, tpl.contents)
        problems.update(dict.fromkeys(walk(env, name, functions).problems))
    for key, text in config.exec.env.items():  # inline templates; includes from the config's folder
        env = env_for(config.path.parent, None)
        name = loader_name(env, Path(f"exec.env.{key}"), text)
        problems.update(dict.fromkeys(walk(env, name, functions).problems))
    return list(problems)
