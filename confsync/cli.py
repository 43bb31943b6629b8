"""The command line: builds a Config from the file and flags, then hands off to a mode."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from confsync import config as config_module
from confsync.errors import ConfigError, ConfsyncError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Keep config files true to a central store.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="CONFSYNC_CONFIG",
                                         help="Config file (YAML, or TOML by its .toml suffix).")]
LevelOpt = Annotated[str | None, typer.Option("--log-level", help="debug | info | warning | error "
                                                 "[env: CONFSYNC_LOG_LEVEL]")]
FormatOpt = Annotated[str | None, typer.Option("--log-format", help="text | json [env: CONFSYNC_LOG_FORMAT]")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Accept renders that shrink a file past max_shrink.")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="How long to wait for missing data (e.g. 30s).")]


def _load(path: Path, **overrides: Any) -> config_module.Config:
    from confsync import logs

    # Logging first, from flags and environment alone, so config errors are logged the same way.
    logs.setup(overrides.get("log_level") or "info", overrides.get("log_format") or "text")
    config = config_module.load(path, overrides)
    logs.setup(config.log_level, config.log_format)
    return config


def _timeout(text: str) -> float:
    try:
        return config_module.parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--timeout: {exc}") from None


def _finish(outcome: Any) -> None:
    raise typer.Exit(outcome or 0)


@app.command()
def run(config: ConfigOpt = Path("confsync.yaml"), log_level: LevelOpt = None, log_format: FormatOpt = None,
        listen: Annotated[str | None, typer.Option("--listen", help="host:port for /healthz, /readyz, "
                                                      "/metrics [env: CONFSYNC_LISTEN]")] = None,
        force: ForceOpt = False) -> None:
    """The sidecar daemon: watch, render, write, reload until SIGTERM."""
    from confsync import modes

    cfg = _load(config, log_level=log_level, log_format=log_format, listen=listen)
    _finish(asyncio.run(modes.run(cfg, force=force)))


@app.command()
def once(config: ConfigOpt = Path("confsync.yaml"), log_level: LevelOpt = None, log_format: FormatOpt = None,
         timeout: TimeoutOpt = "30s",
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Write nothing.")] = False,
         diff: Annotated[bool, typer.Option("--diff", help="Print a unified diff against the files on disk.")]
         = False, force: ForceOpt = False) -> None:
    """Render everything once, reload what changed, exit (3 if data is still missing at the timeout)."""
    from confsync import modes

    cfg = _load(config, log_level=log_level, log_format=log_format)
    _finish(asyncio.run(modes.once(cfg, _timeout(timeout), dry_run=dry_run, diff=diff, force=force)))


@app.command()
def init(config: ConfigOpt = Path("confsync.yaml"), log_level: LevelOpt = None, log_format: FormatOpt = None,
         timeout: TimeoutOpt = "60s") -> None:
    """For an init container: render everything without reloading; exit 3 naming what is missing."""
    from confsync import modes

    cfg = _load(config, log_level=log_level, log_format=log_format)
    _finish(asyncio.run(modes.once(cfg, _timeout(timeout), reloads=False)))


@app.command()
def check(config: ConfigOpt = Path("confsync.yaml"), log_level: LevelOpt = None,
          log_format: FormatOpt = None) -> None:
    """Validate the config and every template's syntax; touches no destination."""
    from confsync.runner import Runner

    async def compile_all() -> int:
        return len(Runner(_load(config, log_level=log_level, log_format=log_format)).templates)

    count = asyncio.run(compile_all())
    typer.echo(f"{config}: ok ({count} template(s))")


def main() -> None:
    try:
        app()
    except ConfsyncError as exc:
        print(f"confsync: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
