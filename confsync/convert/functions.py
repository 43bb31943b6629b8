"""consul-template's template functions (template/funcs.go) → their exact Jinja2 equivalents.

Each translator gets the arguments already translated (`Value`s, in Go's order: a pipeline's
value is the last argument) and returns a `Value`, or raises `Refusal` with the reason. A function
not in `TRANSLATORS` is refused: `REFUSED` says why for the ones consul-template has.
"""

from __future__ import annotations

from collections.abc import Callable

from confsync.convert import consul
from confsync.convert.gotemplate import Pos
from confsync.convert.values import INT64, Refusal, Value, count, jinja_string, literal_str, want
from confsync.filters_go import GO_SPACE

VAULT = "vault"  # the source name the converted config declares

Translator = Callable[[list[Value], Pos], Value]

REFUSED = {
    "plugin": "runs a program; confsync templates cannot run programs (sandbox)",
    "writeToFile": "writes files from a template; confsync writes only destinations",
    "file": "reads any file; use a files source (sources: {local: {type: files, root: ...}})",
    "timestamp": "changes at every render; a confsync render depends on its inputs only",
    "scratch": "mutable scratch storage has no sandbox-safe equivalent; use variables",
    "toYAML": "Go's yaml.v2 quotes and orders differently from confsync's to_yaml",
    "toTOML": "no TOML writer in confsync",
    "pkiCert": "keeps a certificate in the destination file; use secret on pki/issue",
    "sockaddr": "reads the host's network interfaces",
    "regexMatch": "Go's RE2 syntax differs from Python's re",
    "regexReplaceAll": "Go's RE2 syntax differs from Python's re",
    "js": "Go's JavaScript escaping has no Jinja2 equivalent",
    "call": "calls a function value; none exist in confsync",
    "slice": "no exact equivalent",
    "safeLs": "refuses to render on an empty prefix; use ls with confsync's min_bytes guard",
    "safeTree": "refuses to render on an empty prefix; use tree with confsync's min_bytes guard",
}


# -- Vault --------------------------------------------------------------------------------------


def _vault_path(v: Value, pos: Pos, name: str) -> tuple[str, str, str]:
    """(the path's Jinja2 code, what is known of its text, "literal" or "prefix"). consul-template
    trims white space and then "/" from both ends (vault_read.go, vault_list.go); a literal is
    trimmed here, a computed path by go_vault_path when it is rendered."""
    v = want(v, "str", pos, f"{name}'s path")
    if v.is_literal:
        path = str(v.literal).strip(GO_SPACE).strip("/")
        if not path:
            raise Refusal(pos, f"{name} of an empty path: consul-template reads nothing (or fails)")
        return jinja_string(path), path, "literal"
    return f"({v.code} | go_vault_path)", (v.prefix or "").lstrip(GO_SPACE).lstrip("/"), "prefix"


def secret(args: list[Value], pos: Pos) -> Value:
    if not args:
        raise Refusal(pos, "secret needs a path")
    path, known, how = _vault_path(args[0], pos, "secret")
    params = []
    for a in args[1:]:
        text = literal_str(a, pos, "secret's parameters")
        if not text:
            continue
        k, sep, v = text.partition("=")
        if not sep:
            raise Refusal(pos, f"secret parameter {text!r} is not key=value")
        k, v = k.strip(), v.strip()
        if not k.isidentifier():
            raise Refusal(pos, f"secret parameter name {k!r} is not an identifier")
        params.append(f"{k}={jinja_string(v)}")
    return Value(f"{VAULT}.secret({', '.join([path, *params])})", "secret", extra=(known, how))


def secrets(args: list[Value], pos: Pos) -> Value:
    # vault_list.go: the key names, sorted; a sub-folder's ends with "/"; none is an empty list
    count(args, 1, pos, "secrets")
    path, _, _ = _vault_path(args[0], pos, "secrets")
    return Value(f"{VAULT}.list({path})", "strlist")


# -- text, lists, maps --------------------------------------------------------------------------


def env(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "env")
    name = want(args[0], "str", pos, "env")
    return Value(f'env({name.code}, "")', "str")  # Go's env gives "" for an unset variable


def must_env(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "mustEnv")
    name = want(args[0], "str", pos, "mustEnv")
    return Value(f'(env({name.code}, "") | go_must_env({name.code}))', "str")  # empty: the render fails


def env_or_default(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "envOrDefault")
    name, default = (want(a, "str", pos, "envOrDefault") for a in args)
    return Value(f"env({name.code}, {default.code})", "str")


_JSON_OK = {"str", "int", "bool", "strlist", "strmap", "json", "anymap", "any"}


def _to_json(pretty: bool = False, escape_html: bool = True) -> Translator:
    def translate(args: list[Value], pos: Pos) -> Value:
        count(args, 1, pos, "toJSON")
        v = want(args[0], _JSON_OK, pos, "toJSON (Go marshals consul-template's structs with fields confsync "
                                          "does not have)")
        options = [o for o, on in (("pretty=true", pretty), ("escape_html=false", not escape_html)) if on]
        return Value(f"({v.code} | go_json{'(' + ', '.join(options) + ')' if options else ''})", "str")
    return translate


def loop(args: list[Value], pos: Pos) -> Value:
    count(args, (1, 2), pos, "loop")
    bounds = [want(a, "int", pos, "loop") for a in args]
    return Value(f"range({', '.join(b.code for b in bounds)})", "intlist")


def _trim_affix(method: str, name: str) -> Translator:
    def translate(args: list[Value], pos: Pos) -> Value:
        count(args, 2, pos, name)
        affix, s = (want(a, "str", pos, name) for a in args)
        return Value(f"{_atom(s)}.{method}({affix.code})", "str")
    return translate


def _parse(filter_code: str, kind: str, name: str, nonneg: bool = False) -> Translator:
    def translate(args: list[Value], pos: Pos) -> Value:
        count(args, 1, pos, name)
        s = want(args[0], "str", pos, name)
        return Value(f"({s.code} | {filter_code})", kind, INT64 if kind == "int" else (), nonneg=nonneg)
    return translate


def parse_json(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "parseJSON")
    v = want(args[0], "str", pos, "parseJSON")
    return Value(f'(({v.code}) or "{{}}") | from_json', "json")  # "" parses as {} (funcs.go parseJSON)


def split(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "split")
    sep, s = (want(a, "str", pos, "split") for a in args)
    return Value(f"({s.code} | go_split({sep.code}))", "strlist")


def split_to_map(args: list[Value], pos: Pos) -> Value:
    count(args, 3, pos, "splitToMap")
    sep, kv_sep, s = (want(a, "str", pos, "splitToMap") for a in args)
    return Value(f"({s.code} | go_split_to_map({sep.code}, {kv_sep.code}))", "strmap")


def join(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "join")
    sep = want(args[0], "str", pos, "join's separator")
    items = want(args[1], "strlist", pos, "join")
    return Value(f"({items.code} | join({sep.code}))", "str")


def replace_all(args: list[Value], pos: Pos) -> Value:
    count(args, 3, pos, "replaceAll")
    old, new, s = (want(a, "str", pos, "replaceAll") for a in args)
    return Value(f"{_atom(s)}.replace({old.code}, {new.code})", "str")


def contains_in(args: list[Value], pos: Pos, reverse: bool) -> Value:
    count(args, 2, pos, "in")
    haystack, needle = (args[1], args[0]) if reverse else (args[0], args[1])
    want(needle, "str", pos, "in/contains: the value")
    want(haystack, {"str", "strlist"}, pos, "in/contains: the list or string")
    return Value(f"({needle.code} in {haystack.code})", "bool")


def by_tag(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "byTag")
    v = want(args[0], "services", pos, "byTag")
    return Value(f"({v.code} | by_tag)", "bytag")


def by_port(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "byPort")
    v = want(args[0], "services", pos, "byPort")
    return Value(f"({v.code} | by_port)", "portmap")


def by_meta(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "byMeta")
    keys = want(args[0], "str", pos, "byMeta's keys")
    v = want(args[1], "services", pos, "byMeta")
    return Value(f"({v.code} | by_meta({keys.code}))", "bytag")  # map[string][]*HealthService, as byTag's


def by_key(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "byKey")
    v = want(args[0], "kvlist", pos, "byKey")
    if v.extra:
        raise Refusal(pos, "byKey of ls: ls has no nested keys, so the result is always empty")
    return Value(f"({v.code} | by_key)", "bykey")


def explode(args: list[Value], pos: Pos) -> Value:
    count(args, 1, pos, "explode")
    v = want(args[0], "kvlist", pos, "explode")
    if v.extra:
        raise Refusal(pos, "explode of ls: use explode of tree")
    return Value(f"({v.code} | explode)", "anymap")


def indent(args: list[Value], pos: Pos) -> Value:
    count(args, 2, pos, "indent")
    n = want(args[0], "int", pos, "indent's width")
    if n.extra == INT64:
        raise Refusal(pos, "indent's width from add…modulo, parseInt or loop: an int64, which Go refuses for an int")
    s = want(args[1], "str", pos, "indent")
    return Value(f"({s.code} | go_indent({n.code}))", "str")


def _arith(op: str, name: str, nonneg_only: bool = False) -> Translator:
    def translate(args: list[Value], pos: Pos) -> Value:
        count(args, 2, pos, name)
        b, a = (want(x, "int", pos, name) for x in args)  # funcs.go: add(b, a) is a + b
        if nonneg_only and not (a.nonneg and b.nonneg):
            raise Refusal(pos, f"{name} of integers that may be negative: Go truncates toward zero, "
                               "Python floors")
        return Value(f"({a.code} {op} {b.code})", "int", INT64, nonneg=a.nonneg and b.nonneg and op != "-")
    return translate


def _text_filter(filter_name: str, name: str) -> Translator:
    def translate(args: list[Value], pos: Pos) -> Value:
        count(args, 1, pos, name)
        s = want(args[0], "str", pos, name)
        return Value(f"({s.code} | {filter_name})", "str")
    return translate


def _atom(v: Value) -> str:
    return v.code if v.code.startswith("(") or v.code.replace(".", "").replace("_", "").isalnum() \
        or v.is_literal else f"({v.code})"


TRANSLATORS: dict[str, Translator] = {
    **consul.TRANSLATORS,
    "secret": secret,
    "secrets": secrets,
    "env": env,
    "envOrDefault": env_or_default,
    "mustEnv": must_env,
    "toJSON": _to_json(),
    "toJSONPretty": _to_json(pretty=True),
    "toUnescapedJSON": _to_json(escape_html=False),
    "toUnescapedJSONPretty": _to_json(pretty=True, escape_html=False),
    "loop": loop,
    "trimPrefix": _trim_affix("removeprefix", "trimPrefix"),
    "trimSuffix": _trim_affix("removesuffix", "trimSuffix"),
    "trim": _trim_affix("strip", "trim"),  # strings.Trim(s, cutset): the same set of code points
    "splitToMap": split_to_map,
    "sha256Hex": _text_filter("sha256", "sha256Hex"),
    "md5sum": _text_filter("md5", "md5sum"),
    "parseJSON": parse_json,
    "parseBool": _parse("go_parse_bool", "bool", "parseBool"),
    "parseInt": _parse("go_parse_int", "int", "parseInt"),
    "parseFloat": _parse("go_parse_float", "float", "parseFloat"),
    "parseUint": _parse("go_parse_int(unsigned=true)", "int", "parseUint", nonneg=True),
    "split": split,
    "join": join,
    "replaceAll": replace_all,
    "contains": lambda args, pos: contains_in(args, pos, reverse=True),
    "in": lambda args, pos: contains_in(args, pos, reverse=False),
    "byTag": by_tag,
    "byKey": by_key,
    "byMeta": by_meta,
    "byPort": by_port,
    "explode": explode,
    "indent": indent,
    "add": _arith("+", "add"),
    "subtract": _arith("-", "subtract"),
    "multiply": _arith("*", "multiply"),
    "divide": _arith("//", "divide", nonneg_only=True),
    "modulo": _arith("%", "modulo", nonneg_only=True),
    "base64Encode": _text_filter("b64encode", "base64Encode"),
    "base64Decode": _text_filter("go_b64decode", "base64Decode"),
    "base64URLEncode": _text_filter("go_b64encode(url=true)", "base64URLEncode"),
    "base64URLDecode": _text_filter("go_b64decode(url=true)", "base64URLDecode"),
    "toLower": _text_filter("go_lower", "toLower"),
    "html": _text_filter("go_html", "html"),  # of one string: of several, Go escapes fmt.Sprint's
    "urlquery": _text_filter("go_urlquery", "urlquery"),
    "toUpper": _text_filter("go_upper", "toUpper"),
    "trimSpace": _text_filter("go_trim", "trimSpace"),
}
