"""The app `confsync exec` runs in tests/test_exec.py.

It appends one JSON line per event to RECORD: its start (pid, process group, environment, the
config file's content), every signal it receives (with the config file's content at that moment),
so a test waits for a line instead of sleeping.

    python exec_app.py RECORD CONFIG [--exit N] [--term-exit N] [--ignore-term] [--orphan FIFO]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

SIGNALS = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGQUIT", "SIGTERM", "SIGINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("record", type=Path)
    parser.add_argument("config", type=Path)
    parser.add_argument("--exit", type=int, help="exit with this status at once (negative: die by that signal)")
    parser.add_argument("--term-exit", type=int, default=0, help="exit status on SIGTERM")
    parser.add_argument("--ignore-term", action="store_true", help="record SIGTERM and go on")
    parser.add_argument("--orphan", metavar="FIFO", help="leave an orphan that exits once FIFO is closed")
    args = parser.parse_args()

    def record(event: str, **fields: Any) -> None:
        try:
            config = args.config.read_text()
        except OSError:
            config = None
        line = json.dumps({"event": event, "pid": os.getpid(), "config": config, **fields}) + "\n"
        fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one write: lines never interleave
        finally:
            os.close(fd)

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        record("signal", name=name)
        if signum in (signal.SIGTERM, signal.SIGINT) and not args.ignore_term:
            sys.exit(args.term_exit)

    for name in SIGNALS:
        signal.signal(getattr(signal, name), on_signal)
    if args.orphan:
        # The intermediate child exits at once, so the grandchild is reparented to PID 1; it exits
        # when the test opens and closes the FIFO, and is then a zombie until PID 1 reaps it.
        reads_fifo = "import sys; open(sys.argv[1]).read()"
        grandchild = f"subprocess.Popen([sys.executable, '-c', {reads_fifo!r}, {args.orphan!r}])"
        subprocess.run([sys.executable, "-c", f"import subprocess, sys; {grandchild}"], check=True)
    record("start", pgid=os.getpgrp(), env=dict(os.environ))
    if args.exit is not None:
        if args.exit < 0:
            os.kill(os.getpid(), -args.exit)
        sys.exit(args.exit)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
