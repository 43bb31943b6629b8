"""Real backend servers for the test suite, on 127.0.0.1 only.

Each context manager starts one real server process on free loopback ports with a
throwaway temp dir, waits until the server's own health check passes (polling, never
a fixed sleep), yields a small frozen handle, and on exit stops the process and
removes the dir:

    with etcd_server() as etcd:
        httpx.post(f"{etcd.url}/v3/kv/put", json={...})
        etcd.kill()      # crash it (SIGKILL)
        etcd.start()     # same ports, same data dir; returns once healthy again

This module needs only the standard library and the server binaries that
scripts/test-deps.sh installs; it does not import confsync.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

LOOPBACK = "127.0.0.1"
# Generous: a JVM or an initdb on a loaded 2-core CI box can be slow. Typical start-up
# is well under a second to a few seconds; the deadline only bounds a broken start.
STARTUP_TIMEOUT = float(os.environ.get("CONFSYNC_TEST_SERVER_TIMEOUT", "60"))
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

# Direct opener: an http_proxy in the environment must never see loopback probes.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """A server did not become ready; the message ends with its log tail."""


class ServerNotInstalled(ServerStartError):
    """A server binary is missing; scripts/test-deps.sh installs it."""


class _PortInUse(ServerStartError):
    """Someone took one of our ports between free_ports() and the server's bind."""


# --------------------------------------------------------------------------- ports


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports.

    All n sockets stay bound until every port is picked, so the kernel cannot hand
    out the same port twice. Another process can still grab a port before the server
    binds it; the context managers see that in the log and retry on fresh ports.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    """One free loopback port (see free_ports for the race this cannot rule out)."""
    return free_ports(1)[0]


def _free_port_pair() -> int:
    """A free port P with P+1 free too: `bao server -dev` puts its cluster listener on P+1."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind((LOOPBACK, 0))
            port = a.getsockname()[1]
            try:
                b.bind((LOOPBACK, port + 1))
            except (OSError, OverflowError):
                continue
            return port
    raise RuntimeError("no pair of adjacent free ports on 127.0.0.1")


# ------------------------------------------------------------------------- process


class _Process:
    """One server process: start it, poll its readiness, log to a file, stop it.

    start() may be called again after stop() or kill(): it runs the same argv, so the
    server comes back on the same ports with the same data dir.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        ready: Callable[[], bool],
        log_path: Path,
        env: dict[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name, self.argv, self.ready, self.log_path = name, argv, ready, log_path
        self.env, self.user, self.stop_signal = env, user, stop_signal
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this run's output starts in the (appended) log

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self, wait: bool = True) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        as_user = {}
        if self.user is not None:  # only when root: servers like postgres refuse root
            as_user = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log_path.parent,
                # Own process group: kill() can take the server's children with it.
                start_new_session=True,
                **as_user,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        _wait_ready([self], timeout)

    def _probe(self) -> bool:
        try:
            return bool(self.ready())
        except (OSError, ValueError, http.client.HTTPException, subprocess.SubprocessError):
            return False  # not listening yet, half-started, or answering "not yet"

    def _fail(self, why: str) -> None:
        self.kill()
        tail = self.log_tail()
        error = _PortInUse if "address already in use" in tail.lower() else ServerStartError
        raise error(
            f"{self.name} {why}: {' '.join(self.argv)}\n"
            f"--- last lines of {self.log_path} ---\n{tail}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote (earlier runs' output is skipped)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Clean shutdown: stop_signal, then SIGKILL if it is still up after timeout."""
        p = self._popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        p = self._popen
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _wait_ready(procs: list[_Process], timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll until every process is ready; fail as soon as any one of them exits.

    Waiting on all at once matters for a cluster: if one member dies (say it lost
    a port race), the others would otherwise wait out the deadline for a quorum.
    """
    assert all(p._popen is not None for p in procs), "start() first"
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        for p in pending:
            code = p._popen.poll()  # type: ignore[union-attr]
            if code is not None:
                p._fail(f"exited with code {code} before it was ready")
        pending = [p for p in pending if not p._probe()]
        if pending and time.monotonic() > deadline:
            pending[0]._fail(f"not ready after {timeout:.0f}s")
        if pending:
            time.sleep(POLL_INTERVAL)


@dataclass(frozen=True, kw_only=True)
class ServerHandle:
    """What every server yields: control of its process (same ports, same dir)."""

    _proc: _Process = field(repr=False, compare=False)

    def kill(self) -> None:
        """SIGKILL the server (and its children); returns once it is dead."""
        self._proc.kill()

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM/SIGINT, SIGKILL after a timeout)."""
        self._proc.stop()

    def start(self, wait: bool = True) -> None:
        """Start it again with the same config; by default wait until it is ready."""
        self._proc.start(wait)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self._proc.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines)


H = TypeVar("H", bound=ServerHandle)


@contextlib.contextmanager
def _tempdir(kind: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"confsync-{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _launch(make: Callable[[], H], attempts: int = 3) -> H:
    """Build a handle on fresh ports and start it; lost port races get new ports."""
    for attempt in range(attempts):
        handle = make()
        try:
            handle.start()
            return handle
        except _PortInUse:
            if attempt == attempts - 1:
                raise
        except BaseException:  # e.g. Ctrl-C while waiting: leave no server behind
            handle.kill()
            raise
    raise AssertionError("unreachable")


def _env(drop_prefixes: tuple[str, ...], **extra: str) -> dict[str, str]:
    """os.environ minus the server's own config variables, which would override ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env.update(extra)
    return env


def _which(name: str, *candidates: str) -> str:
    for path in (*candidates, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    raise ServerNotInstalled(f"{name} not found; run scripts/test-deps.sh")


def _http_ok(url: str, check: Callable[[bytes], bool] = lambda body: True) -> bool:
    with _http.open(url, timeout=2) as resp:  # raises HTTPError on non-2xx
        return resp.status == 200 and check(resp.read())


# ---------------------------------------------------------------------------- etcd


@dataclass(frozen=True, kw_only=True)
class EtcdServer(ServerHandle):
    url: str  # http://127.0.0.1:P, the client URL
    name: str
    data_dir: Path


def _etcd_member(
    name: str, data_dir: Path, client_port: int, peer_port: int, cluster: str, token: str
) -> EtcdServer:
    url, peer = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
    argv = [
        _which("etcd"),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        # "new" is ignored once the data dir exists, so restarts rejoin as before.
        "--initial-cluster-state", "new",
        # Unique per cluster: members of two test clusters can never join each other.
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]
    # /health is {"health":"true"} once the member has a leader and no alarms.
    ready = lambda: _http_ok(f"{url}/health", lambda b: json.loads(b).get("health") == "true")  # noqa: E731
    proc = _Process(
        f"etcd {name}", argv, ready=ready,
        log_path=data_dir.parent / f"{name}.log", env=_env(("ETCD_",)),
    )
    return EtcdServer(_proc=proc, url=url, name=name, data_dir=data_dir)


@contextlib.contextmanager
def etcd_server() -> Iterator[EtcdServer]:
    """A single-member etcd on 127.0.0.1; .url is its client URL.

    kill()/stop() then start() bring it back on the same ports with the same data.
    """
    with _tempdir("etcd") as tmp:
        token = secrets.token_hex(8)

        def make() -> EtcdServer:
            client, peer = free_ports(2)
            shutil.rmtree(tmp / "t.etcd", ignore_errors=True)  # a failed try's partial state
            cluster = f"t=http://{LOOPBACK}:{peer}"
            return _etcd_member("t", tmp / "t.etcd", client, peer, cluster, token)

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()


@dataclass(frozen=True)
class EtcdCluster:
    members: tuple[EtcdServer, ...]  # each can be killed/stopped/started on its own

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start_all(self) -> None:
        """Start every stopped member, then wait: one member alone has no quorum."""
        for m in self.members:
            if not m.running:
                m.start(wait=False)
        _wait_ready([m._proc for m in self.members])

    def stop_all(self) -> None:
        for m in self.members:
            m.stop()


@contextlib.contextmanager
def etcd_cluster(n: int = 3) -> Iterator[EtcdCluster]:
    """An n-member etcd cluster on 127.0.0.1, ready when every member is healthy."""
    with _tempdir("etcd-cluster") as tmp:
        token = secrets.token_hex(8)
        for attempt in range(3):
            ports = free_ports(2 * n)
            names = [f"m{i}" for i in range(n)]
            peers = ports[n:]
            spec = ",".join(f"{nm}=http://{LOOPBACK}:{p}" for nm, p in zip(names, peers))
            for nm in names:
                shutil.rmtree(tmp / f"{nm}.etcd", ignore_errors=True)
            cluster = EtcdCluster(tuple(
                _etcd_member(nm, tmp / f"{nm}.etcd", c, p, spec, token)
                for nm, c, p in zip(names, ports[:n], peers)
            ))
            try:
                cluster.start_all()
                break
            except _PortInUse:
                cluster.stop_all()
                if attempt == 2:
                    raise
            except BaseException:
                cluster.stop_all()
                raise
        try:
            yield cluster
        finally:
            cluster.stop_all()


# ----------------------------------------------------------------------- zookeeper

# zookeeper.jar's manifest Class-Path names its Debian dependencies (jute, netty,
# metrics, slf4j-api, ...); only an SLF4J binding is missing, and slf4j-simple sends
# the server log to stderr, i.e. to our log file.
ZOOKEEPER_CLASSPATH = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
# Small heap, serial GC and C1 only: a test server should start fast and stay small.
ZOOKEEPER_JVM_OPTS = [
    "-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Xshare:auto", "-Djava.net.preferIPv4Stack=true",
]


@dataclass(frozen=True, kw_only=True)
class ZooKeeperServer(ServerHandle):
    hosts: str  # "127.0.0.1:P", as kazoo wants it
    port: int
    data_dir: Path


def _zk_ruok(port: int) -> bool:
    # "imok" only once the server is serving; before that it answers something else.
    with socket.create_connection((LOOPBACK, port), timeout=1) as s:
        s.sendall(b"ruok")
        reply = b""
        while chunk := s.recv(64):
            reply += chunk
    return reply == b"imok"


@contextlib.contextmanager
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper on 127.0.0.1; .hosts is "127.0.0.1:P".

    kill()/stop() then start() bring it back on the same port with the same data.
    """
    for jar in ZOOKEEPER_CLASSPATH:
        if not os.path.exists(jar):
            raise ServerNotInstalled(f"{jar} not found; run scripts/test-deps.sh")
    java = _which("java")
    with _tempdir("zookeeper") as tmp:
        data = tmp / "data"
        data.mkdir()

        def make() -> ZooKeeperServer:
            port = free_port()
            cfg = tmp / "zoo.cfg"
            cfg.write_text(
                # Sessions may last 2 ticks to maxSessionTimeout: allow short ones
                # for expiry tests, and long ones as in production.
                "tickTime=500\n"
                "maxSessionTimeout=60000\n"
                f"dataDir={data}\n"
                f"clientPort={port}\n"
                f"clientPortAddress={LOOPBACK}\n"
                "admin.enableServer=false\n"  # else Jetty grabs port 8080
                "4lw.commands.whitelist=*\n"
                "forceSync=no\n"  # throwaway data: skip fsync for speed
            )
            argv = [java, *ZOOKEEPER_JVM_OPTS, "-cp", ":".join(ZOOKEEPER_CLASSPATH),
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)]
            proc = _Process(
                "zookeeper", argv, ready=lambda: _zk_ruok(port), log_path=tmp / "zookeeper.log",
                env=_env(("ZOO", "JVMFLAGS", "SERVER_JVMFLAGS")),
            )
            return ZooKeeperServer(_proc=proc, hosts=f"{LOOPBACK}:{port}", port=port, data_dir=data)

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()


# ------------------------------------------------------------------------- openbao


@dataclass(frozen=True, kw_only=True)
class OpenBaoServer(ServerHandle):
    addr: str  # http://127.0.0.1:P
    root_token: str
    tls_addr: str = ""  # https://127.0.0.1:Q, when started with a TLS certificate


def _bao_ready(addr: str, token: str) -> bool:
    # 200 = initialized, unsealed and active (429/5xx otherwise)...
    if not _http_ok(f"{addr}/v1/sys/health"):
        return False
    # ...but dev mode mounts KV v2 at secret/ only after unsealing, and KV v2 turns
    # requests away while it sets up its storage: ready means a read gets a plain 404.
    probe = urllib.request.Request(
        f"{addr}/v1/secret/data/confsync-readiness-probe", headers={"X-Vault-Token": token}
    )
    try:
        _http.open(probe, timeout=2).close()
    except urllib.error.HTTPError as e:
        return e.code == 404
    return True


@contextlib.contextmanager
def openbao_server(tls: tuple[Path, Path] | None = None) -> Iterator[OpenBaoServer]:
    """An OpenBao dev server (in-memory, unsealed, no TLS) on 127.0.0.1; with `tls` (certificate
    and key files), a second listener with TLS that asks clients for a certificate (`cert` auth).

    Ready means healthy and the dev KV v2 engine at secret/ answers reads.

    Dev mode keeps everything in memory: after kill()/stop() and start() it is a
    fresh server on the same address with the same root token, and every secret,
    mount and lease written before is gone. It also listens on port P+1 (cluster).
    """
    bao = _which("bao", os.path.join(sysconfig.get_path("scripts"), "bao"))
    with _tempdir("openbao") as tmp:
        token = f"root-{secrets.token_hex(8)}"
        # HOME in the temp dir: bao must never read or write the real ~/.vault-token.
        env = _env(("VAULT_", "BAO_"), HOME=str(tmp))

        def make() -> OpenBaoServer:
            port = _free_port_pair()
            addr = f"http://{LOOPBACK}:{port}"
            argv = [bao, "server", "-dev", f"-dev-listen-address={LOOPBACK}:{port}",
                    f"-dev-root-token-id={token}", "-dev-no-store-token"]
            tls_addr = ""
            if tls:  # dev mode merges this listener with its own; Q+1 is its cluster port
                tls_port = _free_port_pair()
                tls_addr = f"https://{LOOPBACK}:{tls_port}"
                (tmp / "tls.hcl").write_text(
                    f'listener "tcp" {{\n  address = "{LOOPBACK}:{tls_port}"\n'
                    f'  tls_cert_file = "{tls[0]}"\n  tls_key_file = "{tls[1]}"\n}}\n')
                argv.append(f"-config={tmp / 'tls.hcl'}")
            proc = _Process("openbao", argv, ready=lambda: _bao_ready(addr, token),
                            log_path=tmp / "openbao.log", env=env)
            return OpenBaoServer(_proc=proc, addr=addr, root_token=token, tls_addr=tls_addr)

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()


# ------------------------------------------------------------------------ postgres


@dataclass(frozen=True, kw_only=True)
class PostgresServer(ServerHandle):
    dsn: str  # postgresql://user:password@127.0.0.1:P/postgres
    host: str
    port: int
    user: str
    password: str
    socket_dir: Path


def _postgres_bindir() -> Path:
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if not found:
        raise ServerNotInstalled("postgres not found; run scripts/test-deps.sh")
    return Path(max(found, key=lambda p: int(Path(p).parents[1].name))).parent  # newest major


@contextlib.contextmanager
def postgres_server(user: str = "postgres") -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a password superuser.

    TCP logins need the password (scram-sha-256), so .dsn works for clients such as
    Vault's database secrets engine; the unix socket lives in the temp dir only.
    """
    bindir = _postgres_bindir()
    # postgres refuses to run as root: when we are root, run it as the OS user
    # "postgres" that the Debian package creates, and give it the temp dir.
    os_user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    with _tempdir("postgres") as tmp:
        password = secrets.token_urlsafe(16)  # URL-safe: goes into the DSN verbatim
        (tmp / "pwfile").write_text(password + "\n")
        if os_user is not None:
            os.chown(tmp, os_user.pw_uid, os_user.pw_gid)
            os.chown(tmp / "pwfile", os_user.pw_uid, os_user.pw_gid)
        data = tmp / "data"
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={tmp / 'pwfile'}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
             "--no-sync", "--no-instructions"],
            cwd=tmp, capture_output=True, text=True,
            **(dict(user=os_user.pw_uid, group=os_user.pw_gid, extra_groups=[]) if os_user else {}),
        )
        if initdb.returncode != 0:
            raise ServerStartError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")

        def make() -> PostgresServer:
            port = free_port()
            argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                    "-c", f"listen_addresses={LOOPBACK}",
                    "-c", f"unix_socket_directories={tmp}",
                    # Throwaway data: durability only costs time here.
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off"]
            isready = [str(bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port), "-t", "1"]
            proc = _Process(
                "postgres", argv, log_path=tmp / "postgres.log", env=_env(("PG",)), user=os_user,
                ready=lambda: subprocess.run(isready, timeout=5).returncode == 0,
                stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM waits for clients
            )
            return PostgresServer(
                _proc=proc, dsn=f"postgresql://{user}:{password}@{LOOPBACK}:{port}/postgres",
                host=LOOPBACK, port=port, user=user, password=password, socket_dir=tmp,
            )

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()
