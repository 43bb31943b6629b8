"""consul-template's Consul functions (KV, catalog, Connect) → the consul source's.

Queries are parsed with consul-template's own patterns (dependency/dependency.go: keyRe, tagRe,
serviceNameRe, nodeNameRe, dcRe, nearRe, filterRe; `[[:word:]]` is ASCII in Go), each part becoming
a keyword argument. `?ns=`, `?partition=` and `?peer=` are refused: Consul CE, which the equivalence
tests run against, cannot show them rendering the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from confsync.convert.gotemplate import Pos
from confsync.convert.values import Refusal, Value, count, jinja_string, literal_str, want

CONSUL = "consul"  # the source name the converted config declares

_WORD = r"[A-Za-z0-9_.\-]+"
_DC = rf"(?:@(?P<dc>{_WORD}))?"
_NEAR = rf"(?:~(?P<near>{_WORD}))?"
_SERVICE = re.compile(rf"^(?:(?P<tag>[A-Za-z0-9_=:.\-]+)\.)?(?P<name>[A-Za-z0-9_\-]+){_DC}{_NEAR}"
                      r"(?:\|(?P<filter>[A-Za-z0-9_,]+))?$")
_NODE = re.compile(rf"^(?P<name>{_WORD}){_DC}$")
_NODES = re.compile(rf"^{_DC}{_NEAR}$")
_SERVICES = re.compile(rf"^{_DC}$")
_STATES = ("any", "passing", "warning", "critical", "maintenance")


def _call(function: str, params: list[str], m: re.Match[str] | None, *names: str) -> str:
    params = params + [f"{n}={jinja_string(m.group(n))}" for n in names if m and m.group(n)]
    return f"{CONSUL}.{function}({', '.join(params)})"


def _query(args: list[Value], pos: Pos, name: str, pattern: re.Pattern[str], sep: str = "") -> re.Match[str]:
    spec = sep.join(literal_str(a, pos, f"{name}'s query") for a in args)
    m = pattern.match(spec)
    if not m:
        why = "Consul Enterprise's ?ns=, ?partition= and ?peer= are not translated" if "?" in spec else "not understood"
        raise Refusal(pos, f"{name} query {spec!r}: {why}")
    return m


# -- KV ------------------------------------------------------------------------------------------


def _kv_path(args: list[Value], pos: Pos, name: str) -> str:
    """The path's Jinja2 arguments. A literal is checked here (and its `@dc` becomes `dc=`); a path
    computed at render time goes through go_kv_path, which fails the render on what confsync would
    read differently."""
    count(args, 1, pos, name)
    v = want(args[0], "str", pos, f"{name}'s path")
    if not v.is_literal:
        return f"({v.code} | go_kv_path)"
    path, at, dc = str(v.literal).partition("@")
    # keyRe and prefixRe: one leading "/" is not part of the path; a folder listed as "p/" is the
    # folder p, as confsync lists it (and without "apple/…", which "p" would also list)
    path = path.removeprefix("/")
    if name in ("tree", "ls"):
        path = path.removesuffix("/")
    if "?" in path:
        raise Refusal(pos, f"{name} {v.literal!r}: Consul Enterprise's ?ns= and ?partition= are not translated")
    if at and not re.fullmatch(_WORD, dc):
        raise Refusal(pos, f"{name} {v.literal!r}: not a datacenter consul-template reads")
    if not path.strip("/"):
        raise Refusal(pos, f"{name} of an empty path")
    if path.startswith("/") or path.endswith("/"):
        raise Refusal(pos, f"{name} {v.literal!r}: confsync strips every leading and trailing /, consul-template "
                           "one leading / (and, for tree and ls, one trailing /)")
    return jinja_string(path) + (f", dc={jinja_string(dc)}" if at else "")


def key(args: list[Value], pos: Pos) -> Value:
    return Value(f"{CONSUL}.key({_kv_path(args, pos, 'key')})", "str")


def key_or_default(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "keyOrDefault")
    path = _kv_path(args[:1], pos, "keyOrDefault")
    default = want(args[1], "str", pos, "keyOrDefault's default")
    # consul-template returns the default for an empty value too (funcs.go keyWithDefaultFunc)
    return Value(f"({CONSUL}.key({path}, default={default.code}) or {default.code})", "str")


def key_exists(args: list[Value], pos: Pos) -> Value:
    return Value(f"({CONSUL}.key({_kv_path(args, pos, 'keyExists')}, default=none) is not none)", "bool")


def tree(args: list[Value], pos: Pos) -> Value:
    return Value(f"{CONSUL}.tree({_kv_path(args, pos, 'tree')})", "kvlist")


def ls(args: list[Value], pos: Pos) -> Value:
    # ls: the tree's top-level keys only (funcs.go lsFunc skips keys with a "/")
    return Value(f"{CONSUL}.tree({_kv_path(args, pos, 'ls')})", "kvlist", extra=("ls",))


# -- the catalog ---------------------------------------------------------------------------------


def _service(connect: bool) -> Callable[[list[Value], Pos], Value]:
    name = "connect" if connect else "service"

    def translate(args: list[Value], pos: Pos) -> Value:
        if not args:
            raise Refusal(pos, f"{name} needs a name")
        computed = not args[0].is_literal
        if computed:  # `service .Name`: a plain name, checked when rendered; the rest literal health states
            first = want(args[0], "str", pos, f"{name}'s name")
            args = [Value('"x"', "str", literal="x", is_literal=True), *args[1:]]
        m = _query(args, pos, name, _SERVICE, sep="|")
        params = [f"({first.code} | go_service_name)" if computed else jinja_string(m.group("name"))]
        if m.group("tag"):
            params.append(f"tag={jinja_string(m.group('tag'))}")
        # health_service.go: a set of states, "any" accepting every instance; none (or just passing) is passing
        states = sorted({f for f in (m.group("filter") or "").split(",") if f})
        unknown = sorted(set(states) - set(_STATES))
        if unknown:
            raise Refusal(pos, f"{name} query {m.string!r}: unknown health state {unknown[0]!r}")
        if "any" in states:
            params.append('state="any"')
        elif states and states != ["passing"]:
            params.append(f"state=[{', '.join(jinja_string(s) for s in states)}]")
        if connect:
            params.append("connect=true")
        return Value(_call("service", params, m, "near", "dc"), "services")
    return translate


def services(args: list[Value], pos: Pos) -> Value:
    m = _query(args, pos, "services", _SERVICES) if args else None
    return Value(_call("services", [], m, "dc"), "snippets")


def node(args: list[Value], pos: Pos) -> Value:
    if len(args) == 1 and not args[0].is_literal:  # `node .Node`: a plain name, checked when rendered
        name = want(args[0], "str", pos, "node's name")
        return Value(f"{CONSUL}.node(({name.code} | go_node_name))", "catalognode")
    # catalog_node.go: no name (or "") is the local agent's node
    spec = "".join(literal_str(a, pos, "node's name") for a in args)
    m = _query(args, pos, "node", _NODE) if spec else None
    return Value(_call("node", [jinja_string(m.group("name"))] if m else [], m, "dc"), "catalognode")


def nodes(args: list[Value], pos: Pos) -> Value:
    m = _query(args, pos, "nodes", _NODES) if args else None
    return Value(_call("nodes", [], m, "dc", "near"), "nodes")


def datacenters(args: list[Value], pos: Pos) -> Value:
    if args:
        raise Refusal(pos, "datacenters true (leaving out the datacenters that cannot be reached) is not translated")
    return Value(f"{CONSUL}.datacenters()", "strlist")


# -- Connect -------------------------------------------------------------------------------------


def ca_roots(args: list[Value], pos: Pos) -> Value:
    count(args, 0, pos, "caRoots")
    return Value(f"{CONSUL}.ca_roots()", "caroots")


def ca_leaf(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "caLeaf")
    return Value(f"{CONSUL}.ca_leaf({jinja_string(literal_str(args[0], pos, 'caLeaf'))})", "caleaf")


TRANSLATORS: dict[str, Callable[[list[Value], Pos], Value]] = {
    "key": key,
    "keyOrDefault": key_or_default,
    "keyExists": key_exists,
    "tree": tree,
    "ls": ls,
    "service": _service(connect=False),
    "connect": _service(connect=True),
    "services": services,
    "node": node,
    "nodes": nodes,
    "datacenters": datacenters,
    "caRoots": ca_roots,
    "caLeaf": ca_leaf,
}
