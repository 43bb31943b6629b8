"""Go's built-in template functions (text/template funcs.go) → Jinja2 expressions.

Each gets the arguments already translated (`Value`s) and returns a `Value`, or raises `Refusal`;
`BUILTINS` is looked up before consul-template's functions (functions.py), as Go's are.
"""

from __future__ import annotations

from collections.abc import Callable

from confsync.convert.fields import index_of
from confsync.convert.gotemplate import Pos
from confsync.convert.printf import translate
from confsync.convert.values import GO_PRINTED, LISTS, MAPS, PRINTABLE, Cascade, Refusal, Value, paren

# a struct or a non-nil pointer: always true in Go
STRUCTS = ("kvpair", "snippet", "service", "secret", "secretdata", "weights", "catalognode", "node", "nodeservice",
           "caroot", "caleaf", "check", "svcaddr")


def truth(v: Value) -> str:
    return "true" if v.kind in STRUCTS else v.code


def _logic(op: str) -> Callable[[list[Value], Pos], Value]:
    def translate_logic(args: list[Value], pos: Pos) -> Value:
        if len(args) < 2:
            raise Refusal(pos, f"{op} needs at least two arguments")
        kinds = {a.kind for a in args}
        kind = kinds.pop() if len(kinds) == 1 else "any"
        if kind == "any" and not all(a.kind in PRINTABLE | GO_PRINTED for a in args):
            kind = "mixed"
        # Go's and/or return an operand (the first false / true one, or the last), as Python's do
        return Value("(" + f" {op} ".join(truth(a) for a in args) + ")", kind)
    return translate_logic


def not_(args: list[Value], pos: Pos) -> Value:
    if len(args) != 1:
        raise Refusal(pos, "not takes one argument")
    return Value(f"(not {truth(args[0])})", "bool")


def eq(args: list[Value], pos: Pos) -> Value:
    if len(args) < 2:
        raise Refusal(pos, "eq needs at least two arguments")
    args = _as_strings(args)
    for other in args[1:]:
        _comparable(args[0], other, pos, "eq", {"str", "int", "bool"})
    return Value("(" + " or ".join(f"{args[0].code} == {o.code}" for o in args[1:]) + ")", "bool")


def _compare(op: str, name: str, kinds: set[str]) -> Callable[[list[Value], Pos], Value]:
    def translate_compare(args: list[Value], pos: Pos) -> Value:
        if len(args) != 2:
            raise Refusal(pos, f"{name} takes two arguments")
        args = _as_strings(args)
        _comparable(args[0], args[1], pos, name, kinds)
        return Value(f"({args[0].code} {op} {args[1].code})", "bool")
    return translate_compare


def len_(args: list[Value], pos: Pos) -> Value:
    if len(args) != 1:
        raise Refusal(pos, "len takes one argument")
    v = args[0]
    if v.kind == "str":  # Go counts bytes
        return Value(f"({paren(v.code)}.encode() | length)", "int", nonneg=True)
    if v.kind in LISTS or v.kind in MAPS or v.kind in ("json", "snippets") \
            or (v.kind == "kvlist" and not v.extra):
        return Value(f"({paren(v.code)} | length)", "int", nonneg=True)
    raise Refusal(pos, f"len of a {v.kind} value")


def index(args: list[Value], pos: Pos) -> Value:
    if not args:
        raise Refusal(pos, "index needs an argument")
    value = args[0]
    for k in args[1:]:
        value = index_of(value, k, pos)
    return value


def printf(args: list[Value], pos: Pos) -> Value:
    if not args:
        raise Refusal(pos, "printf needs a format")
    fmt = args[0]
    if not fmt.is_literal or not isinstance(fmt.literal, str):
        raise Refusal(pos, "printf's format must be a string literal to be translated")
    return translate(fmt.literal, args[1:], pos)


def _sprint(newline: bool) -> Callable[[list[Value], Pos], Value]:
    """fmt.Sprint: a space between two operands when neither is a string; Sprintln: a space between
    every two, and a newline at the end. Each operand printed as Go prints it."""
    name = "println" if newline else "print"

    def translate(args: list[Value], pos: Pos) -> Value:
        parts: list[str] = []
        for i, a in enumerate(args):
            if a.kind not in PRINTABLE | GO_PRINTED:
                raise Refusal(pos, f"{name} of a {a.kind} value: Go prints its internal representation")
            if not newline and a.kind in ("any", "json"):
                raise Refusal(pos, f"{name} of a {a.kind} value: whether Go puts a space around it depends on "
                                   "its type at render time")
            if i and (newline or (args[i - 1].kind != "str" and a.kind != "str")):
                parts.append('" "')
            parts.append(a.code if a.kind in PRINTABLE else f"({a.code} | go_print)")
        if newline:
            parts.append('"\\n"')
        return Value("(" + " ~ ".join(parts or ['""']) + ")", "str")
    return translate


def _as_strings(args: list[Value]) -> list[Value]:
    """A Vault field compared with a string: Go compares it if it holds a string (else fails)."""
    if not any(a.kind == "str" for a in args):
        return args
    return [Value(f"({a.code} | go_str)", "str") if a.kind == "any" else a for a in args]


def _comparable(a: Value, b: Value, pos: Pos, name: str, kinds: set[str]) -> None:
    if a.kind == "error" or b.kind == "error":
        raise Cascade(pos, "")
    if a.kind != b.kind or a.kind not in kinds:
        raise Refusal(pos, f"{name} of a {a.kind} and a {b.kind}: Go compares only basic values of one kind "
                           "(and fails where Jinja2 would say false)")


BUILTINS: dict[str, Callable[[list[Value], Pos], Value]] = {
    "and": _logic("and"),
    "or": _logic("or"),
    "not": not_,
    "eq": eq,
    "ne": _compare("!=", "ne", {"str", "int", "bool"}),
    "lt": _compare("<", "lt", {"str", "int"}),
    "le": _compare("<=", "le", {"str", "int"}),
    "gt": _compare(">", "gt", {"str", "int"}),
    "ge": _compare(">=", "ge", {"str", "int"}),
    "len": len_,
    "index": index,
    "printf": printf,
    "print": _sprint(newline=False),
    "println": _sprint(newline=True),
}
