"""Go template tree → Jinja2 text that renders the same bytes, or the refusals that prevent it.

The translation is typed (values.py): the emitter knows what each expression is, so it prints,
compares and iterates it the way Go would, and refuses what it cannot match. This module walks the
statements (actions, if/with/range, variables, template calls) and pipelines; Go's built-in
functions are in builtins.py, consul-template's in functions.py, fields and indexing in fields.py,
and the text and trimming markers are put together by assemble.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from confsync.configtemplate import Delimiters
from confsync.convert import functions
from confsync.convert.assemble import Tag, assemble
from confsync.convert.builtins import BUILTINS, STRUCTS, truth
from confsync.convert.fields import field_of
from confsync.convert.gotemplate import (
    Action,
    Arg,
    Branch,
    Call,
    Command,
    Dot,
    Field,
    GoSyntaxError,
    Ident,
    Literal,
    Node,
    Paren,
    Parsed,
    Pipe,
    Pos,
    Text,
    Unsupported,
    Variable,
    parse,
)
from confsync.convert.values import (
    GO_PRINTED,
    INT64,
    LISTS,
    MAP_KEYS,
    MAPS,
    PRINTABLE,
    Cascade,
    Refusal,
    Value,
    is_name,
    literal,
    literal_str,
    paren,
    unique,
)

RESERVED = {"consul", "vault", "env", "loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "self",
            "super", "varargs", "kwargs", "caller", "true", "false", "none", "True", "False", "None", "and", "or",
            "not", "in", "is", "if", "else", "elif", "for", "recursive", "import", "from", "as", "with", "without",
            "context", "ignore", "missing", "block", "extends", "macro", "call", "set", "filter", "raw", "include"}


_ELEMENT_NAMES = {"services": "instance", "intlist": "i", "nodes": "node", "nodeservices": "service",
                  "caroots": "root", "checks": "check"}


def jinja_delimiters(left: str, right: str) -> Delimiters | None:
    """Jinja2's delimiters for a Go template's: None for Go's own `{{ }}`; else the Go pair for
    Jinja2's variables, and the same pair with `%` and `#` inside for blocks and comments. All three
    start with the Go `left`, which Go text cannot hold: the file's own braces stay as they are."""
    if (left, right) == ("{{", "}}"):
        return None
    return Delimiters(variable=(left, right), block=(left + "%", "%" + right), comment=(left + "#", "#" + right))


@dataclass
class _Var:
    value: Value
    loop_depth: int


@dataclass
class _Scope:
    dot: Value | None
    root: Value | None
    variables: dict[str, _Var] = field(default_factory=dict)


class Emitter:
    def __init__(self, parsed: Parsed, delimiters: Delimiters) -> None:
        self.parsed = parsed
        self.delimiters = delimiters
        self.pieces: list[Text | Tag] = []
        self.refusals: list[Refusal] = []
        self.scopes: list[_Scope] = [_Scope(None, None)]
        self.loop_depth = 0
        self.names: set[str] = set()
        self.calls: list[str] = []

    # -- driving --------------------------------------------------------------------------------

    def run(self) -> str | None:
        self.nodes(self.parsed.body)
        return None if self.refusals else assemble(self.pieces, self.delimiters)

    def nodes(self, nodes: list[Node]) -> None:
        for node in nodes:
            try:
                self.node(node)
            except Cascade:
                pass
            except Refusal as exc:
                self.refusals.append(exc)

    def node(self, node: Node) -> None:
        if isinstance(node, Text):
            self.pieces.append(node)
        elif isinstance(node, Action):
            self.action(node)
        elif isinstance(node, Branch):
            getattr(self, f"branch_{node.kind}")(node)
        elif isinstance(node, Call):
            self.call(node)
        elif isinstance(node, Unsupported):
            raise Refusal(node.pos, f"{{{{{node.what}}}}}: Jinja2's loop controls are not enabled in confsync")

    def tag(self, body: str, open: str = "{%") -> None:
        self.pieces.append(Tag(open, body))

    # -- scopes and variables -------------------------------------------------------------------

    @property
    def scope(self) -> _Scope:
        return self.scopes[-1]

    def fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint.lstrip("$"), flags=re.ASCII) or "v"
        if base[0].isdigit() or base in RESERVED:
            base = f"v_{base}"
        return unique(base, self.names, "_")

    def lookup(self, name: str, pos: Pos) -> Value:
        if name == "$":
            if self.scope.root is None:
                raise Refusal(pos, "$ is nil at the top of a consul-template template")
            return self.scope.root
        for scope in reversed(self.scopes):
            if name in scope.variables:
                return scope.variables[name].value
            if scope.variables.get("$template-boundary"):
                break
        raise Refusal(pos, f"undefined variable {name}")

    def declare(self, name: str, value: Value) -> Value:
        self.scope.variables[name] = _Var(value, self.loop_depth)
        return value

    def bind(self, go_name: str, value: Value, pos: Pos) -> Value:
        """`$x := value`: a Jinja2 variable of its own (so that shadowing in a block stays local)."""
        if value.kind == "error":
            return self.declare(go_name, value)
        if value.kind in ("kvpair", "snippet"):  # already names
            return self.declare(go_name, value)
        jname = self.fresh(go_name)
        self.tag(f"set {jname} = {value.code}")
        return self.declare(go_name, Value(jname, value.kind, value.extra, value.nonneg))

    def assign(self, go_name: str, value: Value, pos: Pos) -> None:
        for scope in reversed(self.scopes):
            if go_name in scope.variables:
                var = scope.variables[go_name]
                break
        else:
            raise Refusal(pos, f"assignment to undeclared variable {go_name}")
        if var.loop_depth != self.loop_depth:
            raise Refusal(pos, f"assigning {go_name} inside a range it was declared outside of: a Jinja2 loop "
                               "cannot change an outer variable")
        if var.value.kind != value.kind or var.value.kind in ("kvpair", "snippet"):
            raise Refusal(pos, f"assigning a {value.kind} to {go_name}, a {var.value.kind}")
        self.tag(f"set {var.value.code} = {value.code}")

    # -- actions --------------------------------------------------------------------------------

    def action(self, node: Action) -> None:
        pipe = node.pipe
        value = self.declaring(pipe)
        if pipe.decl:
            if len(pipe.decl) > 1:
                raise Refusal(node.pos, "too many declarations")
            if pipe.assign:
                self.assign(pipe.decl[0], value, node.pos)
            else:
                self.bind(pipe.decl[0], value, node.pos)
            return
        self.tag(self.printed(value, node.pos), "{{")

    def printed(self, value: Value, pos: Pos) -> str:
        if value.kind == "error":
            raise Cascade(pos, "")
        if value.kind in PRINTABLE:
            return value.code
        if value.kind in GO_PRINTED:
            return f"{paren(value.code)} | go_print"
        raise Refusal(pos, f"printing a {value.kind} value: Go prints its internal representation")

    # -- control structures ---------------------------------------------------------------------

    def branch_if(self, node: Branch, elif_: bool = False) -> None:
        self.scopes.append(_Scope(self.scope.dot, self.scope.root))
        try:
            cond = self.condition(node.pipe, node.pos)
        except Refusal as exc:
            if not isinstance(exc, Cascade):
                self.refusals.append(exc)
            cond = "false"

        self.tag(f"{'elif' if elif_ else 'if'} {cond}")
        self.nodes(node.body)
        self.scopes.pop()
        if node.else_body is not None:
            chained = node.else_body[0] if len(node.else_body) == 1 else None
            if isinstance(chained, Branch) and chained.kind == "if" and not chained.pipe.decl:
                self.branch_if(chained, elif_=True)
                if not elif_:
                    self.tag("endif")
                return
            self.tag("else")
            self.nodes(node.else_body)
        if not elif_:
            self.tag("endif")

    def condition(self, pipe: Pipe, pos: Pos) -> str:
        value = self.declaring(pipe)
        if pipe.decl:
            if len(pipe.decl) > 1 or pipe.assign:
                raise Refusal(pos, "only `$x :=` is translated in a condition")
            value = self.bind(pipe.decl[0], value, pos)
        if value.kind == "error":
            raise Cascade(pos, "")
        return truth(value)  # a struct or a non-nil pointer: always true in Go

    def branch_with(self, node: Branch) -> None:
        self.scopes.append(_Scope(self.scope.dot, self.scope.root))
        value = self.pipe(node.pipe)
        if node.pipe.decl:
            if len(node.pipe.decl) > 1 or node.pipe.assign:
                raise Refusal(node.pos, "only `$x :=` is translated in with")
            value = self.bind(node.pipe.decl[0], value, node.pos)
        elif value.kind not in ("kvpair", "snippet") and not is_name(value.code):
            jname = self.fresh({"secret": "secret", "services": "instances"}.get(value.kind, "it"))
            self.tag(f"set {jname} = {value.code}")
            value = Value(jname, value.kind, value.extra, value.nonneg)
        always = value.kind in STRUCTS
        if not always:
            self.tag(f"if {value.code}")
        self.scope.dot = value
        self.nodes(node.body)
        self.scopes.pop()
        if always:
            return  # Go's else never runs for a non-nil struct
        if node.else_body is not None:
            self.tag("else")
            self.nodes(node.else_body)
        self.tag("endif")

    def branch_range(self, node: Branch) -> None:
        self.scopes.append(_Scope(self.scope.dot, self.scope.root))
        value = self.pipe(node.pipe)
        decl = node.pipe.decl
        if node.pipe.assign:
            raise Refusal(node.pos, "range with `=` is not translated")
        if len(decl) > 2:
            raise Refusal(node.pos, "too many declarations in range")
        index_var = decl[0] if len(decl) == 2 else None
        elem_var = decl[-1] if decl else None
        target, iterable, elem, key = self.iteration(value, node.pos, index_var, elem_var)
        self.tag(f"for {target} in {iterable}")
        self.loop_depth += 1
        if index_var is not None:
            if key is not None:
                self.declare(index_var, key)
            else:
                self.bind(index_var, Value("loop.index0", "int", nonneg=True), node.pos)
        if elem_var is not None:
            self.declare(elem_var, elem)
        self.scope.dot = elem
        self.nodes(node.body)
        self.loop_depth -= 1
        self.scopes.pop()
        if node.else_body is not None:
            self.tag("else")
            self.nodes(node.else_body)
        self.tag("endfor")

    def iteration(self, v: Value, pos: Pos, index_var: str | None,
                  elem_var: str | None) -> tuple[str, str, Value, Value | None]:
        """(loop target, iterable, element value, key value for maps)."""
        k = v.kind

        def names(default_key: str, default_value: str) -> tuple[str, str]:
            return (self.fresh(index_var or default_key) if k not in ("kvlist", "snippets") else
                    self.fresh(default_key),
                    self.fresh(elem_var if elem_var and k not in ("kvlist", "snippets") else default_value))

        if k in LISTS:
            if k == "intlist" and index_var is not None:
                raise Refusal(pos, "range $i, $e over loop: Go ranges over its channel with one variable only")
            name = self.fresh(elem_var or _ELEMENT_NAMES.get(k, "item"))
            return name, v.code, Value(name, LISTS[k], INT64 if k == "intlist" else ()), None
        if k in ("kvlist", "snippets"):
            key_name, value_name = names("key", "value") if k == "kvlist" else names("name", "tags")
            iterable = f"{paren(v.code)} | dictsort(true)"
            if v.extra == ("ls",):
                iterable += f' if "/" not in {key_name}'
            kind = "kvpair" if k == "kvlist" else "snippet"
            return f"{key_name}, {value_name}", iterable, Value("", kind, (key_name, value_name)), None
        if k in MAPS:
            key_name, value_name = names("key", "value")
            elem_kind = MAPS[k]
            elem = Value(value_name, elem_kind) if elem_kind != "kvpair" else \
                Value("", "kvpair", (key_name, value_name))
            return (f"{key_name}, {value_name}", f"{paren(v.code)} | dictsort(true)", elem,
                    Value(key_name, MAP_KEYS.get(k, "str")))
        if k == "error":
            raise Cascade(pos, "")
        raise Refusal(pos, f"range over a {k} value: its Go iteration order or element type is not known")

    def call(self, node: Call) -> None:
        self.inline(node.name, self.pipe(node.pipe) if node.pipe else None, node.pos)

    def execute_template(self, args: list[Value], pos: Pos) -> Value:
        """consul-template's executeTemplate "name" [dot]: the named template's output as a string,
        captured by a Jinja2 `{% set %}` block (a name computed at render time is refused)."""
        if not 1 <= len(args) <= 2:
            raise Refusal(pos, "executeTemplate takes a name and at most one value")
        name = literal_str(args[0], pos, "executeTemplate's name")
        jname = self.fresh("executed")
        self.tag(f"set {jname}")
        self.inline(name, args[1] if len(args) == 2 else None, pos)
        self.tag("endset")
        return Value(jname, "str")

    def inline(self, name: str, dot: Value | None, pos: Pos) -> None:
        body = self.parsed.defines.get(name)
        if body is None:
            raise Refusal(pos, f"no template named {name!r} is defined in this file")
        if name in self.calls:
            raise Refusal(pos, f"template {name!r} calls itself")
        if dot is not None and not is_name(dot.code) and dot.kind not in ("kvpair", "snippet"):
            jname = self.fresh("it")
            self.tag(f"set {jname} = {dot.code}")
            dot = Value(jname, dot.kind, dot.extra, dot.nonneg)
        scope = _Scope(dot, dot, {"$template-boundary": _Var(Value("", "error"), 0)})
        self.scopes.append(scope)
        self.calls.append(name)
        try:
            self.nodes(body)  # inlined: a Go template call is its body with a new dot and no variables
        finally:
            self.calls.pop()
            self.scopes.pop()

    # -- pipelines ------------------------------------------------------------------------------

    def declaring(self, pipe: Pipe) -> Value:
        """The pipeline's value; if it is refused, what it declares is marked so uses are not refused again."""
        try:
            return self.pipe(pipe)
        except Refusal:
            for name in pipe.decl:
                if not pipe.assign:
                    self.declare(name, Value("", "error"))
            raise

    def pipe(self, pipe: Pipe) -> Value:
        value: Value | None = None
        for cmd in pipe.cmds:
            value = self.command(cmd, value)
        assert value is not None
        return value

    def command(self, cmd: Command, piped: Value | None) -> Value:
        first = cmd.args[0]
        if isinstance(first, Ident):
            args = [self.arg(a) for a in cmd.args[1:]] + ([piped] if piped is not None else [])
            return self.function(first.name, args, first.pos)
        if len(cmd.args) > 1 or piped is not None:
            raise Refusal(cmd.pos, "can't give an argument to a non-function")
        return self.arg(first)

    def arg(self, a: Arg) -> Value:
        if isinstance(a, Literal):
            return literal(a.value, a.pos)
        if isinstance(a, Dot):
            return self.dot(a.pos)
        if isinstance(a, Field):
            return self.fields(self.dot(a.pos), a.names, a.pos)
        if isinstance(a, Variable):
            return self.fields(self.lookup(a.name, a.pos), a.names, a.pos)
        if isinstance(a, Paren):
            return self.fields(self.pipe(a.pipe), a.names, a.pos)
        return self.function(a.name, [], a.pos)  # an identifier as an argument: a call without arguments

    def dot(self, pos: Pos) -> Value:
        if self.scope.dot is None:
            raise Refusal(pos, "the dot is nil here (consul-template executes templates with no data)")
        return self.scope.dot

    def fields(self, value: Value, names: list[str], pos: Pos) -> Value:
        for name in names:
            value = field_of(value, name, pos)
        return value

    def function(self, name: str, args: list[Value], pos: Pos) -> Value:
        if any(a.kind == "error" for a in args):
            raise Cascade(pos, "")
        if name == "executeTemplate":
            return self.execute_template(args, pos)
        translator = BUILTINS.get(name) or functions.TRANSLATORS.get(name)
        if translator is not None:
            return translator(args, pos)
        if name in functions.REFUSED:
            raise Refusal(pos, f"{name}: {functions.REFUSED[name]}")
        if name.startswith("sprig_"):
            raise Refusal(pos, f"{name}: the sprig functions are not translated")
        raise Refusal(pos, f"unknown function {name!r}")


def convert_template(source: str, left: str = "{{", right: str = "}}") -> tuple[str | None, list[Refusal]]:
    """Jinja2 text for a Go template written with `left` and `right` (Jinja2's delimiters then
    `jinja_delimiters(left, right)`), or None and the refusals."""
    try:
        delimiters = jinja_delimiters(left, right) or Delimiters()
    except ValueError as exc:
        return None, [Refusal(Pos(1, 1), f"left_delimiter {left!r}, right_delimiter {right!r}: as Jinja2's: {exc}")]
    try:
        parsed = parse(source, left, right)
    except GoSyntaxError as exc:
        return None, [Refusal(Pos(exc.line, exc.col), f"Go template syntax error: {exc.message}")]
    emitter = Emitter(parsed, delimiters)
    text = emitter.run()
    return text, emitter.refusals
