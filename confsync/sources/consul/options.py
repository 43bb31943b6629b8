"""The consul source's options, and where each default comes from (Consul's own environment
variables, as its CLI reads them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from confsync.config import Duration, PositiveDuration, RelPath

DEFAULT_ADDRESS = "127.0.0.1:8500"


@dataclass(frozen=True)
class ConsulTLS:
    ca_file: RelPath | None = None  # default: CONSUL_CACERT, else the system's CAs
    cert_file: RelPath | None = None  # default: CONSUL_CLIENT_CERT
    key_file: RelPath | None = None  # default: CONSUL_CLIENT_KEY
    verify: bool | None = None  # default: CONSUL_HTTP_SSL_VERIFY, else true

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise ValueError("tls.key_file needs tls.cert_file")


@dataclass(frozen=True)
class ConsulOptions:
    address: str | None = None  # default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500
    token_file: RelPath | None = None  # default: CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN
    datacenter: str | None = None
    # Consul Enterprise: the namespace and admin partition of every read (KV and catalog) that does
    # not name its own (consul-template's `?ns=` / `?partition=`, CT#1303). Consul CE refuses them.
    namespace: str | None = None
    partition: str | None = None
    consistency: Literal["default", "stale", "consistent"] = "default"
    tls: ConsulTLS = field(default_factory=ConsulTLS)
    wait: Duration = 60.0  # how long Consul holds each blocking query
    timeout: PositiveDuration = 10.0  # to connect, or for an answer beyond the blocking wait
    # With consistency: stale, an answer from a server that last heard from the leader longer ago than
    # this (X-Consul-LastContact), or knows no leader, is dropped and asked of the leader instead.
    max_stale: Duration = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.wait <= 600:
            raise ValueError(f"wait must be more than 0 and at most 10m (Consul's limit), got {self.wait:g}s")
        if self.max_stale < 0:
            raise ValueError(f"max_stale must be 0 or more, got {self.max_stale:g}s")
        if self.address is not None:
            parse_address(self.address)


def parse_address(address: str) -> tuple[str, str, int]:
    """`host:port` or `scheme://host:port` → (scheme, host, port), as Consul's own CLI reads it."""
    if "://" not in address:
        secure = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        address = ("https://" if secure else "http://") + address
    url = urlsplit(address)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"address {address!r}: only http:// and https:// are supported")
    try:
        port = url.port or (8501 if url.scheme == "https" else 8500)
    except ValueError:
        raise ValueError(f"address {address!r}: invalid port") from None
    if not url.hostname or url.path.strip("/"):
        raise ValueError(f"address {address!r}: expected host:port or scheme://host:port")
    return url.scheme, url.hostname, port


def tls_args(tls: ConsulTLS) -> tuple[bool | str, str | tuple[str, str] | None]:
    """The TLS options (or Consul's own environment variables) → requests' `verify` and `cert`."""
    verify: bool | str = tls.verify if tls.verify is not None else \
        os.environ.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false")
    ca = tls.ca_file or env_path("CONSUL_CACERT")
    if verify and ca:
        verify = str(ca)
    cert_file = tls.cert_file or env_path("CONSUL_CLIENT_CERT")
    key_file = tls.key_file or (env_path("CONSUL_CLIENT_KEY") if not tls.cert_file else None)
    if cert_file and key_file:
        return verify, (str(cert_file), str(key_file))
    return verify, str(cert_file) if cert_file else None


def env_path(name: str) -> Any:
    from pathlib import Path

    value = os.environ.get(name)
    return Path(value) if value else None
