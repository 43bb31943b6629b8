"""The etcd source's options, with etcdctl's environment variables as defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from confsync.config import PositiveDuration, RelPath

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


@dataclass(frozen=True)
class TlsOptions:
    ca_file: RelPath | None = None
    cert_file: RelPath | None = None
    key_file: RelPath | None = None


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[str, ...] = ()  # default: $ETCDCTL_ENDPOINTS, else http://127.0.0.1:2379
    prefix: str = "/"
    username: str | None = None  # default: $ETCDCTL_USER ("name" or "name:password")
    password_file: RelPath | None = None  # default: $ETCDCTL_PASSWORD
    tls: TlsOptions | None = None  # default: $ETCDCTL_CACERT, $ETCDCTL_CERT, $ETCDCTL_KEY
    timeout: PositiveDuration = 5.0  # one read or authentication (the watch stream has none)
    secret: bool = False  # values are secrets: files 0600 by default, values kept out of diffs and errors


def endpoint_list(configured: tuple[str, ...], tls: bool) -> list[str]:
    """The configured endpoints, else $ETCDCTL_ENDPOINTS; "host:port" gets a scheme."""
    raw = configured or (os.environ.get("ETCDCTL_ENDPOINTS", "") or DEFAULT_ENDPOINT,)
    scheme = "https://" if tls or os.environ.get("ETCDCTL_CACERT") else "http://"
    found = []
    for item in raw:
        for endpoint in item.split(","):
            endpoint = endpoint.strip().rstrip("/")
            if endpoint:
                found.append(endpoint if "://" in endpoint else scheme + endpoint)
    return found or [DEFAULT_ENDPOINT]


def username_of(configured: str | None) -> tuple[str | None, str | None]:
    """(username, password from the environment): etcdctl's ETCDCTL_USER may be "name:password"."""
    password = os.environ.get("ETCDCTL_PASSWORD")
    if configured:
        return configured, password
    user, sep, inline = os.environ.get("ETCDCTL_USER", "").partition(":")
    return (user or None), (inline if sep else password)
