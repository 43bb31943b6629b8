"""Static reading of templates: every file a template reaches through include/import/extends,
and the names it uses. `check` reports what is wrong with them; a config reload compares their
text to know which templates changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import jinja2
import jinja2.meta
from jinja2 import nodes

# Names Jinja2 provides inside blocks, loops, macros and call blocks.
BUILTINS = frozenset({"loop", "self", "super", "varargs", "kwargs", "caller", "true", "false", "none", "True",
                      "False", "None"})


@dataclass
class Walk:
    texts: dict[str, str] = field(default_factory=dict)  # template name → its text, for each one reached
    names: dict[str, tuple[str, int]] = field(default_factory=dict)  # undeclared name → where first used
    problems: list[str] = field(default_factory=list)  # "file:line: what", for check

    def unknown_names(self, known: set[str]) -> list[str]:
        """Names used but neither a configured source nor a sandbox global: `'kvv' is undefined`."""
        return [f"{where}:{line}: {name!r} is undefined (sources: {', '.join(sorted(known - BUILTINS)) or 'none'})"
                for name, (where, line) in sorted(self.names.items()) if name not in known | BUILTINS]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.texts):
            digest.update(f"{len(name)}:{name}{len(self.texts[name])}:".encode() + self.texts[name].encode())
        return digest.hexdigest()


def walk(env: jinja2.Environment, name: str) -> Walk:
    """Parse `name` and every template it names literally; dynamic names cannot be followed."""
    result = Walk()
    todo: list[tuple[str, str, int]] = [(name, "", 0)]
    while todo:
        current, parent, line = todo.pop()
        if current in result.texts:
            continue
        try:
            text, filename, _ = env.loader.get_source(env, current)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            result.problems.append(f"{parent}:{line}: template {current!r} not found")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(f"{parent}:{line}: cannot read template {current!r}: {exc}")
            continue
        result.texts[current] = text
        where = filename or current
        try:
            ast = env.parse(text, current, filename)
        except jinja2.TemplateSyntaxError as exc:
            result.problems.append(f"{where}:{exc.lineno}: syntax error: {exc.message}")
            continue
        for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            template = getattr(node, "template", None)
            if isinstance(template, nodes.Const) and isinstance(template.value, str):
                if not getattr(node, "ignore_missing", False):
                    todo.append((template.value, where, node.lineno))
        undeclared = jinja2.meta.find_undeclared_variables(ast)
        for ref in ast.find_all(nodes.Name):
            if ref.name in undeclared and ref.name not in result.names:
                result.names[ref.name] = (where, ref.lineno)
    return result
