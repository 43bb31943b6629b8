"""The command line: builds a Config from the file and flags, then hands off to a mode.

argparse, not Typer: Typer (with the pydantic and rich it now pulls in) took about 60 ms of every
start and 5 MiB of every process, a third of `confsync once` for one template
(docs/performance.md). Every flag can also come from the environment variable named in its help.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from confsync import config as config_module
from confsync.errors import ConfigError, ConfsyncError


def _load(args: argparse.Namespace, **overrides: Any) -> config_module.Config:
    from confsync import logs

    level, fmt = args.log_level, args.log_format
    # Logging first, from the flags alone, so config errors are logged the same way.
    logs.setup(level or "info", fmt or "text")
    config = config_module.load(args.config, {"log_level": level, "log_format": fmt, **overrides})
    logs.setup(config.log_level, config.log_format)
    return config


def _timeout(text: str) -> float:
    try:
        return config_module.parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--timeout: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """The sidecar daemon: watch, render, write, reload until SIGTERM."""
    from confsync import modes

    cfg = _load(args, listen=args.listen)
    return asyncio.run(modes.run(cfg, force=args.force))


def once(args: argparse.Namespace) -> int:
    """Render everything once, reload what changed, exit (3 if data is still missing at the timeout)."""
    from confsync import modes

    cfg = _load(args)
    return asyncio.run(modes.once(cfg, _timeout(args.timeout), dry_run=args.dry_run, diff=args.diff,
                                  force=args.force))


def init(args: argparse.Namespace) -> int:
    """For an init container: render everything without reloading; exit 3 naming what is missing."""
    from confsync import modes

    cfg = _load(args)
    return asyncio.run(modes.once(cfg, _timeout(args.timeout), reloads=False))


def exec_(args: argparse.Namespace) -> int:
    """Render everything, then run the app with its files and environment ready: confsync exec -- cmd…"""
    from confsync import supervise

    cfg = _load(args, listen=args.listen)
    command = args.command or cfg.exec.command
    return asyncio.run(supervise.run(cfg, command, _timeout(args.timeout), force=args.force))


def check(args: argparse.Namespace) -> int:
    """Validate the config and every template's syntax; touches no destination."""
    from confsync.runner import Runner

    async def compile_all() -> int:
        config = _load(args)
        Runner(config, exec_env=lambda name, text: None)  # a sink, so that exec.env's values compile too
        return len(config.templates)

    count = asyncio.run(compile_all())
    print(f"{args.config}: ok ({count} template(s))")
    return 0


def convert(args: argparse.Namespace) -> int:
    """Translate a consul-template config and its templates into confsync.yaml and Jinja2 templates."""
    from confsync.convert import convert as run_convert

    report = run_convert(args.ct_config, args.output)
    print("\n".join(report.lines()))
    return 0 if report.complete else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confsync", description="Keep config files true to a central store.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(func: Any, *, force: bool = False, timeout: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(func.__name__.rstrip("_"), help=func.__doc__, description=func.__doc__)
        sub.set_defaults(func=func)
        default_config = Path(os.environ.get("CONFSYNC_CONFIG", "confsync.yaml"))
        sub.add_argument("-c", "--config", type=Path, metavar="PATH", default=default_config,
                         help="Config file (YAML, or TOML by its .toml suffix) [env: CONFSYNC_CONFIG; "
                              "default: confsync.yaml]")
        sub.add_argument("--log-level", metavar="LEVEL",
                         help="debug | info | warning | error [env: CONFSYNC_LOG_LEVEL]")
        sub.add_argument("--log-format", metavar="FORMAT", help="text | json [env: CONFSYNC_LOG_FORMAT]")
        if force:
            sub.add_argument("--force", action="store_true", help="Accept renders that shrink a file past max_shrink.")
        if timeout:
            sub.add_argument("--timeout", default=timeout, metavar="DURATION",
                             help=f"How long to wait for missing data (e.g. 30s) [default: {timeout}]")
        return sub

    command(run, force=True).add_argument(
        "--listen", metavar="HOST:PORT", help="host:port for /healthz, /readyz, /metrics [env: CONFSYNC_LISTEN]")
    sub = command(once, force=True, timeout="30s")
    sub.add_argument("--dry-run", action="store_true", help="Write nothing.")
    sub.add_argument("--diff", action="store_true", help="Print a unified diff against the files on disk.")
    command(init, timeout="60s")
    sub = command(exec_, force=True, timeout="60s")
    sub.add_argument("--listen", metavar="HOST:PORT",
                     help="host:port for /healthz, /readyz, /metrics [env: CONFSYNC_LISTEN]")
    sub.add_argument("command", nargs="*", metavar="-- COMMAND",
                     help="The app and its arguments, after --; wins over exec.command")
    command(check)
    sub = commands.add_parser("convert", help=convert.__doc__, description=convert.__doc__)
    sub.set_defaults(func=convert)
    sub.add_argument("ct_config", type=Path, metavar="CONSUL_TEMPLATE_CONFIG", help="HCL, or JSON by its .json suffix")
    sub.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                     help="Where confsync.yaml, templates/ and convert-report.txt go [default: .]")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        sys.exit(2)
    try:
        sys.exit(args.func(args) or 0)
    except ConfsyncError as exc:
        print(f"confsync: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
