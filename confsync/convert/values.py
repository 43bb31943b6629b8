"""What the emitter knows about each Go value: its Jinja2 expression and its type.

Types are what consul-template's functions return (dependency/*.go), reduced to what a template can
reach; a value whose Go printing, comparison or iteration cannot be matched exactly in Jinja2 is
refused where it is used, not guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from confsync.convert.gotemplate import Pos

# kind → what it is in Go (consul-template) / in the converted template
#   str, int, bool, float      Go's basic types / Python's
#   json                       parseJSON's interface{} (numbers are float64 in Go)
#   any                        a Vault field, an explode() node: printed through go_print
#   strlist, strmap            []string / map[string]string
#   intlist                    loop's channel of int64        / range()
#   kvlist                     []*KeyPair from tree/ls        / a mapping path → value (+ `ls` filter)
#   kvpair                     *KeyPair                       / two loop variables (key, value)
#   pairmap, bykey             byKey's maps                   / nested mappings
#   services, service          []*HealthService / one         / consul.service() list / a mapping
#   snippets, snippet          []*CatalogSnippet / one        / consul.services() mapping / (name, tags)
#   bytag                      byTag's map tag → services     / a mapping
#   secret, secretdata         *Secret / .Data                / vault.secret() fields
#   anymap                     map[string]interface{}         / a mapping
#   nodes, node                []*Node / one                  / consul.nodes() / a mapping
#   catalognode                *CatalogNode (.Node, .Services) / consul.node()
#   nodeservices, nodeservice  []*CatalogNodeService / one    / its "services" / a mapping
#   weights                    api.AgentWeights               / a service's "weights"
#   checks, check              api.HealthChecks / one         / a service's "checks" / a mapping
#   portmap                    byPort's map[int][]…           / a mapping port → instances
#   addrmap, svcaddr           map[string]api.ServiceAddress / one / "tagged_addresses" / a mapping
#   caroots, caroot, caleaf    []*api.CARoot / one, *api.LeafCert / consul.ca_roots(), ca_leaf()
# the extra of an int that is an int64 in Go (arithmetic, parseInt, loop), which a function taking an
# int (indent) refuses there, unlike a literal, len or a Port
INT64 = ("int64",)
# a list kind → its elements' kind (each ranged over, indexed and counted the same way)
LISTS = {"services": "service", "strlist": "str", "intlist": "int", "nodes": "node", "nodeservices": "nodeservice",
         "caroots": "caroot", "checks": "check"}
# a map kind (string keys, ranged over in sorted order) → its values' kind
MAPS = {"strmap": "str", "anymap": "any", "bytag": "services", "bykey": "pairmap", "pairmap": "kvpair",
        "addrmap": "svcaddr", "portmap": "services"}
MAP_KEYS = {"portmap": "int"}  # the maps whose keys are not strings
PRINTABLE = {"str", "int"}  # printed by Jinja2 exactly as Go prints them
GO_PRINTED = {"bool", "json", "any", "strlist", "strmap", "anymap", "float"}  # through go_print


@dataclass(frozen=True)
class Value:
    code: str  # the Jinja2 expression
    kind: str
    # kvpair: (key, value) codes; snippet: (name, tags); secret: (its path, or the start of a path
    # computed by printf, and "literal" or "prefix")
    extra: tuple[str, ...] = ()
    nonneg: bool = False  # an int known not to be negative (len, Port, a literal)
    literal: object = None  # the Go literal, when the value is one
    is_literal: bool = False
    prefix: str | None = None  # a string printf computes: the format's text before its first verb


class Refusal(Exception):
    """A construct that cannot be translated exactly: where, and why."""

    def __init__(self, pos: Pos, reason: str) -> None:
        super().__init__(reason)
        self.pos, self.reason = pos, reason


class Cascade(Refusal):
    """A use of something already refused: not reported twice."""


# -- checks of a function's arguments, for the translators -----------------------------------


def want(v: Value, kinds: set[str] | str, pos: Pos, what: str) -> Value:
    kinds = {kinds} if isinstance(kinds, str) else kinds
    if v.kind == "any" and "str" in kinds and "any" not in kinds:  # a Vault field: Go takes it if it is a string
        return Value(f"({v.code} | go_str)", "str")
    if v.kind not in kinds:
        raise Refusal(pos, f"{what}: expects {' or '.join(sorted(kinds))}, got a {v.kind} value "
                           "(Go would fail or convert differently)")
    return v


def count(args: list[Value], n: int | tuple[int, int], pos: Pos, name: str) -> None:
    low, high = (n, n) if isinstance(n, int) else n
    if not low <= len(args) <= high:
        raise Refusal(pos, f"{name}: wrong number of arguments ({len(args)})")


def literal_str(v: Value, pos: Pos, what: str) -> str:
    if not v.is_literal or not isinstance(v.literal, str):
        raise Refusal(pos, f"{what} must be a quoted string literal to be translated")
    return v.literal


def jinja_string(text: str) -> str:
    """A Jinja2 string literal that reads back as exactly `text` (Jinja2 decodes backslash escapes
    and would turn a raw CR into LF)."""
    out = ['"']
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def literal(value: object, pos: Pos) -> Value:
    if isinstance(value, bool):
        return Value("true" if value else "false", "bool", literal=value, is_literal=True)
    if isinstance(value, int):
        return Value(str(value), "int", nonneg=value >= 0, literal=value, is_literal=True)
    if isinstance(value, float):
        return Value(json.dumps(value), "float", literal=value, is_literal=True)
    if isinstance(value, str):
        return Value(jinja_string(value), "str", literal=value, is_literal=True)
    raise Refusal(pos, "nil is not a value in a Go template pipeline")


def unique(base: str, used: set[str], sep: str) -> str:
    """`base`, or `base<sep>2`, `base<sep>3`… whichever is not in `used` yet (then it is)."""
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}{sep}{n}"
    used.add(name)
    return name


def paren(code: str) -> str:
    """`code` as an operand: in parentheses unless it is a name, a call or already in them."""
    return code if is_name(code) or re.fullmatch(r"[\w.]+\(.*\)|\(.*\)", code) else f"({code})"


def is_name(code: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", code))
