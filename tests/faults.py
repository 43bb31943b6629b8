"""Fault injection for the network sources: a loopback TCP proxy in front of a real server.

    with FaultProxy(("127.0.0.1", etcd_port)) as proxy:     # proxy.url: http://127.0.0.1:P
        proxy.respond(200, b"<html>hello</html>")          # every HTTP request gets this
        proxy.respond(429, b"{}", {"Retry-After": "2"})     # a rate limit
        proxy.hang()                                         # accept, read, never answer
        proxy.junk()                                         # answer bytes that are no protocol
        proxy.cut()                                          # close every open connection now
        proxy.passthrough()                                  # back to forwarding

`blackhole()` is a proxy with no server behind it, hanging from the start: an address that accepts
TCP and never says a word. The mode applies to connections accepted after it is set, and switching
cuts the open ones, so that a keep-alive client meets the new mode at once. `hits` counts requests
(HTTP modes) or connections (the others), with the time each came, so a test can check a back-off
without sleeping. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

LOOPBACK = "127.0.0.1"


class FaultProxy:
    def __init__(self, upstream: tuple[str, int] | None) -> None:
        self.upstream = upstream
        self._mode: tuple[str, Any] = ("pass", None) if upstream else ("hang", None)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.hits: list[tuple[float, str]] = []  # (monotonic time, what was answered)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # -- modes

    def passthrough(self) -> None:
        self._switch("pass", None)

    def respond(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._switch("respond", (status, body, headers or {}))

    def hang(self) -> None:
        self._switch("hang", None)

    def junk(self) -> None:
        self._switch("junk", None)

    def _switch(self, kind: str, arg: Any) -> None:
        """New connections get the new behaviour; open ones are cut, so a keep-alive client meets it too."""
        self._mode = (kind, arg)
        self.cut()

    def cut(self) -> None:
        """Close every connection open now, in the middle of whatever it carries."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def hit_count(self, what: str = "") -> int:
        return sum(1 for _, kind in self.hits if kind.startswith(what))

    # -- serving

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._track(conn)
            threading.Thread(target=self._serve, args=(conn, self._mode), daemon=True).start()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)

    def _serve(self, conn: socket.socket, mode: tuple[str, Any]) -> None:
        kind, arg = mode
        try:
            if kind == "pass":
                self._forward(conn)
            elif kind == "respond":
                self._answer(conn, *arg)
            elif kind == "junk":
                self.hits.append((time.monotonic(), "junk"))
                conn.recv(65536)
                conn.sendall(b"\x15\x03\x01\x00\x02\x02\x50 not a protocol \xff\xfe\n")
            else:  # hang: read whatever comes, answer nothing, until the peer or cut() closes
                self.hits.append((time.monotonic(), "hang"))
                while conn.recv(65536):
                    pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _forward(self, conn: socket.socket) -> None:
        assert self.upstream
        self.hits.append((time.monotonic(), "pass"))
        upstream = socket.create_connection(self.upstream)
        self._track(upstream)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
        back.start()
        pipe(conn, upstream)
        back.join()
        with self._lock:
            self._open.discard(upstream)
        upstream.close()

    def _answer(self, conn: socket.socket, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Answer each HTTP request on the connection with the canned reply (keep-alive aware)."""
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            buffer = buffer[length:]
            self.hits.append((time.monotonic(), f"{status} {head.split(b' ')[1].decode('latin-1')}"))
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            conn.sendall(f"HTTP/1.1 {status} Canned\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                         + body)

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self.cut()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def address_of(url: str) -> tuple[str, int]:
    host, _, port = url.rsplit("/", 1)[-1].rpartition(":")
    return host, int(port)


@contextlib.contextmanager
def fault_proxy(url: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the server at `url` (http://127.0.0.1:P)."""
    with FaultProxy(address_of(url)) as proxy:
        yield proxy


@contextlib.contextmanager
def blackhole() -> Iterator[FaultProxy]:
    """An address that accepts TCP connections and never answers."""
    with FaultProxy(None) as proxy:
        yield proxy
