"""Go's printf (fmt) verbs → Python's `%` formatting, through Jinja2's `format` filter.

Only the verbs whose output is the same for the argument's known type are translated: %s of a
string, %d/%x/%X of an integer, %q of a string through go_quote, %v and %t through go_print, %%;
flags, width and precision pass through (Python counts code points, as Go counts runes). The rest is
refused.
"""

from __future__ import annotations

import re

from confsync.convert.gotemplate import Pos
from confsync.convert.values import GO_PRINTED, Refusal, Value, jinja_string

_VERB = re.compile(r"%(?P<flags>[-+# 0]*)(?P<width>\d*)(?P<prec>(?:\.\d*)?)(?P<verb>.?)", re.S)


def translate(fmt: str, args: list[Value], pos: Pos) -> Value:
    out: list[str] = []
    values: list[str] = []
    i = 0
    pending = list(args)
    for m in _VERB.finditer(fmt):
        out.append(fmt[i:m.start()].replace("%", "%%"))
        i = m.end()
        verb, spec = m.group("verb"), m.group("flags") + m.group("width") + m.group("prec")
        if verb == "%":
            out.append("%%")
            continue
        if not pending:
            raise Refusal(pos, f"printf {fmt!r}: more verbs than arguments (Go writes %!{verb}(MISSING))")
        arg = pending.pop(0)
        out.append(_verb(verb, spec, arg, pos, fmt))
        values.append(_argument(verb, arg))
    out.append(fmt[i:].replace("%", "%%"))
    if pending:
        raise Refusal(pos, f"printf {fmt!r}: more arguments than verbs (Go appends %!(EXTRA ...))")
    code = jinja_string("".join(out))
    prefix = fmt.partition("%")[0]
    if not values:
        return Value(f"({code} | format)", "str", prefix=prefix)
    return Value(f"({code} | format({', '.join(values)}))", "str", prefix=prefix)


_TEXT_SPEC = re.compile(r"-?(?:[1-9]\d*)?(?:\.\d*)?")  # Go pads strings with "0" where Python pads spaces
_INT_SPEC = re.compile(r"[-+# 0]*\d*")  # precision on integers differs around the 0 flag


def _verb(verb: str, spec: str, arg: Value, pos: Pos, fmt: str) -> str:
    k = arg.kind
    if verb in ("s", "q", "v", "t") and not _TEXT_SPEC.fullmatch(spec) or \
            verb in ("d", "x", "X") and not _INT_SPEC.fullmatch(spec):
        raise Refusal(pos, f"printf {fmt!r}: the flags of %{spec}{verb} differ between Go and Python")
    if verb == "s" and k == "str":
        return f"%{spec}s"
    if verb in ("d", "x", "X") and k == "int":
        return f"%{spec}{verb}"
    if verb == "v" and k == "str":
        return f"%{spec}s"
    if verb == "v" and k == "int":
        return f"%{spec}d"
    if verb in ("v", "t") and (k == "bool" or (verb == "v" and k in GO_PRINTED)):
        return f"%{spec}s"
    if verb == "q" and k == "str" and "." not in spec:
        return f"%{spec}s"  # the argument goes through go_quote
    if verb == "f" and k in ("float", "json") and "#" not in spec:
        return f"%{spec}f"
    raise Refusal(pos, f"printf {fmt!r}: %{spec}{verb} of a {k} value has no exact Python equivalent")


def _argument(verb: str, arg: Value) -> str:
    if verb == "q":
        return f"({arg.code} | go_quote)"
    if arg.kind in ("str", "int", "float", "json") and verb != "v" or arg.kind in ("str", "int"):
        return arg.code
    return f"({arg.code} | go_print)"
