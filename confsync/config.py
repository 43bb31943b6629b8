"""The typed configuration: loaded from YAML or TOML, checked field by field.

Every error names the file and the field path (`templates[1].reload: unknown reloader 'ap'`), and
unknown keys are errors: a typo must not silently turn a guard off.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import keyword
import os
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from confsync.configfile import read_mapping
from confsync.errors import ConfigError

# Field markers, read by `_convert` from the type hints.
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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# Names a source may not take: they would shadow what templates already see.
RESERVED_NAMES = frozenset(
    {"env", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "super",
     "varargs", "kwargs", "caller", "true", "false", "none", "True", "False", "None"}
)


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


@dataclass(frozen=True)
class Wait:
    """Quiescence, as consul-template's `wait`: render once changes stop for `min`, or at `max`."""

    min: Duration = 0.0
    max: Duration = 0.0

    def __post_init__(self) -> None:
        if self.min and not self.max:
            object.__setattr__(self, "max", self.min * 4)  # consul-template's default
        if self.max < self.min:
            raise ValueError(f"max ({self.max}s) is shorter than min ({self.min}s)")


@dataclass(frozen=True)
class RenderBudget:
    """What one render may use before it fails cleanly (issue 10, item 4; confsync/sandbox.py)."""

    timeout: Duration = 5.0
    max_output: int = 16 * 1024 * 1024  # characters of the file, and of any one value built on the way
    max_iterations: int = 1_000_000  # loop iterations and calls

    def __post_init__(self) -> None:
        for name in ("timeout", "max_output", "max_iterations"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0")


@dataclass(frozen=True)
class TemplateConfig:
    source: RelPath
    destination: RelPath
    perms: Perms | None = None
    create_dirs: bool = True
    backup: bool = False
    check: str | None = None
    wait: Wait | None = None
    reload: tuple[str, ...] = ()
    # Guards: a render that fails one keeps the last good file (consul-template#727, #1131).
    min_bytes: Count = 1  # refuse a shorter render while a good file exists
    max_shrink: Percent | None = None  # refuse a render that shrinks the file by more than this
    allow_shrink: bool = False
    format: Literal["json", "yaml", "toml"] | None = None  # parse the staged file first
    rollback: bool = False  # on a failed reload, put the previous file back and reload again
    allowed_roots: tuple[RelPath, ...] = ()  # default: the destination's own directory


@dataclass(frozen=True)
class ReloaderConfig:
    signal: SignalName = "SIGHUP"
    pid_file: RelPath | None = None
    process: str | None = None
    url: Url | None = None
    method: Method = "POST"
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    timeout: PositiveDuration = 10.0
    retries: Count = 3
    command: str | tuple[str, ...] | None = None  # a string runs under /bin/sh; a list runs as is
    splay: Duration = 0.0  # random delay before each reload, so many pods don't reload at once

    def __post_init__(self) -> None:
        kinds = [k for k in ("pid_file", "process", "url", "command") if getattr(self, k)]
        problems = [] if len(kinds) == 1 else [
            "set exactly one of pid_file, process, url or command" + (f" (got {', '.join(kinds)})" if kinds else "")]
        problems += [p for p in (_command_problem(self.command),) if p]
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def kind(self) -> Literal["signal", "url", "command"]:
        if self.url:
            return "url"
        if self.command:
            return "command"
        return "signal"


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


def _command_problem(command: str | tuple[str, ...] | None) -> str | None:
    if command is None:
        return None
    if not command or (isinstance(command, str) and not command.strip()):
        return "command: empty"
    if isinstance(command, tuple):
        if not command[0]:
            return "command: the program (first item) is empty"
        import shutil

        if not shutil.which(command[0]):
            return f"command: program {command[0]!r} not found (not executable, or not on PATH)"
    if "\0" in "".join(command):
        return "command: holds a NUL character"
    return None


_PROBLEM_OF = {"signal": _signal_problem, "url": url_problem, "method": _method_problem}


EXEC = "exec"  # the reload target that means the app `confsync exec` runs (docs/exec.md)


@dataclass(frozen=True)
class ExecConfig:
    """The app `confsync exec` starts and supervises; names as issue 13 fixed them."""

    command: str | tuple[str, ...] = ()  # a string runs under /bin/sh -c; `-- cmd…` on the command line wins
    env: dict[str, str] = field(default_factory=dict)  # name → inline template, rendered like a file
    reload_signal: str = "SIGHUP"  # or "restart": file changes restart the app too
    kill_signal: str = "SIGTERM"
    kill_timeout: Duration = 10.0  # then SIGKILL

    def __post_init__(self) -> None:
        import signal as _signal

        for key in ("reload_signal", "kill_signal"):
            name = getattr(self, key)
            if name not in _signal.Signals.__members__ and not (key == "reload_signal" and name == "restart"):
                raise ValueError(f"{key}: unknown signal {name!r}"
                                 + (" (or `restart`)" if key == "reload_signal" else ""))
        for name in self.env:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"env: {name!r} cannot be an environment variable name")


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    options: Any  # the source type's own Options dataclass


@dataclass(frozen=True)
class Config:
    path: Path = Path("confsync.yaml")  # the file it was read from
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    templates: tuple[TemplateConfig, ...] = ()
    reloaders: dict[str, ReloaderConfig] = field(default_factory=dict)
    wait: Wait = Wait()
    render: RenderBudget = RenderBudget()
    listen: Listen | None = None
    # /readyz says "not ready" once a rendered template could not get fresh data for this long.
    max_stale_for_ready: Duration = 300.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    env_allow: tuple[str, ...] | None = None  # the variables env() may read; None: all
    pid_file: RelPath | None = None  # `run` writes its PID here (for systemd, shell scripts)
    exec: ExecConfig = ExecConfig()  # used by `confsync exec` only


_TOP_LEVEL = {"sources", "templates", "reloaders", "wait", "render", "listen", "max_stale_for_ready", "log_level",
              "log_format", "env_allow", "pid_file", "exec"}
_ENV_OVERRIDES = {"listen": "CONFSYNC_LISTEN", "log_level": "CONFSYNC_LOG_LEVEL",
                  "log_format": "CONFSYNC_LOG_FORMAT", "pid_file": "CONFSYNC_PID_FILE"}
def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and check a config file. `overrides` (from flags, named by flag) beat `CONFSYNC_*`
    variables, which beat the file. Every problem is reported, not just the first."""
    path = Path(path).absolute()
    raw = read_mapping(path)
    origin: dict[str, str] = {}  # where a value came from, when not from the file
    for name, var in _ENV_OVERRIDES.items():
        if os.environ.get(var):
            raw[name], origin[name] = os.environ[var], var
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name], origin[name] = value, "--" + name.replace("_", "-")
    problems: list[_FieldError] = []
    token = _PROBLEMS.set(problems)
    try:
        config = _build(path, raw)
    finally:
        _PROBLEMS.reset(token)
    if problems:
        raise ConfigError("\n".join(
            f"{origin[p.where]}: {p.message}" if p.where in origin else f"{path}: {p.where}: {p.message}"
            for p in problems))
    assert config is not None
    return config


class _FieldError(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


class _Reported(Exception):
    """A part of the value was wrong and is reported already: leave the whole out."""


# Problems found so far by the load in progress: conversion goes on past each, so that one run
# reports them all (issue 11 item 1).
_PROBLEMS: contextvars.ContextVar[list[_FieldError]] = contextvars.ContextVar("problems")


def _report(exc: _FieldError) -> None:
    _PROBLEMS.get().append(exc)


def _build(path: Path, raw: dict[str, Any]) -> Config | None:
    base = path.parent
    for key in list(raw):
        if key not in _TOP_LEVEL:
            _report(_FieldError(str(key), f"unknown key (expected one of {', '.join(sorted(_TOP_LEVEL))})"))
            del raw[key]
    sources = _build_sources(base, raw.get("sources") or {})
    top = {k: v for k, v in raw.items() if k not in ("sources",)}
    top.setdefault("wait", {})
    if isinstance(top.get("log_level"), str):  # DEBUG, Info: the same level
        top["log_level"] = top["log_level"].lower()
    if isinstance(top.get("log_format"), str):
        top["log_format"] = top["log_format"].lower()
    try:
        # `path` and `sources` are not the user's to set here: _TOP_LEVEL let neither through.
        checked: Config = _convert(top, Config, "", base)
    except _FieldError as exc:
        _report(exc)
        return None
    except _Reported:
        return None
    config = dataclasses.replace(checked, path=path, sources=sources)
    if not _PROBLEMS.get():  # cross-references only between parts that are right themselves
        _check_references(config)
    return config


def _build_sources(base: Path, raw: Any) -> dict[str, SourceConfig]:
    from confsync.sources import missing_client, source_class

    if not isinstance(raw, dict):
        _report(_FieldError("sources", f"expected a mapping of name → source, got {type(raw).__name__}"))
        return {}
    sources = {}
    for name, spec in raw.items():
        where = f"sources.{name}"
        try:
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise _FieldError(where, "a source name must be a valid identifier (it is a template global)")
            if name in RESERVED_NAMES:
                raise _FieldError(where, f"the name {name!r} would shadow a template built-in")
            if not isinstance(spec, dict):
                raise _FieldError(where, f"expected a mapping, got {type(spec).__name__}")
            spec = dict(spec)
            kind = spec.pop("type", None)
            try:
                cls = source_class(kind)
            except LookupError as exc:
                raise _FieldError(f"{where}.type", str(exc)) from None
            missing = missing_client(kind)
            if missing:
                raise _FieldError(f"{where}.type", missing)
            options = _convert(spec, cls.Options, where, base)
        except _FieldError as exc:
            _report(exc)
            continue
        except _Reported:
            continue
        sources[name] = SourceConfig(name=name, type=kind, options=options)
    return sources


def _check_references(config: Config) -> None:
    if EXEC in config.reloaders:
        _report(_FieldError(f"reloaders.{EXEC}", f"the name {EXEC!r} is reserved for the app `confsync exec` runs"))
    seen: dict[Path, int] = {}
    roots = {name: Path(os.path.realpath(s.options.root)) for name, s in config.sources.items() if s.type == "files"}
    if not config.templates:
        _report(_FieldError("templates", "no template configured: nothing to do"))
    for i, tpl in enumerate(config.templates):
        for name in tpl.reload:
            if name not in config.reloaders and name != EXEC:
                known = ", ".join(sorted([*config.reloaders, EXEC]))
                _report(_FieldError(f"templates[{i}].reload", f"unknown reloader {name!r} (known: {known})"))
        if not tpl.source.is_file():
            _report(_FieldError(f"templates[{i}].source", f"template file not found: {tpl.source}"))
        dest = Path(os.path.realpath(tpl.destination))
        if dest in seen:
            _report(_FieldError(f"templates[{i}].destination",
                                f"{tpl.destination} is also the destination of templates[{seen[dest]}]"))
        seen[dest] = i
        if dest == Path(os.path.realpath(tpl.source)):
            _report(_FieldError(f"templates[{i}].destination", "is the template's own source file"))
        for name, root in roots.items():
            if dest.is_relative_to(root):  # each write would be read back as a change: it feeds itself
                _report(_FieldError(f"templates[{i}].destination",
                                    f"{tpl.destination} is inside the root of source {name!r} ({root})"))


def _convert(value: Any, hint: Any, where: str, base: Path) -> Any:
    """Check `value` against the type hint `hint` and convert it; `where` is the field path."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin is Annotated:
            return _convert_marked(value, args[0], args[1], where, base)
        if origin in (types.UnionType, typing.Union):
            if value is None and type(None) in args:
                return None
            errors: list[_FieldError] = []
            for option in (a for a in args if a is not type(None)):
                try:
                    return _convert(value, option, where, base)
                except _FieldError as exc:
                    errors.append(exc)
            deepest = max(errors, key=lambda e: len(e.where))
            if deepest.where != where:  # the value had the right shape; a part of it is wrong
                raise deepest
            raise _FieldError(where, " or ".join(e.message for e in errors))
        if origin is Literal:
            if value not in args:
                raise _FieldError(where, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
            return value
        if origin is tuple:
            items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
            if not isinstance(items, list | tuple):
                raise _FieldError(where, f"expected a list, got {type(value).__name__}")
            return tuple(_collect((_convert, v, args[0], f"{where}[{i}]", base) for i, v in enumerate(items)))
        if origin is dict:
            if not isinstance(value, dict):
                raise _FieldError(where, f"expected a mapping, got {type(value).__name__}")
            return dict(_collect((_item, k, v, args[1], _join(where, k), base) for k, v in value.items()))
        if dataclasses.is_dataclass(hint):
            return _convert_dataclass(value, hint, where, base)
        if hint is bool:
            if not isinstance(value, bool):
                raise _FieldError(where, f"expected true or false, got {value!r}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _FieldError(where, f"expected an integer, got {value!r}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _FieldError(where, f"expected a number, got {value!r}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise _FieldError(where, f"expected a string, got {type(value).__name__} {value!r}")
            return value
        if hint is Any:
            return value
    except _FieldError:
        raise
    raise TypeError(f"config.py cannot check type {hint!r} at {where}")  # a bug of ours, not the user's


def _convert_marked(value: Any, base_type: Any, marker: str, where: str, base: Path) -> Any:
    if marker in ("duration", "positive duration"):
        try:
            return (parse_duration if marker == "duration" else positive_duration)(value)
        except ValueError as exc:
            raise _FieldError(where, str(exc)) from None
    if marker == "perms":
        text = str(value) if isinstance(value, str) else None
        if text is None or not re.fullmatch(r"0?[0-7]{3,4}", text):
            raise _FieldError(where, f'expected an octal mode in quotes like "0640", got {value!r}')
        mode = int(text, 8)
        if mode & 0o7000:
            raise _FieldError(where, f"{value!r} sets the setuid, setgid or sticky bit: a config file needs none")
        if mode & 0o002:
            raise _FieldError(where, f"{value!r} lets every user write the file: use at most 0664")
        return mode
    if marker in _PROBLEM_OF:
        text = _convert(value, str, where, base)
        problem = _PROBLEM_OF[marker](text)
        if problem:
            raise _FieldError(where, problem)
        return text
    if marker == "listen":
        from confsync.observe import parse_listen

        try:
            parse_listen(value if isinstance(value, str) else repr(value))
        except ConfigError as exc:
            raise _FieldError(where, str(exc).removeprefix("listen: ")) from None
        return value
    if marker == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000_000:
            raise _FieldError(where, f"expected a whole number from 0, got {value!r}")
        return value
    if marker == "percent":
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(value))
        if not match or float(match.group(1)) > 100:
            raise _FieldError(where, f'expected a percentage like "50%", got {value!r}')
        return float(match.group(1)) / 100
    if marker == "path":
        if not isinstance(value, str) or not value or "\0" in value:
            raise _FieldError(where, f"expected a path, got {value!r}")
        return (base / os.path.expanduser(value)).absolute()
    raise TypeError(marker)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """Resolving string annotations is slow (~0.2 ms a class): once per class, not once per value."""
    return typing.get_type_hints(cls, include_extras=True)


def _convert_dataclass(value: Any, cls: Any, where: str, base: Path) -> Any:
    if not isinstance(value, dict):
        raise _FieldError(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs, problems = {}, len(_PROBLEMS.get())
    for key, item in value.items():
        try:
            if key not in names:
                raise _FieldError(_join(where, key), f"unknown key (expected one of {', '.join(sorted(names))})")
            kwargs[key] = _convert(item, hints[key], _join(where, key), base)
        except _FieldError as exc:
            _report(exc)
        except _Reported:
            pass
    for f in dataclasses.fields(cls):
        if f.init and f.name not in value and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            _report(_FieldError(_join(where, f.name), "required"))
    if len(_PROBLEMS.get()) > problems:
        raise _Reported
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own cross-field check
        raise _FieldError(where or cls.__name__, str(exc)) from None


def check_setting(name: str, value: Any) -> Any:
    """One top-level setting checked and converted as in a config file (for flags: the same rules,
    the same messages); `timeout` is the flag of once and init. Raises ValueError."""
    hint = PositiveDuration if name == "timeout" else _hints(Config)[name]
    problems: list[_FieldError] = []
    token = _PROBLEMS.set(problems)
    try:
        if name in ("log_level", "log_format") and isinstance(value, str):
            value = value.lower()
        result = _convert(value, hint, name, Path.cwd())
    except _FieldError as exc:
        problems.append(exc)
    except _Reported:
        pass
    finally:
        _PROBLEMS.reset(token)
    if problems:
        raise ValueError("; ".join(p.message for p in problems))
    return str(result) if name == "pid_file" else result


def _item(key: Any, value: Any, hint: Any, where: str, base: Path) -> tuple[str, Any]:
    return str(key), _convert(value, hint, where, base)


def _collect(calls: Any) -> Iterator[Any]:
    """The items of a list or mapping that convert; each that does not is reported and left out."""
    for func, *args in calls:
        try:
            yield func(*args)
        except _FieldError as exc:
            _report(exc)
        except _Reported:
            pass


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
