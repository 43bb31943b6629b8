"""The `consul` source under a real Consul's limits (issue 17): waits capped by the server, stale
reads past `max_stale`, replies without X-Consul-Index, and churn that changes no watched value."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from confsync.sources.consul import ConsulOptions, ConsulSource
from confsync.sources.consul.pacing import CHURN_BURST, CHURN_REFILL
from tests.consul_emulator import consul_emulator
from tests.test_consul_source import Sink, dep, poll, put

pytestmark = pytest.mark.consul


async def test_a_wait_capped_by_the_server_is_not_an_early_reply():
    with consul_emulator(jitter=False) as emu:
        emu.max_query_time = 1.0  # the server holds at most 1 s; we ask for 10
        put(emu, "app/k", "1")
        sink = Sink()
        source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=10), sink)
        await source.start()
        try:
            source.watch(dep("key", "app/k"))
            await sink.wait_for(lambda: sink.values.get(dep("key", "app/k")) == "1")
            start = emu.request_count["/v1/kv/app/"]
            await poll(lambda: emu.request_count["/v1/kv/app/"] >= start + 3, timeout=30)  # 3 capped replies
            assert [w.pace.spins for w in source._kv.values()] == [0]  # not counted as a misbehaving server
            put(emu, "app/k", "2")
            await sink.wait_for(lambda: sink.values[dep("key", "app/k")] == "2")
        finally:
            await source.close()


async def test_stale_reads_past_max_stale_or_without_a_leader_ask_the_leader():
    with consul_emulator(jitter=False) as emu:
        emu.rpc_hold_timeout = 0.3
        emu.last_contact = 5.0  # the follower answering ?stale reads lags 5 s behind
        put(emu, "app/k", "1")
        sink = Sink()
        options = ConsulOptions(address=emu.addr, wait=1, consistency="stale", max_stale=2)
        source = ConsulSource("consul", options, sink)
        await source.start()
        try:
            source.watch(dep("key", "app/k"))
            await sink.wait_for(lambda: sink.values.get(dep("key", "app/k")) == "1")  # from the leader
            # No leader: a stale read would still answer (KnownLeader false); it is not trusted, and
            # the leader's read fails after rpc_hold_timeout: the source is down, the value kept.
            emu.last_contact = 0.0
            emu.leader = ""
            await poll(lambda: any(not up and "No cluster leader" in why for up, why in sink.status), timeout=30)
            assert sink.values[dep("key", "app/k")] == "1"
            emu.leader = "127.0.0.1:8300"
            await poll(lambda: sink.status and sink.status[-1][0], timeout=30)
        finally:
            await source.close()


class _NoIndexConsul(ThreadingHTTPServer):
    """A Consul behind a proxy that strips X-Consul-Index: answers every read at once."""

    def __init__(self) -> None:
        self.value = "dg=="  # "v"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                body = json.dumps([{"Key": "app/k", "Value": self.value, "ModifyIndex": 3}]).encode()
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


async def test_a_reply_without_x_consul_index_still_counts():
    server = _NoIndexConsul()
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=f"127.0.0.1:{server.server_address[1]}", wait=2), sink)
    await source.start()
    try:
        source.watch(dep("key", "app/k"))
        await sink.wait_for(lambda: sink.values.get(dep("key", "app/k")) == "v")
        server.value = "dzI="  # "w2": seen by a later poll, the source never down
        await sink.wait_for(lambda: sink.values[dep("key", "app/k")] == "w2", timeout=30)
        assert not [s for s in sink.status if not s[0]]
    finally:
        await source.close()
        server.shutdown()
        server.server_close()


async def test_churn_that_changes_no_watched_value_is_paced_by_a_token_bucket():
    with consul_emulator(jitter=False) as emu:
        put(emu, "app/k", "1")
        sink = Sink()
        source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30), sink)
        await source.start()
        try:
            source.watch(dep("key", "app/k"))
            await sink.wait_for(lambda: sink.values.get(dep("key", "app/k")) == "1")
            assert await asyncio.to_thread(emu.wait_for_blocked, 1)
            before = emu.request_count["/v1/kv/app/"]

            def churn() -> float:  # 60 writes next to the watched key, 20 a second
                started = time.monotonic()
                with httpx.Client(base_url=emu.addr) as http:
                    for i in range(60):
                        http.put(f"/v1/kv/app/noise/k{i}", content=b"x")
                        time.sleep(0.05)
                return time.monotonic() - started

            took = await asyncio.to_thread(churn)
            reads = emu.request_count["/v1/kv/app/"] - before
            # Without the bucket, one read per 100 ms: ~30. With it, the burst then one a second.
            assert reads <= CHURN_BURST + took / CHURN_REFILL + 2, (reads, took)
            put(emu, "app/k", "2")  # a real change still arrives
            await sink.wait_for(lambda: sink.values[dep("key", "app/k")] == "2")
        finally:
            await source.close()
