"""A stand-in for your app: prints its config at start and again on every SIGHUP; on SIGTERM or
SIGINT it removes its pid file and exits, so nothing signals a stale PID later."""

import os
import signal
import sys
from pathlib import Path

here = Path(__file__).parent
config = here / "out" / "app.conf"


def show(*_: object) -> None:
    text = config.read_text() if config.exists() else "(not rendered yet)\n"
    print(f"demo app (pid {os.getpid()}): config is now\n{text}", flush=True)


def leave(*_: object) -> None:
    pid_file.unlink(missing_ok=True)
    sys.exit(0)


pid_file = here / "app.pid"
pid_file.write_text(str(os.getpid()))
signal.signal(signal.SIGHUP, show)
signal.signal(signal.SIGTERM, leave)
signal.signal(signal.SIGINT, leave)
show()
sys.stdout.flush()
while True:
    signal.pause()
