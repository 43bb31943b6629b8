"""Checking config values against the model's type hints: the engine under confsync/config.py.

`convert(value, hint, where, base)` checks a value from the file against a type hint and converts it;
the field markers below (`Duration`, `RelPath`…) say how a plain type is read from the file. A
problem is a `FieldError` naming the field path; conversion goes on past each one (`report`), so
that one load reports them all (issue 11 item 1).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from confsync.errors import ConfigError

# Field markers, read by `convert` from the type hints.
Duration = Annotated[float, "duration"]
PositiveDuration = Annotated[float, "positive duration"]  # a timeout: 0 would fail every attempt
Perms = Annotated[int, "perms"]
RelPath = Annotated[Path, "path"]  # relative paths resolve from the config file's directory
Percent = Annotated[float, "percent"]  # "50%" → 0.5
Count = Annotated[int, "count"]  # 0 or more
Listen = Annotated[str, "listen"]  # host:port
# Strings that `_PROBLEM_OF[marker]` checks.
SignalName = Annotated[str, "signal"]
Url = Annotated[str, "url"]
Method = Annotated[str, "method"]
# A user or group by name or numeric id → the id (names are looked up when the config loads).
UserId = Annotated[int, "user"]
GroupId = Annotated[int, "group"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


# No setting needs longer; a longer one is a typo (and `.inf`/`.nan` would never fire, issue 11 item 10).
MAX_DURATION = 366 * 24 * 3600.0


def parse_duration(text: str | int | float) -> float:
    """`250ms`, `2s`, `1m`, `1h`, or a bare number of seconds → seconds."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"expected a duration like 250ms, 2s or 1m, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"expected a duration like 250ms, 2s or 1m, got {text!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 <= seconds <= MAX_DURATION:  # also false for NaN
        raise ValueError(f"a duration must be between 0 and 366 days, got {text!r}")
    return seconds


def positive_duration(text: str | int | float) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return seconds


MAX_ID = 2**32 - 2  # chown's -1 (2**32 - 1) means "unchanged", never an owner


def owner_id(value: str | int, kind: str) -> int:
    """A user (`kind` "user") or group ("group") by name or numeric id → its id; ValueError else."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, str) and value and "\0" not in value:
        import grp
        import pwd

        try:
            return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
        except KeyError:
            database = "passwd" if kind == "user" else "group"
            raise ValueError(f"no {kind} named {value!r} on this system (getent {database} {value})") from None
    else:
        raise ValueError(f"expected a {kind} name or a numeric id, got {value!r}")
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"a {kind} id is from 0 to {MAX_ID}, got {value!r}")
    return number


def _signal_problem(name: str) -> str | None:
    import signal

    # SIG_DFL and SIG_IGN are handler values, not signals (SIG_DFL sent nothing, SIG_IGN sent SIGHUP).
    if not isinstance(getattr(signal, name, None), signal.Signals):
        known = ", ".join(s.name for s in signal.Signals if not s.name.startswith("SIGRT"))
        return f"unknown signal {name!r} (one of {known})"
    return None


def url_problem(url: str) -> str | None:
    """A reload URL that httpx could not even try (issue 10 item 3: port 99999 ended the daemon)."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected http://host[:port]/path or https://…, got {url!r}"
    if port == 0:
        return f"port 0 in {url!r}: expected a port from 1 to 65535"
    if any(ord(c) <= 32 or ord(c) > 126 for c in url):
        return f"{url!r} holds spaces, control or non-ASCII characters: percent-encode them"
    return None


def _method_problem(method: str) -> str | None:
    if not re.fullmatch(r"[A-Z]{1,20}", method):  # RFC 9110 methods are tokens; all real ones are A-Z
        return f"expected an HTTP method such as POST or GET, got {method!r}"
    return None


_PROBLEM_OF = {"signal": _signal_problem, "url": url_problem, "method": _method_problem}


class FieldError(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


class Reported(Exception):
    """A part of the value was wrong and is reported already: leave the whole out."""


# Problems found so far by the load in progress: conversion goes on past each, so that one run
# reports them all (issue 11 item 1).
PROBLEMS: contextvars.ContextVar[list[FieldError]] = contextvars.ContextVar("problems")


def report(exc: FieldError) -> None:
    PROBLEMS.get().append(exc)


def convert(value: Any, hint: Any, where: str, base: Path) -> Any:
    """Check `value` against the type hint `hint` and convert it; `where` is the field path."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin is Annotated:
            return _convert_marked(value, args[0], args[1], where, base)
        if origin in (types.UnionType, typing.Union):
            if value is None and type(None) in args:
                return None
            errors: list[FieldError] = []
            for option in (a for a in args if a is not type(None)):
                try:
                    return convert(value, option, where, base)
                except FieldError as exc:
                    errors.append(exc)
            deepest = max(errors, key=lambda e: len(e.where))
            if deepest.where != where:  # the value had the right shape; a part of it is wrong
                raise deepest
            raise FieldError(where, " or ".join(e.message for e in errors))
        if origin is Literal:
            if value not in args:
                raise FieldError(where, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
            return value
        if origin is tuple:
            items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
            if not isinstance(items, list | tuple):
                raise FieldError(where, f"expected a list, got {type(value).__name__}")
            return tuple(collect((convert, v, args[0], f"{where}[{i}]", base) for i, v in enumerate(items)))
        if origin is dict:
            if not isinstance(value, dict):
                raise FieldError(where, f"expected a mapping, got {type(value).__name__}")
            return dict(collect((_item, k, v, args[1], join(where, k), base) for k, v in value.items()))
        if dataclasses.is_dataclass(hint):
            return _convert_dataclass(value, hint, where, base)
        if hint is bool:
            if not isinstance(value, bool):
                raise FieldError(where, f"expected true or false, got {value!r}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FieldError(where, f"expected an integer, got {value!r}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FieldError(where, f"expected a number, got {value!r}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise FieldError(where, f"expected a string, got {type(value).__name__} {value!r}")
            return value
        if hint is Any:
            return value
    except FieldError:
        raise
    raise TypeError(f"config.py cannot check type {hint!r} at {where}")  # a bug of ours, not the user's


def _convert_marked(value: Any, base_type: Any, marker: str, where: str, base: Path) -> Any:
    if marker in ("duration", "positive duration"):
        try:
            return (parse_duration if marker == "duration" else positive_duration)(value)
        except ValueError as exc:
            raise FieldError(where, str(exc)) from None
    if marker == "perms":
        text = str(value) if isinstance(value, str) else None
        if text is None or not re.fullmatch(r"0?[0-7]{3,4}", text):
            raise FieldError(where, f'expected an octal mode in quotes like "0640", got {value!r}')
        mode = int(text, 8)
        if mode & 0o7000:
            raise FieldError(where, f"{value!r} sets the setuid, setgid or sticky bit: a config file needs none")
        if mode & 0o002:
            raise FieldError(where, f"{value!r} lets every user write the file: use at most 0664")
        return mode
    if marker in _PROBLEM_OF:
        text = convert(value, str, where, base)
        problem = _PROBLEM_OF[marker](text)
        if problem:
            raise FieldError(where, problem)
        return text
    if marker in ("user", "group"):
        try:
            return owner_id(value, marker)
        except ValueError as exc:
            raise FieldError(where, str(exc)) from None
    if marker == "listen":
        from confsync.observe import parse_listen

        try:
            parse_listen(value if isinstance(value, str) else repr(value))
        except ConfigError as exc:
            raise FieldError(where, str(exc).removeprefix("listen: ")) from None
        return value
    if marker == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000_000:
            raise FieldError(where, f"expected a whole number from 0, got {value!r}")
        return value
    if marker == "percent":
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(value))
        if not match or float(match.group(1)) > 100:
            raise FieldError(where, f'expected a percentage like "50%", got {value!r}')
        return float(match.group(1)) / 100
    if marker == "path":
        if not isinstance(value, str) or not value or "\0" in value:
            raise FieldError(where, f"expected a path, got {value!r}")
        return (base / os.path.expanduser(value)).absolute()
    raise TypeError(marker)


@functools.cache
def hints(cls: Any) -> dict[str, Any]:
    """Resolving string annotations is slow (~0.2 ms a class): once per class, not once per value."""
    return typing.get_type_hints(cls, include_extras=True)


def _convert_dataclass(value: Any, cls: Any, where: str, base: Path) -> Any:
    if not isinstance(value, dict):
        raise FieldError(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    field_hints = hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs, problems = {}, len(PROBLEMS.get())
    for key, item in value.items():
        try:
            if key not in names:
                raise FieldError(join(where, key), f"unknown key (expected one of {', '.join(sorted(names))})")
            kwargs[key] = convert(item, field_hints[key], join(where, key), base)
        except FieldError as exc:
            report(exc)
        except Reported:
            pass
    for f in dataclasses.fields(cls):
        if f.init and f.name not in value and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            report(FieldError(join(where, f.name), "required"))
    if len(PROBLEMS.get()) > problems:
        raise Reported
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own cross-field check
        raise FieldError(where or cls.__name__, str(exc)) from None


def _item(key: Any, value: Any, hint: Any, where: str, base: Path) -> tuple[str, Any]:
    return str(key), convert(value, hint, where, base)


def collect(calls: Any) -> Iterator[Any]:
    """The items of a list or mapping that convert; each that does not is reported and left out."""
    for func, *args in calls:
        try:
            yield func(*args)
        except FieldError as exc:
            report(exc)
        except Reported:
            pass


def join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
