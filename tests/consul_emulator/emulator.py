"""ConsulEmulator: lifecycle, introspection, routing, ACL checks and blocking queries."""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from .acl import MANAGEMENT, Access, Policy
from .catalog import CatalogEndpoints
from .connect import ConnectEndpoints
from .kv import KVEndpoints
from .nodes import NodeEndpoints
from .server import Server
from .state import State
from .util import (
    DATACENTER,
    DEFAULT_LEADER,
    DEFAULT_WAIT,
    MAX_WAIT,
    RPC_HOLD_TIMEOUT,
    THREAD_PREFIX,
    Abort,
    ApiError,
    Response,
    flag,
    one,
    parse_go_duration,
)

_Route = tuple[str, "re.Pattern[str]", str, bool]  # (methods, pattern, handler name, needs ACL)
# Endpoints answered by the local agent without a raft leader.
_LEADERLESS = frozenset({"_status_leader", "_status_peers", "_catalog_datacenters", "_agent_self",
                         "_agent_service_register", "_agent_service_deregister", "_agent_check"})


def _enterprise_only(query, headers) -> None:
    """Consul CE refuses a namespace or an admin partition, even "default" (agent/http_ce.go,
    `parseEntMeta`, `parseEntMetaPartition`): the emulator is Consul CE."""
    for param, header, what in (("ns", "X-Consul-Namespace", "Namespaces"),
                                ("partition", "X-Consul-Partition", "Partitions")):
        if headers.get(header):
            raise ApiError(400, f'Invalid header: "{header}" - {what} are a Consul Enterprise feature')
        if one(query, param):
            raise ApiError(400, f'Invalid query parameter: "{param}" - {what} are a Consul Enterprise feature')


class ConsulEmulator(KVEndpoints, CatalogEndpoints, NodeEndpoints, ConnectEndpoints):
    """An in-process Consul HTTP API for tests.

    Tunables (plain attributes, may be changed while running):

    ``delay``            seconds every response is delayed by (0 = none)
    ``fail_with``        HTTP status returned for every request (None = behave)
    ``leader``           what /v1/status/leader reports; "" = no cluster leader: reads that are not
                         ``?stale`` are held up to ``rpc_hold_timeout``, then 500; setting it to ""
                         fails the blocking queries in flight that are not ``?stale``
    ``jitter``           add the documented random wait/16 to blocking waits
    ``max_query_time``   the server's cap on ``?wait`` (Consul's ``limits.max_query_time``, 600 s)
    ``default_query_time`` the wait without ``?wait`` (Consul's ``default_query_time``, 300 s)
    ``rpc_hold_timeout`` how long a request waits for a leader (Consul's ``performance.rpc_hold_timeout``, 7 s)
    ``last_contact``     seconds since the answering follower heard from the leader, sent to ``?stale``
                         reads as ``X-Consul-LastContact`` (leader reads send 0)
    ``tokens``           with ACLs on (``token`` given): other tokens' secret → ``acl.Policy``;
                         ``token`` itself is a management token
    ``anonymous``        the anonymous token's ``acl.Policy`` (nothing, by default: default deny)
    ``enable_key_list_policy``  recursive KV reads need key:list on the prefix
    ``coordinates``      node → a position on a line (a stand-in for network coordinates): ``?near``
                         sorts by the distance to it; a node without one sorts last
    ``leaf_ttl``         lifetime of Connect leaf certificates (renewed at 60–90 % of it)
    """

    def __init__(
        self,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        node_name: str = "consul-emulator",
        jitter: bool = True,
        verbose: bool = False,
    ) -> None:
        self.token = token or None
        self.host = host
        self.port = port
        self.delay: float = 0.0
        self.fail_with: int | None = None
        self._leader: str = DEFAULT_LEADER
        self.jitter = jitter
        self.max_query_time = MAX_WAIT
        self.default_query_time = DEFAULT_WAIT
        self.rpc_hold_timeout = RPC_HOLD_TIMEOUT
        self.last_contact = 0.0
        self.tokens: dict[str, Policy] = {}
        self.anonymous = Policy()
        self.enable_key_list_policy = False
        self.coordinates: dict[str, float] = {}  # node → a position on a line: ?near sorts by distance
        self.leaf_ttl = 72 * 3600.0  # Consul's connect leaf_cert_ttl default
        self._connect: Any = None  # the Connect CA, made at the first Connect request
        self._request = threading.local()  # the current request's Access (one thread per connection)
        self.verbose = verbose
        self.request_count: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()  # response body bytes per URL path
        self._count_lock = threading.Lock()
        self._state = State(node_name, host if host not in ("", "0.0.0.0", "::") else "127.0.0.1")
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- leadership --------------------------------------------------------- #

    @property
    def leader(self) -> str:
        return self._leader

    @leader.setter
    def leader(self, value: str) -> None:
        with self._state.cond:
            self._leader = value
            self._state.cond.notify_all()  # held requests and blocking queries look again

    # -- lifecycle ---------------------------------------------------------- #

    @property
    def addr(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> ConsulEmulator:
        """Start serving; after a ``stop()`` it binds the same port again and keeps the state."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("consul emulator already running")
            server = Server((self.host, self.port), self)
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{THREAD_PREFIX}-{self.port}-accept",
                daemon=True,
            )
            thread.start()
            self._server, self._serve_thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: in-flight long polls are dropped (the client sees the
        connection close), every thread started by the emulator is joined.
        The state survives; ``start()`` serves it again on the same port."""
        with self._lifecycle:
            server, thread = self._server, self._serve_thread
            if server is None:
                return
            server.stopping.set()
            with self._state.cond:
                self._state.cond.notify_all()
            server.shutdown()
            handler_threads = server.close_all()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)
            for t in handler_threads:
                t.join(timeout=5)
            self._server = self._serve_thread = None

    def reset(self) -> None:
        """Wipe all state, as if the Consul cluster lost its data.

        The raft index starts over, so indexes seen by clients go *backwards*
        (the case the blocking-query docs tell clients to handle)."""
        with self._state.cond:
            self._state.wipe()
            self._state.cond.notify_all()

    def reap_tombstones(self) -> None:
        """Forget KV delete tombstones (Consul reaps them periodically); a
        prefix whose highest-index key was deleted may then report a lower index."""
        with self._state.cond:
            self._state.kv_tombstones.clear()
            self._state.cond.notify_all()

    def __enter__(self) -> ConsulEmulator:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection ------------------------------------------------------ #

    @property
    def index(self) -> int:
        """The current raft index (what the last write was applied at)."""
        with self._state.cond:
            return self._state.index

    @property
    def blocked_queries(self) -> int:
        """Number of blocking queries currently parked waiting for a change."""
        with self._state.cond:
            return self._state.blocked

    def wait_for_blocked(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait (without polling) until at least ``count`` blocking queries are parked."""
        with self._state.cond:
            return self._state.cond.wait_for(lambda: self._state.blocked >= count, timeout)

    @property
    def requests_total(self) -> int:
        with self._count_lock:
            return sum(self.request_count.values())

    def requests_to(self, prefix: str) -> int:
        """Requests received for paths starting with ``prefix`` (e.g. "/v1/kv/")."""
        with self._count_lock:
            return sum(n for p, n in self.request_count.items() if p.startswith(prefix))

    def reset_counters(self) -> None:
        with self._count_lock:
            self.request_count.clear()
            self.bytes_sent.clear()

    def _count(self, path: str) -> None:
        with self._count_lock:
            self.request_count[path] += 1

    def _count_bytes(self, path: str, sent: int) -> None:
        with self._count_lock:
            self.bytes_sent[path] += sent

    # -- request handling --------------------------------------------------- #

    _ROUTES: list[_Route] = [
        ("GET PUT DELETE", re.compile(r"/v1/kv/(?P<key>.*)"), "_kv", True),
        # Consul takes the whole rest of the path as the name (agent/health_endpoint.go): "a/b" is a name.
        ("GET", re.compile(r"/v1/health/service/(?P<name>.+)"), "_health_service", True),
        ("GET", re.compile(r"/v1/health/connect/(?P<name>.+)"), "_health_connect", True),
        ("GET", re.compile(r"/v1/catalog/services"), "_catalog_services", True),
        ("GET", re.compile(r"/v1/catalog/service/(?P<name>[^/]+)"), "_catalog_service", True),
        ("GET", re.compile(r"/v1/catalog/datacenters"), "_catalog_datacenters", False),
        ("GET", re.compile(r"/v1/catalog/nodes"), "_catalog_nodes", True),
        ("GET", re.compile(r"/v1/catalog/node/(?P<node>.+)"), "_catalog_node", True),
        ("GET", re.compile(r"/v1/agent/connect/ca/roots"), "_connect_roots", True),
        ("GET", re.compile(r"/v1/agent/connect/ca/leaf/(?P<service>.+)"), "_connect_leaf", True),
        ("PUT", re.compile(r"/v1/catalog/register"), "_catalog_register", True),
        ("PUT", re.compile(r"/v1/catalog/deregister"), "_catalog_deregister", True),
        ("PUT", re.compile(r"/v1/agent/service/register"), "_agent_service_register", True),
        ("PUT", re.compile(r"/v1/agent/service/deregister/(?P<sid>[^/]+)"), "_agent_service_deregister", True),
        ("PUT", re.compile(r"/v1/agent/check/(?P<op>pass|warn|fail|update)/(?P<cid>[^/]+)"), "_agent_check", True),
        ("GET", re.compile(r"/v1/agent/self"), "_agent_self", True),
        ("GET", re.compile(r"/v1/status/leader"), "_status_leader", False),
        ("GET", re.compile(r"/v1/status/peers"), "_status_peers", False),
    ]

    def _handle(self, server: Server, method: str, path: str, query, headers, body: bytes) -> Response:
        for methods, pattern, handler_name, needs_acl in self._ROUTES:
            m = pattern.fullmatch(path)
            if not m:
                continue
            allowed = methods.split()
            if method == "HEAD" and "GET" in allowed:
                method = "GET"
            if method not in allowed:
                raise ApiError(405, f"method {method} not allowed", {"Allow": ", ".join(allowed)})
            _enterprise_only(query, headers)
            dc = one(query, "dc")
            if dc and dc != DATACENTER:
                raise ApiError(500, "No path to datacenter")
            self._request.access = self._check_acl(query, headers) if needs_acl else Access()
            if method == "GET" and flag(query, "stale") and flag(query, "consistent"):
                raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
            if handler_name not in _LEADERLESS and not (method == "GET" and flag(query, "stale")):
                self._hold_for_leader(server)
            kwargs = {k: unquote(v) for k, v in m.groupdict().items()}
            return getattr(self, handler_name)(server, method, query, body, **kwargs)
        raise ApiError(404, "404 page not found")

    def _hold_for_leader(self, server: Server) -> None:
        """Without a leader, a request that needs one waits up to rpc_hold_timeout for an election,
        then fails (agent/consul/rpc.go, `forwardRequestToLeader`; structs.ErrNoLeader)."""
        state = self._state
        with state.cond:
            if not state.cond.wait_for(lambda: self._leader or server.stopping.is_set(), self.rpc_hold_timeout):
                raise ApiError(500, "No cluster leader")
            if server.stopping.is_set():
                raise Abort

    def _check_acl(self, query, headers) -> Access:
        if not self.token:
            return Access()  # ACLs disabled: any token (or none) is accepted
        presented = one(query, "token") or headers.get("X-Consul-Token") or ""
        if not presented:
            auth = headers.get("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                presented = auth[7:].strip()
        list_policy = self.enable_key_list_policy
        if not presented:
            return Access(self.anonymous, "", list_policy)  # the anonymous token
        if presented == self.token:
            return Access(MANAGEMENT, presented, list_policy, "management")
        if presented in self.tokens:
            return Access(self.tokens[presented], presented, list_policy, f"accessor-{len(presented)}")
        raise ApiError(403, "ACL not found")

    def _access(self) -> Access:
        """The ACL access of the request this thread is answering."""
        access: Access = self._request.access
        return access

    # -- blocking queries --------------------------------------------------- #

    def _blocking(
        self,
        server: Server,
        query,
        current_index: Callable[[], int],
        build: Callable[[int], Response],
        wake: Callable[[], float] | None = None,
    ) -> Response:
        """Run a read as a blocking query (https://developer.hashicorp.com/consul/api-docs/features/blocking).

        ``current_index()`` is the X-Consul-Index the resource would be served
        with right now; the query returns as soon as it exceeds ``?index``, or
        after ``?wait`` (+ up to wait/16 jitter).  ``build(index)`` renders the
        reply.  Both are called with the state lock held.  ``wake()``, if given, is a
        monotonic time at which the index may move without a write (a leaf
        certificate's renewal): the query looks again then.
        """
        raw_index = one(query, "index")
        min_index = 0
        if raw_index not in (None, ""):
            try:
                min_index = int(raw_index)
                if min_index < 0:
                    raise ValueError
            except ValueError:
                raise ApiError(400, "Invalid index") from None
        wait = 0.0
        raw_wait = one(query, "wait")
        if raw_wait not in (None, ""):
            try:
                wait = parse_go_duration(raw_wait)
            except ValueError:
                raise ApiError(400, "Invalid wait time") from None
        # The server caps the wait at its max_query_time and uses default_query_time when none is
        # given (agent/consul/rpc.go, `RPCQueryTimeout`); the reply does not say it was capped.
        wait = self.default_query_time if wait <= 0 else min(wait, self.max_query_time)
        stale = flag(query, "stale")
        state = self._state
        with state.cond:
            if min_index > 0:
                if self.jitter:
                    wait += random.uniform(0, wait / 16)
                deadline = time.monotonic() + wait
                state.blocked += 1
                state.cond.notify_all()  # for wait_for_blocked()
                try:
                    while current_index() <= min_index:
                        if server.stopping.is_set():
                            raise Abort
                        if not self._leader and not stale:
                            # The leader serving this query went away (its RPC connection broke).
                            raise ApiError(500, "rpc error making call: EOF")
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        state.cond.wait(min(remaining, max(0.01, wake() - time.monotonic())) if wake else remaining)
                finally:
                    state.blocked -= 1
            if server.stopping.is_set():
                raise Abort
            response = build(current_index())
        # agent/consul/rpc.go, `SetQueryMeta`: the leader reports LastContact 0; a follower answering
        # a ?stale read reports how long ago it heard from the leader.
        response.headers.setdefault("X-Consul-KnownLeader", "true" if self._leader else "false")
        response.headers.setdefault("X-Consul-LastContact", str(round(self.last_contact * 1000) if stale else 0))
        response.headers.setdefault(
            "X-Consul-Effective-Consistency",
            "stale" if flag(query, "stale") else "consistent" if flag(query, "consistent") else "leader",
        )
        return response

    @staticmethod
    def _json(payload: Any, query, status: int = 200, index: int | None = None) -> Response:
        if "pretty" in query:
            text = json.dumps(payload, indent=4)
        else:
            text = json.dumps(payload, separators=(",", ":"))
        headers = {"X-Consul-Index": str(index)} if index is not None else {}
        return Response(status, text.encode(), "application/json", headers)


@contextlib.contextmanager
def consul_emulator(token: str | None = None, **kwargs: Any) -> Iterator[ConsulEmulator]:
    """Run a ``ConsulEmulator`` for the duration of the ``with`` block."""
    emu = ConsulEmulator(token=token, **kwargs)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
