"""PostgreSQL from Debian's package, for the Vault database engine."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    LOOPBACK,
    ServerHandle,
    ServerNotInstalled,
    ServerStartError,
    _env,
    _launch,
    _Process,
    _tempdir,
    free_port,
)


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
