"""Filters that behave exactly as consul-template's functions and Go's printing do.

`confsync convert` writes them into the templates it translates, where Jinja2's own filters would
differ in a corner (Go's JSON escapes <, > and &; Go's TrimSpace and Python's strip disagree on a
few characters; Go prints true, not True). Each is a pure function of its input, so the sandbox is
unchanged. Anything they cannot reproduce exactly raises, which fails the render and keeps the last
good file, rather than writing something Go would not have written.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

# unicode.IsSpace: the White_Space property (Go's strings.TrimSpace)
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
           "\u2028\u2029\u202f\u205f\u3000"


def go_print(value: Any) -> str:
    """fmt.Sprint of a value: true/false, [a b], map[k:v] with sorted keys, <nil> inside."""
    return _go_value(value, top=True)


def _go_value(value: Any, top: bool = False) -> str:
    if value is None:
        return "<no value>" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_value(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    raise ValueError(f"go_print: cannot print a {type(value).__name__} as Go would")


def _go_float(value: float) -> str:
    """%v of a float64: the shortest repr, in exponent form outside [1e-4, 1e21) (strconv 'g', -1)."""
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if 1e-4 <= abs(value) < 1e16:
        return repr(value)
    raise ValueError(f"go_print: {value!r} is printed differently by Go")


def go_json(value: Any, pretty: bool = False, escape_html: bool = True) -> str:
    """Go's json.Marshal (toJSON) or MarshalIndent with two spaces (toJSONPretty): sorted keys,
    no spaces, UTF-8 kept, U+2028 and U+2029 escaped, and <, > and & too unless `escape_html` is
    false (toUnescapedJSON)."""
    if pretty:
        text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    _check_json_numbers(value)
    escapes = [("\u2028", "\\u2028"), ("\u2029", "\\u2029")]
    if escape_html:
        escapes += [("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")]
    for ch, esc in escapes:
        text = text.replace(ch, esc)  # only ever inside strings: JSON's syntax has none of them
    return text.strip()


def _check_json_numbers(value: Any) -> None:
    if isinstance(value, float) and not (value.is_integer() and abs(value) < 1e21) and \
            not 1e-6 <= abs(value) < 1e16:
        raise ValueError(f"go_json: {value!r} is written differently by Go")
    if isinstance(value, Mapping):
        for v in value.values():
            _check_json_numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_json_numbers(v)


def go_str(value: Any) -> str:
    """A value Go passes to a string parameter only if it is one."""
    if not isinstance(value, str):
        raise ValueError(f"wrong type for value; expected string; got {type(value).__name__}")
    return value


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote): Go escapes, printable characters kept."""
    out = ['"']
    for ch in text:
        if ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ch == " " or (ch.isprintable() and not ch.isspace()):
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_kv_path(path: str) -> str:
    """A Consul path computed at render time, refused where confsync would read another key:
    consul-template reads "key@dc" as a datacenter and keeps a leading or trailing "/"."""
    if not isinstance(path, str) or "@" in path or not path.strip("/") or path != path.strip("/"):
        raise ValueError(f"a Consul path {path!r} that confsync would read differently")
    return path


_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False, "": False}


def go_parse_bool(text: str) -> bool:
    """consul-template's parseBool: "" is false, else strconv.ParseBool's words."""
    if not isinstance(text, str) or text not in _BOOLS:
        raise ValueError(f"parseBool: {text!r} is not a boolean to Go")
    return _BOOLS[text]


def go_parse_int(text: str, unsigned: bool = False) -> int:
    """consul-template's parseInt and parseUint: "" is 0, else strconv's base-10 syntax (a sign
    for parseInt only, ASCII digits, no space or "_") within 64 bits."""
    if text == "":
        return 0
    low, high = (0, 2**64 - 1) if unsigned else (-(2**63), 2**63 - 1)
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]+" if unsigned else r"[+-]?[0-9]+", text) \
            or not low <= int(text) <= high:
        raise ValueError(f"parse{'Uint' if unsigned else 'Int'}: {text!r} is not a 64-bit integer to Go")
    return int(text)


def go_parse_float(text: str) -> float:
    """consul-template's parseFloat: "" is 0, else a decimal strconv.ParseFloat reads the same (its
    hexadecimal, Inf and NaN forms fail the render, as a value out of range fails there)."""
    if text == "":
        return 0.0
    if not isinstance(text, str) or not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text) \
            or math.isinf(float(text)):
        raise ValueError(f"parseFloat: {text!r} is not a float Go reads the same")
    return float(text)


_HTML = str.maketrans({"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def go_html(text: str) -> str:
    """text/template's html of a string (template.HTMLEscapeString)."""
    return text.translate(_HTML)


def go_urlquery(text: str) -> str:
    """text/template's urlquery of a string (url.QueryEscape: all but A-Z a-z 0-9 - _ . ~ escaped,
    a space as +)."""
    from urllib.parse import quote_plus

    return quote_plus(text, safe="")


def go_must_env(value: str, name: str) -> str:
    """consul-template's mustEnv: an empty (or unset) variable fails the render."""
    if not value:
        raise ValueError(f"required environment variable {name} is empty")
    return value


def go_service_name(name: str) -> str:
    """A service name computed at render time (`service .Name`), refused unless consul-template
    would read all of it as the name: a "." starts a tag, "@" a datacenter, "~" a near node
    (dependency.go serviceNameRe)."""
    return _plain_name(name, r"[A-Za-z0-9_\-]+", "service")


def go_node_name(name: str) -> str:
    """A node name computed at render time (`node .Node`), likewise ("@" starts a datacenter, and
    "" would be the local agent's node; nodeNameRe)."""
    return _plain_name(name, r"[A-Za-z0-9_.\-]+", "node")


def _plain_name(name: str, pattern: str, what: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(pattern, name):
        raise ValueError(f"a {what} name {name!r} that consul-template reads as more than a name")
    return name


def go_vault_path(path: str) -> str:
    """A Vault path computed at render time, trimmed as consul-template trims it (white space,
    then every leading and trailing "/"); nothing left fails the render, as it fails there."""
    trimmed = path.strip(GO_SPACE).strip("/") if isinstance(path, str) else ""
    if not trimmed:
        raise ValueError(f"a Vault path {path!r} that consul-template refuses")
    return trimmed


def go_trim(text: str) -> str:
    return text.strip(GO_SPACE)


def go_split(text: str, sep: str) -> list[str]:
    """consul-template's split: trimmed first, and an empty string gives an empty list."""
    text = go_trim(text)
    if not text:
        return []
    if not sep:
        return list(text)  # strings.Split with "" splits after each UTF-8 sequence
    return text.split(sep)


def go_split_to_map(text: str, sep: str, kv_sep: str) -> dict[str, str]:
    """consul-template's splitToMap: split as split does, each item cut at its first `kv_sep` (an
    item without one is left out; a later key wins)."""
    result = {}
    for item in go_split(text, sep):
        key, found, value = item.partition(kv_sep) if kv_sep else ("", "x", item)  # Cut(s, "") cuts at 0
        if found:
            result[key] = value
    return result


def go_indent(text: str, spaces: int) -> str:
    """consul-template's indent: the prefix before every line that does not start with a newline."""
    if spaces < 0:
        raise ValueError("indent value must be a positive integer")
    prefix = " " * spaces
    return "".join(prefix + line if line[:1] != "\n" else line for line in _lines(text))


def _lines(text: str) -> list[str]:
    """Split after each \\n, keeping it (Go's loop looks at \\n only)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else []) if text else []


def go_b64encode(text: str, url: bool = False) -> str:
    data = text.encode("utf-8")
    return (base64.urlsafe_b64encode(data) if url else base64.b64encode(data)).decode("ascii")


def go_b64decode(text: str, url: bool = False) -> str:
    """Go's base64.StdEncoding / URLEncoding: padding required, CR and LF ignored, nothing else."""
    cleaned = text.replace("\r", "").replace("\n", "")
    if url:
        cleaned = cleaned.replace("-", "+").replace("_", "/")
        if "+" in text or "/" in text:
            raise ValueError("base64URLDecode: illegal base64 data")
    try:
        data = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("base64Decode: illegal base64 data") from None
    if len(cleaned) % 4:
        raise ValueError("base64Decode: illegal base64 data")
    return data.decode("utf-8")  # Go would keep invalid UTF-8 as bytes: we fail instead


def _simple_case(text: str, upper: bool) -> str:
    """Go maps each rune alone (simple case mapping); Python's full mapping may change the length."""
    if text.isascii():
        return text.upper() if upper else text.lower()
    out = []
    for ch in text:
        mapped = ch.upper() if upper else ch.lower()
        if len(mapped) != 1:
            raise ValueError(f"{'toUpper' if upper else 'toLower'}: {ch!r} maps differently in Go")
        out.append(mapped)
    return "".join(out)


def go_lower(text: str) -> str:
    return _simple_case(text, upper=False)


def go_upper(text: str) -> str:
    return _simple_case(text, upper=True)


def by_tag(instances: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """consul-template's byTag: tag → the instances carrying it, in their order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for instance in instances:
        for tag in instance.get("tags") or []:
            groups.setdefault(tag, []).append(instance)
    return groups


def by_port(instances: list[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """consul-template's byPort: port → the instances listening on it, in their order."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for instance in instances:
        groups.setdefault(instance["port"], []).append(instance)
    return groups


def by_meta(instances: list[Mapping[str, Any]], keys: str) -> dict[str, list[Mapping[str, Any]]]:
    """consul-template's byMeta "k1,k2|int": the instances grouped by their service meta values,
    each made safe ([^A-Za-z0-9_-] → "_"), "_no_<k>_" for a missing or empty one, "|int" ones as
    %05d (0 when missing), joined with "_"."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for instance in instances:
        parts = []
        for key in keys.split(","):
            name = key.removesuffix("|int")
            value = (instance.get("meta") or {}).get(name) or ("0" if key.endswith("|int") else f"_no_{name}_")
            if key.endswith("|int"):
                value = f"{go_parse_int(value):05d}"  # strconv.Atoi's syntax, else the render fails
            parts.append(re.sub(r"[^a-zA-Z0-9_-]", "_", value))
        groups.setdefault("_".join(parts), []).append(instance)
    return groups


def by_key(tree: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """consul-template's byKey: a tree grouped by its first path segment ("a/b/c" → a: {"b/c": …})."""
    groups: dict[str, dict[str, str]] = {}
    for path in sorted(tree):
        top, _, rest = path.partition("/")
        if rest:
            groups.setdefault(top, {})[rest] = tree[path]
    return groups


def explode(tree: Mapping[str, str]) -> dict[str, Any]:
    """consul-template's explode: a tree as nested mappings; a key that is also a folder is an error."""
    out: dict[str, Any] = {}
    for path in sorted(tree):
        node = out
        *folders, leaf = path.split("/")
        for part in folders:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"explode: not a map: {path!r}: {part!r} already has a value")
            node = child
        if leaf:
            node[leaf] = tree[path]
    return out


FILTERS = {f.__name__: f for f in (go_print, go_json, go_str, go_quote, go_kv_path, go_html, go_urlquery, go_must_env,
                                   go_parse_bool, go_parse_float, go_parse_int, go_node_name, go_service_name,
                                   go_vault_path, go_trim, go_split, go_split_to_map, go_indent, go_b64encode,
                                   go_b64decode, go_lower, go_upper, by_tag, by_port, by_meta, by_key, explode)}
