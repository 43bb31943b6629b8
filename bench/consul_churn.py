"""Consul under churn (issue 17): what confsync reads while others write keys it does not use.

Two cases, each 8 s of 20 writes a second next to 3,000 keys of 1 KB, with confsync's `consul`
source (in process) watching the keys `a` and `b`:

- `unrelated`: the writes go to `other/…`, a folder nothing watches;
- `same folder`: the watched keys are `app/a` and `app/b`, the writes go to `app/other/…`.

Reported: the KV reads confsync made and the bytes Consul (the emulator) sent for them.

    python -m bench.consul_churn [--confsync PATH]   # PATH: another checkout, for a before/after
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEYS, SIZE, RATE, SECONDS = 3000, 1024, 20, 8.0


class _Sink:
    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}

    def update(self, dep: Any, value: Any) -> None:
        self.values[dep] = value

    def source_status(self, source: str, up: bool, reason: str = "") -> None:
        pass


def _write(addr: str, folder: str) -> None:
    import httpx

    with httpx.Client(base_url=addr) as http:
        end, i = time.monotonic() + SECONDS, 0
        while time.monotonic() < end:
            http.put(f"/v1/kv/{folder}k{i % KEYS}", content=b"y" * SIZE)
            i += 1
            time.sleep(1 / RATE)


async def _case(watched: tuple[str, str], folder: str) -> dict[str, int]:
    import httpx

    from confsync.sources import Dep
    from confsync.sources.consul import ConsulOptions, ConsulSource
    from tests.consul_emulator import consul_emulator

    with consul_emulator(jitter=False) as emu:
        with httpx.Client(base_url=emu.addr) as http:
            for key in watched:
                http.put(f"/v1/kv/{key}", content=b"v")
            for i in range(KEYS):
                http.put(f"/v1/kv/{folder}k{i}", content=b"x" * SIZE)
        sink = _Sink()
        source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=60), sink)
        await source.start()
        try:
            for key in watched:
                source.watch(Dep("consul", "key", key))
            while len(sink.values) < len(watched):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(emu.wait_for_blocked, 1, 30)
            await asyncio.sleep(1)  # every poll parked (one, or one per folder)
            emu.reset_counters()
            writer = threading.Thread(target=_write, args=(emu.addr, folder))
            writer.start()
            await asyncio.to_thread(writer.join)
            reads = {p: n for p, n in emu.request_count.items() if not p.startswith(f"/v1/kv/{folder}")}
            sent = sum(n for p, n in emu.bytes_sent.items() if p in reads)
            return {"reads": sum(reads.values()), "bytes": sent}
        finally:
            await source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--confsync", type=Path, help="measure the confsync package of this checkout")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import tests.consul_emulator  # noqa: F401 - this checkout's emulator, whichever confsync is measured

    if args.confsync:
        sys.path.insert(0, str(args.confsync.resolve()))
    import confsync

    print(f"confsync from {Path(confsync.__file__).parent}; {RATE} writes/s for {SECONDS:g} s "
          f"next to {KEYS} keys of {SIZE} B")
    cases = (("unrelated", ("a", "b"), "other/"), ("same folder", ("app/a", "app/b"), "app/other/"))
    for name, watched, folder in cases:
        result = asyncio.run(_case(watched, folder))
        print(f"{name:12} KV reads {result['reads']:4}   bytes {result['bytes'] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
