"""The Consul emulator (tests/consul_emulator/) in its own process, for the benchmarks.

Prints `port N`, then answers each `count` line on stdin with the number of requests served so far.
"""

from __future__ import annotations

import sys

from tests.consul_emulator import ConsulEmulator


def main() -> None:
    emulator = ConsulEmulator(jitter=False).start()
    print(f"port {emulator.port}", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(emulator.requests_total, flush=True)
    emulator.stop()


if __name__ == "__main__":
    main()
