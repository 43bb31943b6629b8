"""The application being reloaded, as a separate process: it timestamps each SIGHUP it catches and
each HTTP reload it receives, and prints `HUP <t>` / `HTTP <t>` (t from CLOCK_MONOTONIC, which all
processes share) on stdout. Usage: python -m bench.receiver PID_FILE; prints `ready PORT` first.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # no buffered I/O: the handler may interrupt a print


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        now = time.monotonic()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        _say(f"HTTP {now}")

    do_GET = do_PUT = do_POST

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    signal.signal(signal.SIGHUP, lambda *_: _say(f"HUP {time.monotonic()}"))
    with open(sys.argv[1], "w") as fh:
        fh.write(str(os.getpid()))
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    _say(f"ready {server.server_address[1]}")
    server.serve_forever(poll_interval=3600)  # the selector wakes on a connection, not a timer


if __name__ == "__main__":
    main()
