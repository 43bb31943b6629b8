"""The errors confsync raises, and the exit code each one maps to.

    ConfsyncError                 base; .exit_code = 1
    ├── ConfigError               bad config file or flag (names file and field path); exit 2
    ├── TemplateError             template syntax or runtime error (names file:line); exit 1
    ├── SourceError               a backend refused, failed or is unreachable; exit 1
    ├── WriteError                staging, check or replace of a destination failed; exit 1
    ├── ReloadError               a reloader could not deliver; exit 1
    ├── ExecError                 `confsync exec` cannot start the app; exit 127 (not found) or 126
    └── MissingDataError          data still missing when a deadline passed; exit 3

Library errors (jinja2, OSError, httpx, hvac, kazoo…) are mapped to these at one boundary each,
with `raise ... from exc`, so callers handle eight classes, not forty.

An error's `detail` is text taken from data or from a command's output (a parser's complaint, the
first line a check printed). It is kept apart from the `message` (what failed, and where) so that
errors of secret-bearing templates can be told without it (issue 10).
"""

from __future__ import annotations


class ConfsyncError(Exception):
    exit_code = 1
    logged = False  # already in the log (as `once` logs a failed render): not printed again at exit

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message, self.detail = message, detail


class ConfigError(ConfsyncError):
    exit_code = 2


class TemplateError(ConfsyncError):
    pass


class SourceError(ConfsyncError):
    pass


class WriteError(ConfsyncError):
    pass


class ReloadError(ConfsyncError):
    pass


class ExecError(ConfsyncError):
    def __init__(self, message: str, exit_code: int = 126) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # as a shell's: 127 command not found, 126 cannot run it


class MissingDataError(ConfsyncError):
    exit_code = 3
