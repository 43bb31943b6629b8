"""The typed configuration: loaded from YAML or TOML, checked field by field.

Every error names the file and the field path (`templates[1].reload: unknown reloader 'ap'`), and
unknown keys are errors: a typo must not silently turn a guard off.

    configfile.py      reading the file (YAML or TOML, size and alias limits)
    configcheck.py     checking values against the type hints; the field markers (Duration, RelPath…)
    configtemplate.py  the settings of one template
    config.py          the whole: sources, reloaders, exec, top-level keys; `load`
"""

from __future__ import annotations

import dataclasses
import keyword
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The field markers and the template settings, re-exported: the model's types are all imported from here.
from confsync.configcheck import MAX_DURATION as MAX_DURATION
from confsync.configcheck import PROBLEMS, FieldError, Reported, convert, hints, report
from confsync.configcheck import Count as Count
from confsync.configcheck import Duration as Duration
from confsync.configcheck import Listen as Listen
from confsync.configcheck import Method as Method
from confsync.configcheck import Percent as Percent
from confsync.configcheck import Perms as Perms
from confsync.configcheck import PositiveDuration as PositiveDuration
from confsync.configcheck import RelPath as RelPath
from confsync.configcheck import SignalName as SignalName
from confsync.configcheck import Url as Url
from confsync.configcheck import parse_duration as parse_duration
from confsync.configcheck import url_problem as url_problem
from confsync.configfile import read_mapping
from confsync.configtemplate import Delimiters as Delimiters
from confsync.configtemplate import TemplateConfig as TemplateConfig
from confsync.configtemplate import Wait as Wait
from confsync.configtemplate import check_templates
from confsync.errors import ConfigError

# Names a source may not take: they would shadow what templates already see.
RESERVED_NAMES = frozenset(
    {"env", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "super",
     "varargs", "kwargs", "caller", "true", "false", "none", "True", "False", "None"}
)


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
    problems: list[FieldError] = []
    token = PROBLEMS.set(problems)
    try:
        config = _build(path, raw)
    finally:
        PROBLEMS.reset(token)
    if problems:
        raise ConfigError("\n".join(
            f"{origin[p.where]}: {p.message}" if p.where in origin else f"{path}: {p.where}: {p.message}"
            for p in problems))
    assert config is not None
    return config


def _build(path: Path, raw: dict[str, Any]) -> Config | None:
    base = path.parent
    for key in list(raw):
        if key not in _TOP_LEVEL:
            report(FieldError(str(key), f"unknown key (expected one of {', '.join(sorted(_TOP_LEVEL))})"))
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
        checked: Config = convert(top, Config, "", base)
    except FieldError as exc:
        report(exc)
        return None
    except Reported:
        return None
    config = dataclasses.replace(checked, path=path, sources=sources)
    if not PROBLEMS.get():  # cross-references only between parts that are right themselves
        _check_references(config)
    return config


def _build_sources(base: Path, raw: Any) -> dict[str, SourceConfig]:
    from confsync.sources import missing_client, source_class

    if not isinstance(raw, dict):
        report(FieldError("sources", f"expected a mapping of name → source, got {type(raw).__name__}"))
        return {}
    sources = {}
    for name, spec in raw.items():
        where = f"sources.{name}"
        try:
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise FieldError(where, "a source name must be a valid identifier (it is a template global)")
            if name in RESERVED_NAMES:
                raise FieldError(where, f"the name {name!r} would shadow a template built-in")
            if not isinstance(spec, dict):
                raise FieldError(where, f"expected a mapping, got {type(spec).__name__}")
            spec = dict(spec)
            kind = spec.pop("type", None)
            try:
                cls = source_class(kind)
            except LookupError as exc:
                raise FieldError(f"{where}.type", str(exc)) from None
            missing = missing_client(kind)
            if missing:
                raise FieldError(f"{where}.type", missing)
            options = convert(spec, cls.Options, where, base)
        except FieldError as exc:
            report(exc)
            continue
        except Reported:
            continue
        sources[name] = SourceConfig(name=name, type=kind, options=options)
    return sources


def _check_references(config: Config) -> None:
    if EXEC in config.reloaders:
        report(FieldError(f"reloaders.{EXEC}", f"the name {EXEC!r} is reserved for the app `confsync exec` runs"))
    roots = {name: Path(os.path.realpath(s.options.root)) for name, s in config.sources.items() if s.type == "files"}
    if not config.templates:
        report(FieldError("templates", "no template configured: nothing to do"))
    for i, tpl in enumerate(config.templates):
        for name in tpl.reload:
            if name not in config.reloaders and name != EXEC:
                known = ", ".join(sorted([*config.reloaders, EXEC]))
                report(FieldError(f"templates[{i}].reload", f"unknown reloader {name!r} (known: {known})"))
    written = {Path(os.path.realpath(path)): f"sources.{name}.{key}" for name, s in config.sources.items()
               for key, path in (s.options.written() if hasattr(s.options, "written") else {}).items()}
    for path, option in written.items():
        if path == Path(os.path.realpath(config.path)):
            report(FieldError(option, "is the config file itself"))
    check_templates(config.templates, roots, config.path, written)


def check_setting(name: str, value: Any) -> Any:
    """One top-level setting checked and converted as in a config file (for flags: the same rules,
    the same messages); `timeout` is the flag of once and init. Raises ValueError."""
    hint = PositiveDuration if name == "timeout" else hints(Config)[name]
    problems: list[FieldError] = []
    token = PROBLEMS.set(problems)
    try:
        if name in ("log_level", "log_format") and isinstance(value, str):
            value = value.lower()
        result = convert(value, hint, name, Path.cwd())
    except FieldError as exc:
        problems.append(exc)
    except Reported:
        pass
    finally:
        PROBLEMS.reset(token)
    if problems:
        raise ValueError("; ".join(p.message for p in problems))
    return str(result) if name == "pid_file" else result
