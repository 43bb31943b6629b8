"""`/healthz`, `/readyz` and `/metrics` on `listen` (off unless set).

The server runs on the runner's own event loop: if it answers, the loop is turning. Metrics are read
from the runner's plain counters at scrape time, so the render path never touches prometheus_client.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from confsync.errors import ConfigError

if TYPE_CHECKING:
    from confsync.runner import Runner

log = logging.getLogger(__name__)

# Probes and a scraper need a few connections at a time. Capped, and each one bounded in time, a
# flood of idle connections cannot take the file descriptors that reads and writes need (issue 10).
MAX_CONNECTIONS = 64
EXCHANGE_TIMEOUT = 5.0  # seconds for a whole request and its answer
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# App states (supervise.py) in which /healthz fails: the app is gone or going for good.
APP_DOWN = ("stopping", "exited")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: expected host:port such as 127.0.0.1:9101, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(runner: Runner, listen: str, app: Callable[[], str] | None = None) -> asyncio.Server:
    """`app`: under `confsync exec`, the app's state (running, restarting, exited…), reported by both probes."""
    host, port = parse_listen(listen)
    collector = Collector(runner)
    cap = connection_cap()
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= cap:
            writer.transport.abort()  # over the cap: closed at once, unread
            return
        active += 1
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
                method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                status, kind, body = _route(runner, collector, method, path.split("?", 1)[0], app)
                head = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n")
                writer.write(head.encode() + (body if method != "HEAD" else b""))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError,
                ValueError):
            writer.transport.abort()
        finally:
            active -= 1
            writer.close()

    try:
        # asyncio accepts up to `backlog` connections at a time before any handler can close one:
        # a small backlog keeps that burst well inside the descriptor budget too.
        server = await asyncio.start_server(handle, host, port, backlog=min(16, cap))
    except OSError as exc:
        raise ConfigError(f"listen: cannot listen on {host}:{port}: {exc.strerror}") from None
    _quiet_accept_errors(asyncio.get_running_loop())
    log.info("serving /healthz, /readyz, /metrics on %s:%d", host, port, extra={"event": "listening"})
    return server


def connection_cap() -> int:
    """At most a quarter of the file descriptors this process may open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(MAX_CONNECTIONS, soft // 4)) if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports an accept() that ran out of descriptors with a traceback, and retries a
    second later: one line each time is enough (issue 10 saw 28k traceback lines in 6 s)."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS and "accept" in context.get("message", ""):
            log.warning("/healthz, /readyz, /metrics: cannot accept a connection: %s (retrying in 1s)",
                        exc.strerror, extra={"event": "listener_error"})
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _route(runner: Runner, collector: Collector, method: str, path: str,
           app: Callable[[], str] | None = None) -> tuple[str, str, bytes]:
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
    state = app() if app else None
    if path == "/healthz":
        alive = runner.worker is not None and not runner.worker.done()
        if alive and state in APP_DOWN:
            return "503 Service Unavailable", "text/plain", f"app: {state}\n".encode()
        ok = b"ok\n" + (f"app: {state}\n".encode() if state else b"")
        return ("200 OK", "text/plain", ok) if alive else ("503 Service Unavailable", "text/plain",
                                                         b"the render loop is not running\n")
    if path == "/readyz":
        waiting = runner.waiting()
        # A template whose data cannot be kept fresh is not ready once stale past the bound (issue 18).
        bound = runner.config.max_stale_for_ready
        found = runner.stale()
        stale = {name: {"for_seconds": round(seconds, 1), "why": why} for name, (seconds, why) in found.items()}
        ready = not waiting and all(seconds <= bound for seconds, _ in found.values()) and state in (None, "running")
        body = json.dumps({"ready": ready, "waiting": waiting, "stale": stale, "max_stale_for_ready": bound}
                          | ({"app": state} if state else {}),
                          indent=2).encode() + b"\n"
        return ("200 OK" if ready else "503 Service Unavailable"), "application/json", body
    if path == "/metrics":
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(collector)
    return "404 Not Found", "text/plain", b"not found: try /healthz, /readyz or /metrics\n"


class Collector:
    """A prometheus_client collector over the runner's counters (labels never carry values)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        runner = self.runner
        renders = CounterMetricFamily("confsync_renders", "Renders that produced a file", labels=["template"])
        failures = CounterMetricFamily("confsync_render_failures", "Renders or writes that failed or were "
                                       "refused; the last good file was kept", labels=["template", "reason"])
        render_s = SummaryMetricFamily("confsync_render_duration_seconds", "Time to render", labels=["template"])
        write_s = SummaryMetricFamily("confsync_write_duration_seconds", "Time to stage, check and replace",
                                      labels=["template"])
        prop_s = SummaryMetricFamily("confsync_propagation_delay_seconds", "From a change seen to the file "
                                     "written", labels=["template"])
        since = GaugeMetricFamily("confsync_seconds_since_last_sync", "Seconds since the last render that "
                                  "reached the disk (or was identical)", labels=["template"])
        now = time.time()
        for state in runner.templates:
            label = [state.name]
            renders.add_metric(label, state.renders)
            for reason, count in state.failures.items():
                failures.add_metric([state.name, reason], count)
            render_s.add_metric(label, state.render_time.count, state.render_time.total)
            write_s.add_metric(label, state.write_time.count, state.write_time.total)
            prop_s.add_metric(label, state.propagation.count, state.propagation.total)
            if state.last_success is not None:
                since.add_metric(label, now - state.last_success)
        yield from (renders, failures, render_s, write_s, prop_s, since)

        reloads = CounterMetricFamily("confsync_reloads", "Reloads delivered", labels=["reloader"])
        reload_failures = CounterMetricFamily("confsync_reload_failures", "Reloads that failed",
                                              labels=["reloader"])
        for name, outcomes in runner.reloads.items():
            reloads.add_metric([name], outcomes["ok"])
            reload_failures.add_metric([name], outcomes["failed"])
        yield from (reloads, reload_failures)
        config_reloads = CounterMetricFamily("confsync_config_reloads", "Config re-reads on SIGHUP, applied "
                                             "(ok) or refused (failed)", labels=["result"])
        for result, count in runner.config_reloads.items():
            config_reloads.add_metric([result], count)
        yield config_reloads

        up = GaugeMetricFamily("confsync_source_up", "1 if the source's backend is reachable", labels=["source"])
        errors = CounterMetricFamily("confsync_source_errors", "Times a source became unavailable",
                                     labels=["source"])
        watched = GaugeMetricFamily("confsync_watched_keys", "Distinct dependencies watched", labels=["source"])
        counts: dict[str, int] = dict.fromkeys(runner.sources, 0)
        for dep in runner.store.users:
            counts[dep.source] = counts.get(dep.source, 0) + 1
        for name in runner.sources:
            up.add_metric([name], 0 if name in runner.source_down else 1)
            errors.add_metric([name], runner.source_errors.get(name, 0))
            watched.add_metric([name], counts[name])
        unreadable = GaugeMetricFamily("confsync_unreadable_keys", "Watched values templates need and cannot have: "
                                       "they cannot be read (permission, not UTF-8…) or were deleted after their "
                                       "templates rendered", labels=["source"])
        unreadable_counts: dict[str, int] = dict.fromkeys(runner.sources, 0)
        for dep in runner.store.unreadable:
            unreadable_counts[dep.source] = unreadable_counts.get(dep.source, 0) + 1
        for name in runner.sources:
            unreadable.add_metric([name], unreadable_counts[name])
        stale = GaugeMetricFamily("confsync_stale_seconds", "Seconds a rendered template has not been able to "
                                  "get fresh data (0: fresh)", labels=["template"])
        stale_now = runner.stale()
        for state in runner.templates:
            stale.add_metric([state.name], stale_now[state.name][0] if state.name in stale_now else 0.0)
        yield from (up, errors, watched, unreadable, stale)

        leases = GaugeMetricFamily("confsync_vault_lease_seconds_remaining", "Seconds until a leased secret "
                                   "expires", labels=["source", "path"])
        for name, source in runner.sources.items():
            for path, seconds in getattr(source, "lease_remaining", dict)().items():
                leases.add_metric([name, path], seconds)
        yield leases
