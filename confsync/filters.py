"""What templates get beyond Jinja2's own filters: encodings, digests, regexes, parsers, time.

The names follow consul-template's helpers where it has one (regexReplaceAll → `regex_replace`,
sha256Hex → `sha256`, parseYAML → `from_yaml`, toTOML → `to_toml`...; CT#1206, #1316, #262), in
the snake case of Jinja2's own filters. Everything here runs inside the sandbox on values from
semi-trusted sources, so each helper is bounded: regexes run under a time limit (the `regex`
module's `timeout`, where `re` would backtrack for ever), results under a size limit, YAML under
an alias limit (an alias bomb is a few hundred bytes).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from confsync import filters_go

REGEX_SECONDS = 1.0  # per call: a pattern a template cannot afford is an error, not a hang
MAX_RESULT = 16 * 1024 * 1024  # characters a single helper may return
MAX_YAML_ALIASES = 100


class FilterError(ValueError):
    """A helper refused its input; the render fails with this message (never the value)."""


def _bounded(text: str, name: str) -> str:
    if len(text) > MAX_RESULT:
        raise FilterError(f"{name}: result larger than {MAX_RESULT} characters")
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


# -- serialisation ----------------------------------------------------------------------------

def to_json(value: Any, indent: int | None = None, sort_keys: bool = True) -> str:
    return _bounded(json.dumps(_plain(value), indent=indent, sort_keys=sort_keys), "to_json")


def to_yaml(value: Any) -> str:
    import yaml

    return _bounded(yaml.safe_dump(_plain(value), default_flow_style=False, sort_keys=True), "to_yaml")


def to_toml(value: Any) -> str:
    import tomli_w

    if not isinstance(value, Mapping):
        raise FilterError(f"to_toml: needs a mapping at the top, not {type(value).__name__}")
    try:
        return _bounded(tomli_w.dumps(_plain(value)), "to_toml")
    except TypeError as exc:  # None and other values TOML has no type for
        raise FilterError(f"to_toml: {exc}") from None


def from_yaml(text: str) -> Any:
    import yaml

    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
        if aliases > MAX_YAML_ALIASES:
            raise FilterError(f"from_yaml: more than {MAX_YAML_ALIASES} aliases")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FilterError(f"from_yaml: not valid YAML{where}") from None


def from_toml(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FilterError(f"from_toml: not valid TOML ({str(exc).split('(')[-1].rstrip(')')})") from None


# -- encodings and digests --------------------------------------------------------------------

def b64encode(value: str | bytes) -> str:
    return base64.b64encode(_bytes(value)).decode("ascii")


def b64decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


def b64url_encode(value: str | bytes) -> str:
    return base64.urlsafe_b64encode(_bytes(value)).decode("ascii")


def b64url_decode(value: str) -> str:
    padded = value + "=" * (-len(value) % 4)  # JWTs and friends drop the padding
    return base64.urlsafe_b64decode(padded).decode("utf-8")


def sha256(value: str | bytes) -> str:
    return hashlib.sha256(_bytes(value)).hexdigest()


def sha1(value: str | bytes) -> str:
    return hashlib.sha1(_bytes(value), usedforsecurity=False).hexdigest()


def md5(value: str | bytes) -> str:
    return hashlib.md5(_bytes(value), usedforsecurity=False).hexdigest()


# -- strings and regexes ----------------------------------------------------------------------

def split(value: str, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    return value.split(sep, maxsplit)


def _regex(name: str, call: str, *args: Any) -> Any:
    import regex  # here: 12 ms of every start, for the few templates that use a regex

    try:
        return getattr(regex, call)(*args, timeout=REGEX_SECONDS)
    except TimeoutError:
        raise FilterError(f"{name}: the pattern took longer than {REGEX_SECONDS:g}s") from None
    except regex.error as exc:
        raise FilterError(f"{name}: invalid pattern: {exc}") from None


def regex_match(value: str, pattern: str) -> bool:
    """True when `pattern` matches anywhere in `value` (Go's regexp.MatchString, as CT's regexMatch)."""
    return _regex("regex_match", "search", pattern, value) is not None


def regex_replace(value: str, pattern: str, replacement: str) -> str:
    """Every match replaced; `\\1` or `\\g<name>` in `replacement` refer to groups."""
    return _bounded(_regex("regex_replace", "sub", pattern, replacement, value), "regex_replace")


def regex_findall(value: str, pattern: str) -> list[Any]:
    return list(_regex("regex_findall", "findall", pattern, value))


# -- time -------------------------------------------------------------------------------------

def timestamp(fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    """The current time in UTC, by strftime's `fmt` (consul-template's `timestamp`).

    A template that prints it changes at every render, but renders only follow data changes.
    """
    return _bounded(datetime.datetime.now(datetime.UTC).strftime(fmt), "timestamp")


FILTERS = {
    "to_json": to_json, "to_yaml": to_yaml, "to_toml": to_toml,
    "from_json": json.loads, "from_yaml": from_yaml, "from_toml": from_toml,
    "b64encode": b64encode, "b64decode": b64decode, "b64url_encode": b64url_encode, "b64url_decode": b64url_decode,
    "sha256": sha256, "sha1": sha1, "md5": md5,
    "split": split, "regex_match": regex_match, "regex_replace": regex_replace, "regex_findall": regex_findall,
}
TESTS = {"regex_match": regex_match}
GLOBALS = {"timestamp": timestamp}

# consul-template's own semantics, which `confsync convert` writes into the templates it translates
FILTERS.update(filters_go.FILTERS)
