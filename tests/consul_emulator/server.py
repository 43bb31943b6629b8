"""HTTP plumbing: a threading server that can be stopped with long polls in flight."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .util import THREAD_PREFIX, Abort, ApiError, Response

if TYPE_CHECKING:
    from .emulator import ConsulEmulator


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can be stopped with long polls in flight.

    Every accepted connection and its handler thread are tracked so that
    ``close_all`` can shut the sockets down (waking handlers parked in a
    keep-alive read) and the emulator can join every thread it started.
    """

    daemon_threads = True  # joined explicitly in ConsulEmulator.stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: ConsulEmulator) -> None:
        self.emulator = emulator
        self.stopping = threading.Event()
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        super().__init__(address, Handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        # Headers and body go out as separate writes; without TCP_NODELAY,
        # Nagle + the client's delayed ACK add ~40 ms to every response.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-{self.server_address[1]}-conn",
            daemon=True,
        )
        with self._track_lock:
            self._connections.add(request)
            self._handler_threads.add(thread)
        thread.start()

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._track_lock:
                self._connections.discard(request)
                self._handler_threads.discard(threading.current_thread())

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)) or self.stopping.is_set():
            return  # client went away / we are shutting down
        if self.emulator.verbose:
            super().handle_error(request, client_address)

    def close_all(self) -> list[threading.Thread]:
        with self._track_lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return threads


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "consul-emulator"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        try:
            body = self._read_body()
            split = urlsplit(self.path)
            query = parse_qs(split.query, keep_blank_values=True)
            emu._count(split.path)
            if emu.delay and self.server.stopping.wait(emu.delay):
                raise Abort
            if emu.fail_with:
                raise ApiError(int(emu.fail_with), f"consul emulator: injected failure (HTTP {emu.fail_with})")
            response = emu._handle(self.server, method, split.path, query, self.headers, body)
        except Abort:
            self.close_connection = True
            return
        except ApiError as err:
            response = Response(err.status, err.message.encode(), "text/plain; charset=utf-8", dict(err.headers))
        except Exception as err:  # pragma: no cover - a bug in the emulator itself
            response = Response(500, f"consul emulator internal error: {err!r}".encode(), "text/plain; charset=utf-8")
        self._send(response, head=(method == "HEAD"))
        emu._count_bytes(urlsplit(self.path).path, len(response.body))

    def _send(self, response: Response, head: bool = False) -> None:
        emu = self.server.emulator
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Consul-Default-Acl-Policy", "deny" if emu.token else "allow")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)
