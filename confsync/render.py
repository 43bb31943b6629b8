"""Rendering: sandboxed Jinja2 against the store of last-known values, recording what was used.

What a render asks for is exactly what gets watched. A value not known yet does not stop the
render: it gets a placeholder so one pass discovers as many dependencies as possible, and the
output of such a render is thrown away.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from confsync import filters
from confsync.config import Delimiters, RenderBudget
from confsync.errors import TemplateError
from confsync.sandbox import Budget, BudgetedEnvironment, BudgetError
from confsync.sources import ABSENT, PLACEHOLDERS, Dep, Functions, Missing

log = logging.getLogger(__name__)


@dataclass
class Result:
    text: str | None  # None while something is missing or after an error
    used: set[Dep] = field(default_factory=set)
    missing: dict[Dep, str] = field(default_factory=dict)  # dep → why (never a value)
    error: TemplateError | None = None


DEFAULT_BUDGET = RenderBudget()
WAITING = "waiting for the source's first answer"
CACHE_VARIABLE = "CONFSYNC_TEMPLATE_CACHE"


def _bytecode_cache(delimiters: Delimiters | None = None) -> jinja2.BytecodeCache | None:
    """Compiled templates kept on disk between runs: compiling costs ~4.5 ms a template of ten
    expressions (the budget's checks make the code longer), loading ~0.01 ms, so a warm `once`
    with 100 templates starts ~0.4 s sooner (docs/performance.md).

    A directory of our own (sandboxed code only; jinja2's default one is shared with unsandboxed
    environments), private to this user: code loaded from a directory others can write would run
    as us. `CONFSYNC_TEMPLATE_CACHE=off` disables it; any problem with the directory does too.
    """
    directory = os.environ.get(CACHE_VARIABLE)
    if directory == "off":
        return None
    try:
        # gettempdir() raises when no temp directory is writable: a read-only root filesystem
        # with no volume on /tmp (issue 10, item 14).
        directory = directory or os.path.join(tempfile.gettempdir(), f"confsync-templates-{os.geteuid()}")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        log.debug("template cache off: %s", exc)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    # Named apart from the caches of earlier versions: their code lacks the budget's checks (sandbox.py).
    # Jinja2's key is the template's name and text: the same text read with other delimiters is
    # other code, so they are part of the name.
    lexer = "" if delimiters is None else "_" + _digest(repr(dataclasses.astuple(delimiters)).encode())
    return jinja2.FileSystemBytecodeCache(directory, pattern=f"__confsync_{_compiler_fingerprint()}{lexer}_%s.cache")


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _compiler_fingerprint() -> str:
    """Bytecode is only as good as the code that compiled it: Jinja2 checks its own version, not
    ours, so a confsync whose sandbox compiles differently (a new release, another checkout) must
    not load what an older one cached."""
    from confsync import sandbox

    return _digest(Path(sandbox.__file__).read_bytes() + Path(__file__).read_bytes())


class FolderLoader(jinja2.FileSystemLoader):
    """Templates from their folder only: `{% include %}` of a symlink that leads out of it is
    refused, as `..` already is (issue 10, item 11). The templates the config names (`trusted`)
    are the operator's choice, wherever their own symlinks point. `inline` holds the templates
    whose text is in the config (label → text), each loaded by its label."""

    def __init__(self, search_path: list[Path]) -> None:
        super().__init__([str(p) for p in search_path])
        self.trusted: set[str] = set()
        self.inline: dict[str, str] = {}

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        if template in self.inline:
            return self.inline[template], template, lambda: True
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        folders = [os.path.realpath(p) for p in self.searchpath]
        if template not in self.trusted and not any(real.startswith(f.rstrip("/") + "/") for f in folders):
            raise jinja2.exceptions.SecurityError(f"{template!r} leads out of the template folder through a "
                                                  "symlink")
        return source, filename, uptodate


def make_environment(search_path: list[Path], env_allow: frozenset[str] | None = None,
                     delimiters: Delimiters | None = None) -> jinja2.Environment:
    lexer = delimiters or Delimiters()
    env = BudgetedEnvironment(
        loader=FolderLoader(search_path),
        variable_start_string=lexer.variable[0], variable_end_string=lexer.variable[1],
        block_start_string=lexer.block[0], block_end_string=lexer.block[1],
        comment_start_string=lexer.comment[0], comment_end_string=lexer.comment[1],
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(delimiters),
    )
    env.filters.update(filters.FILTERS)
    env.filters = {name: env.bounded_filter(name, func) for name, func in env.filters.items()}
    env.tests.update(filters.TESTS)
    env.globals.update(filters.GLOBALS)

    def env_var(name: str, default: str | None = None) -> str | None:
        if env_allow is not None and name not in env_allow:
            raise PermissionError(f"env({name!r}) is not in the allowed list")
        return os.environ.get(name, default)

    env.globals["env"] = env_var
    return env


Environments = Callable[[Path, "Delimiters | None"], jinja2.Environment]


def environments(env_allow: frozenset[str] | None) -> Environments:
    """Environments made as asked for, one per folder and delimiters: templates that share both
    share the compiled code of what they include."""

    @functools.cache
    def get(folder: Path, delimiters: Delimiters | None) -> jinja2.Environment:
        return make_environment([folder], env_allow, delimiters)

    return get


def loader_name(env: jinja2.Environment, path: Path, text: str | None = None) -> str:
    """The name env's loader finds `path` by; an inline `text` is put in the loader under `path`."""
    if text is None:
        return path.name
    if isinstance(env.loader, FolderLoader):
        env.loader.inline[str(path)] = text
    return str(path)


class Template:
    """One template, compiled once; `render` reads values through `get`.

    `env`'s loader must find `path` by its name (make_environment with `path`'s directory):
    loading through it is what lets the bytecode cache skip the compilation. An inline template
    (`text`: `contents`, an `exec.env` value) is put in the loader under `path`, what messages call it.
    """

    def __init__(self, env: jinja2.Environment, path: Path, functions: dict[str, type[Functions]],
                 text: str | None = None) -> None:
        self.path = path
        self.functions = functions
        self.name = loader_name(env, path, text)
        if isinstance(env.loader, FolderLoader):
            env.loader.trusted.add(self.name)
        try:
            self.compiled = env.get_template(self.name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}:{exc.lineno}: syntax error: {exc.message}") from None
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{path}: cannot read template: file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path}: cannot read template: {exc}") from None
        self.compiled.filename = str(path)

    def render(self, get: Callable[[Dep], Any], limits: RenderBudget = DEFAULT_BUDGET,
               deadline: float | None = None) -> Result:
        """Render against `get(dep)` → value, a `Missing`, or None when not known yet, within
        `limits` and by `deadline` (time.monotonic()) at the latest."""
        result = Result(text=None)

        def lookup(dep: Dep, default: Any) -> Any:
            result.used.add(dep)
            value = get(dep)
            # The default stands in only for a value that does not exist: one that exists but cannot
            # be read (a permission, not UTF-8) makes the template wait, and says why (issue 18).
            if value == ABSENT and not isinstance(default, Missing):
                return default
            if value is None or isinstance(value, Missing):
                result.missing[dep] = value.reason if value else WAITING
                return PLACEHOLDERS.get(dep.kind, "")
            return value

        names = {name: cls(name, lookup) for name, cls in self.functions.items()}
        try:
            env = self.compiled.environment
            if isinstance(env, BudgetedEnvironment):
                with env.running(Budget(limits, deadline)):
                    text = self.compiled.render(names)
            else:
                text = self.compiled.render(names)
        except Exception as exc:
            # Else most likely caused by a placeholder: retried when data arrives. The budget is
            # the template's own doing, whatever it waits for; but once once/init's --timeout has
            # passed while data is still missing, what cut the render is the missing data (exit 3).
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if not result.missing or (isinstance(exc, BudgetError) and not out_of_time):
                kind, detail = _describe(exc)
                result.error = TemplateError(f"{self.path}:{_line_of(exc, self.path)}: {kind}", detail)
            return result
        if not result.missing:
            result.error = _too_long(text, limits, self.path) or _unencodable(text, self.path)
            result.text = None if result.error else text
        return result


def _too_long(text: str, limits: RenderBudget, path: Path) -> TemplateError | None:
    if len(text) <= limits.max_output:
        return None
    return TemplateError(f"{path}: over the render budget: the output is {len(text)} characters, over "
                         f"render.max_output ({limits.max_output}); nothing written")


def _unencodable(text: str, path: Path) -> TemplateError | None:
    """A lone surrogate (from a non-UTF-8 file name, or `"\\udc80"` through from_json) cannot be
    written as UTF-8: a template error, not a crash of the writer (issue 10, item 1)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        return TemplateError(f"{path}: output line {line} holds a lone surrogate, which is not "
                             "Unicode text (from_json of a \\udcXX escape?); nothing written")
    return None


def _describe(exc: BaseException) -> tuple[str, str]:
    """The kind of failure, and the exception's own text: only the latter may quote a value."""
    if isinstance(exc, BudgetError):
        return "over the render budget", str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory", ""
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return "refused by the sandbox", str(exc)
    if isinstance(exc, jinja2.UndefinedError):
        return "undefined", exc.message or ""
    return type(exc).__name__, str(exc)


def _line_of(exc: BaseException, path: Path) -> int | str:
    """Jinja2 rewrites tracebacks so template frames carry the template's file name and line."""
    line: int | str = "?"
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
