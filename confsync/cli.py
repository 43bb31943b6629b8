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

    # Logging first, from the flags alone, so config errors are logged the same way.
    logs.setup(args.log_level or "info", args.log_format or "text")
    config = _read(args, **overrides)
    logs.setup(config.log_level, config.log_format)
    return config


def _read(args: argparse.Namespace, **overrides: Any) -> config_module.Config:
    """The config file with the flags applied over it: at start, and again at each SIGHUP."""
    return config_module.load(args.config, {"log_level": args.log_level, "log_format": args.log_format,
                                            **overrides})


def _flag(setting: str) -> Any:
    """An argparse `type` checking a flag exactly as the same setting is checked in the config file."""

    def convert(text: str) -> Any:
        try:
            return config_module.check_setting(setting, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = setting  # argparse names the type in some of its messages
    return convert


def run(args: argparse.Namespace) -> int:
    """The sidecar daemon: watch, render, write, reload until SIGTERM."""
    from confsync import modes

    flags = {"listen": args.listen, "pid_file": args.pid_file}
    cfg = _load(args, **flags)
    return asyncio.run(modes.run(cfg, force=args.force, load=lambda: _read(args, **flags)))


def once(args: argparse.Namespace) -> int:
    """Render everything once, reload what changed, exit (3 if data is still missing at the timeout)."""
    from confsync import modes

    cfg = _load(args)
    _one_shot.append(True)
    return asyncio.run(modes.once(cfg, args.timeout, dry_run=args.dry_run, diff=args.diff, force=args.force))


def init(args: argparse.Namespace) -> int:
    """For an init container: render everything without reloading; exit 3 naming what is missing."""
    from confsync import modes

    cfg = _load(args)
    _one_shot.append(True)
    return asyncio.run(modes.once(cfg, args.timeout, reloads=False))


def exec_(args: argparse.Namespace) -> int:
    """Render everything, then run the app with its files and environment ready: confsync exec -- cmd…"""
    from confsync import supervise

    cfg = _load(args, listen=args.listen)
    return asyncio.run(supervise.run(cfg, args.command, args.timeout, force=args.force,
                                     load=lambda: _read(args, listen=args.listen)))


def check(args: argparse.Namespace) -> int:
    """Validate the config, every setting and every template (syntax, includes, the names and keys
    it uses); report every problem found, touch nothing."""
    from confsync import lint
    from confsync.runner import Runner

    cfg = _load(args)
    problems = lint.check(cfg)
    if problems:
        raise ConfigError("\n".join(problems))

    async def compile_all() -> int:
        # exec_env: a sink, so that exec.env's values compile too
        return len(Runner(cfg, exec_env=lambda name, text: None).templates)

    count = asyncio.run(compile_all())
    print(f"{cfg.path}: ok ({count} template(s))")
    return 0


def convert(args: argparse.Namespace) -> int:
    """Translate a consul-template config and its templates into confsync.yaml and Jinja2 templates."""
    from confsync.convert import convert as run_convert

    report = run_convert(args.ct_config, args.output)
    print("\n".join(report.lines()))
    return 0 if report.complete else 1


def _version() -> str:
    import platform
    from importlib import metadata

    from confsync.sources import CLIENTS, REGISTRY, missing_client

    lines = [f"confsync {metadata.version('confsync')} (Python {platform.python_version()})"]
    for kind in REGISTRY:
        if kind not in CLIENTS:
            lines.append(f"  {kind}: built in")
            continue
        distribution = CLIENTS[kind][2]
        if missing_client(kind):
            lines.append(f"  {kind}: not installed (pip install 'confsync[{CLIENTS[kind][1]}]')")
        else:
            try:
                lines.append(f"  {kind}: {distribution} {metadata.version(distribution)}")
            except metadata.PackageNotFoundError:
                lines.append(f"  {kind}: installed")
    return "\n".join(lines)


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(_version())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confsync", description="Keep config files true to a central store.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="Print the version and the sources this install supports, and exit.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(func: Any, *, force: bool = False, timeout: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(func.__name__.rstrip("_"), help=func.__doc__, description=func.__doc__)
        sub.set_defaults(func=func)
        default_config = Path(os.environ.get("CONFSYNC_CONFIG", "confsync.yaml"))
        sub.add_argument("-c", "--config", type=Path, metavar="PATH", default=default_config,
                         help="Config file (YAML, or TOML by its .toml suffix) [env: CONFSYNC_CONFIG; "
                              "default: confsync.yaml]")
        sub.add_argument("--log-level", metavar="LEVEL", type=_flag("log_level"),
                         help="debug | info | warning | error [env: CONFSYNC_LOG_LEVEL]")
        sub.add_argument("--log-format", metavar="FORMAT", type=_flag("log_format"),
                         help="text | json [env: CONFSYNC_LOG_FORMAT]")
        if force:
            sub.add_argument("--force", action="store_true", help="Accept renders that shrink a file past max_shrink.")
        if timeout:
            sub.add_argument("--timeout", default=timeout, metavar="DURATION", type=_flag("timeout"),
                             help=f"How long to wait for missing data (e.g. 30s) [default: {timeout}]")
        return sub

    sub = command(run, force=True)
    sub.add_argument("--listen", metavar="HOST:PORT", type=_flag("listen"),
                     help="host:port for /healthz, /readyz, /metrics [env: CONFSYNC_LISTEN]")
    sub.add_argument("--pid-file", metavar="PATH", type=_flag("pid_file"),
                     help="Write confsync's PID here while it runs [env: CONFSYNC_PID_FILE]")
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


_one_shot: list[bool] = []  # once/init started: their end ends the process at once


def main(argv: list[str] | None = None) -> None:
    from confsync import signals

    signals.hold()
    try:
        _main(argv)
    except signals.Stopped as stopped:
        sys.exit(128 + stopped.signum)
    except SystemExit as done:
        if not _one_shot:
            raise
        _exit_now(done.code if isinstance(done.code, int) else 1)


def _exit_now(code: int) -> None:
    """once/init are done: files written, reloads delivered, sources closed, all said. Tearing the
    interpreter down (freeing every module, joining idle client threads) would add about 0.1 s to
    every one-shot run (issue 16): flush what is buffered and leave."""
    import contextlib
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _main(argv: list[str] | None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        sys.exit(2)
    try:
        sys.exit(args.func(args) or 0)
    except ConfsyncError as exc:
        if not exc.logged:
            print(f"confsync: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (MemoryError, RecursionError, OSError) as exc:  # the last guard: no input may print a traceback
        print(f"confsync: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
