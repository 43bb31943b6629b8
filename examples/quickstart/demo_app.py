"""A stand-in for your app: prints its config at start and again on every SIGHUP."""

import os
import signal
import sys
from pathlib import Path

here = Path(__file__).parent
config = here / "out" / "app.conf"


def show(*_: object) -> None:
    text = config.read_text() if config.exists() else "(not rendered yet)\n"
    print(f"demo app (pid {os.getpid()}): config is now\n{text}", flush=True)


(here / "app.pid").write_text(str(os.getpid()))
signal.signal(signal.SIGHUP, show)
show()
sys.stdout.flush()
while True:
    signal.pause()
