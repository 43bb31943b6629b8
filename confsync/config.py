"""The typed configuration: loaded from YAML or TOML, checked field by field.

Every error names the file and the field path (`templates[1].reload: unknown reloader 'ap'`), and
unknown keys are errors: a typo must not silently turn a guard off.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from confsync.errors import ConfigError

# Field markers, read by `_convert` from the type hints.
Duration = Annotated[float, "duration"]
Perms = Annotated[int, "perms"]
RelPath = Annotated[Path, "path"]  # relative paths resolve from the config file's directory
Percent = Annotated[float, "percent"]  # "50%" → 0.5

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# Names a source may not take: they would shadow what templates already see.
RESERVED_NAMES = frozenset(
    {"env", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "super",
     "varargs", "kwargs", "caller", "true", "false", "none", "True", "False", "None"}
)


def parse_duration(text: str | int | float) -> float:
    """`250ms`, `2s`, `1m`, `1h`, or a bare number of seconds → seconds."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 250ms, 2s or 1m, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"expected a duration like 250ms, 2s or 1m, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


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
    min_bytes: int = 1  # refuse a shorter render while a good file exists
    max_shrink: Percent | None = None  # refuse a render that shrinks the file by more than this
    allow_shrink: bool = False
    format: Literal["json", "yaml", "toml"] | None = None  # parse the staged file first
    rollback: bool = False  # on a failed reload, put the previous file back and reload again
    allowed_roots: tuple[RelPath, ...] = ()  # default: the destination's own directory


@dataclass(frozen=True)
class ReloaderConfig:
    signal: str = "SIGHUP"
    pid_file: RelPath | None = None
    process: str | None = None
    url: str | None = None
    method: str = "POST"
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    timeout: Duration = 10.0
    retries: int = 3
    command: str | tuple[str, ...] | None = None  # a string runs under /bin/sh; a list runs as is
    splay: Duration = 0.0  # random delay before each reload, so many pods don't reload at once

    def __post_init__(self) -> None:
        kinds = [k for k in ("pid_file", "process", "url", "command") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                "set exactly one of pid_file, process, url or command"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.signal:
            import signal as _signal

            if not hasattr(_signal, self.signal) or not self.signal.startswith("SIG"):
                raise ValueError(f"unknown signal {self.signal!r}")

    @property
    def kind(self) -> Literal["signal", "url", "command"]:
        if self.url:
            return "url"
        if self.command:
            return "command"
        return "signal"


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
    listen: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    env_allow: tuple[str, ...] | None = None  # the variables env() may read; None: all


_TOP_LEVEL = {"sources", "templates", "reloaders", "wait", "render", "listen", "log_level", "log_format", "env_allow"}
_ENV_OVERRIDES = {"listen": "CONFSYNC_LISTEN", "log_level": "CONFSYNC_LOG_LEVEL",
                  "log_format": "CONFSYNC_LOG_FORMAT"}


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and check a config file. `overrides` (from flags) beat `CONFSYNC_*` variables,
    which beat the file."""
    path = Path(path).absolute()
    raw = _read(path)
    for name, var in _ENV_OVERRIDES.items():
        if os.environ.get(var):
            raw[name] = os.environ[var]
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = value
    try:
        return _build(path, raw)
    except _FieldError as exc:
        raise ConfigError(f"{path}: {exc.where}: {exc.message}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as exc:  # yaml.YAMLError / tomllib.TOMLDecodeError carry line and column
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


class _FieldError(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def _build(path: Path, raw: dict[str, Any]) -> Config:
    base = path.parent
    for key in raw:
        if key not in _TOP_LEVEL:
            raise _FieldError(str(key), f"unknown key (expected one of {', '.join(sorted(_TOP_LEVEL))})")
    sources = _build_sources(base, raw.get("sources") or {})
    top = {k: v for k, v in raw.items() if k not in ("sources",)}
    top.setdefault("wait", {})
    # `path` and `sources` are not the user's to set here: _TOP_LEVEL let neither through.
    checked: Config = _convert(top, Config, "", base)
    config = dataclasses.replace(checked, path=path, sources=sources)
    _check_references(config)
    return config


def _build_sources(base: Path, raw: Any) -> dict[str, SourceConfig]:
    from confsync.sources import source_class

    if not isinstance(raw, dict):
        raise _FieldError("sources", f"expected a mapping of name → source, got {type(raw).__name__}")
    sources = {}
    for name, spec in raw.items():
        where = f"sources.{name}"
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
        options = _convert(spec, cls.Options, where, base)
        sources[name] = SourceConfig(name=name, type=kind, options=options)
    return sources


def _check_references(config: Config) -> None:
    seen: dict[Path, int] = {}
    for i, tpl in enumerate(config.templates):
        for name in tpl.reload:
            if name not in config.reloaders:
                known = ", ".join(sorted(config.reloaders)) or "none defined"
                raise _FieldError(f"templates[{i}].reload", f"unknown reloader {name!r} (known: {known})")
        if not tpl.source.is_file():
            raise _FieldError(f"templates[{i}].source", f"template file not found: {tpl.source}")
        dest = Path(os.path.realpath(tpl.destination))
        if dest in seen:
            raise _FieldError(f"templates[{i}].destination",
                              f"{tpl.destination} is also the destination of templates[{seen[dest]}]")
        seen[dest] = i


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
            return tuple(_convert(v, args[0], f"{where}[{i}]", base) for i, v in enumerate(items))
        if origin is dict:
            if not isinstance(value, dict):
                raise _FieldError(where, f"expected a mapping, got {type(value).__name__}")
            return {str(k): _convert(v, args[1], _join(where, k), base) for k, v in value.items()}
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
    if marker == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _FieldError(where, str(exc)) from None
    if marker == "perms":
        text = str(value) if isinstance(value, str) else None
        if text is None or not re.fullmatch(r"0?[0-7]{3,4}", text):
            raise _FieldError(where, f'expected an octal mode in quotes like "0640", got {value!r}')
        return int(text, 8)
    if marker == "percent":
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(value))
        if not match or float(match.group(1)) > 100:
            raise _FieldError(where, f'expected a percentage like "50%", got {value!r}')
        return float(match.group(1)) / 100
    if marker == "path":
        if not isinstance(value, str) or not value:
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
    kwargs = {}
    for key, item in value.items():
        if key not in names:
            raise _FieldError(_join(where, key), f"unknown key (expected one of {', '.join(sorted(names))})")
        kwargs[key] = _convert(item, hints[key], _join(where, key), base)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in kwargs and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise _FieldError(_join(where, f.name), "required")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own cross-field check
        raise _FieldError(where or cls.__name__, str(exc)) from None


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
