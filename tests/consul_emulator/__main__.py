"""Standalone: python -m tests.consul_emulator --port 8500 [--token SECRET]."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .emulator import ConsulEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Consul HTTP API emulator (for tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="0 picks a free port (printed on start)")
    parser.add_argument("--token", default=None, help="require this ACL token on every request")
    parser.add_argument("--no-jitter", action="store_true", help="do not add wait/16 jitter to blocking queries")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    emu = ConsulEmulator(token=args.token, host=args.host, port=args.port, jitter=not args.no_jitter,
                         verbose=args.verbose)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    emu.start()
    print(f"consul emulator listening on {emu.addr}", flush=True)
    try:
        done.wait()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
