"""Secrets as fetched: a reply's fields, and its lease or expiry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

MIN_DELAY = 0.2  # s: a TTL of 0 or 1 must not spin


@dataclass(frozen=True)
class Mount:
    path: str  # with its trailing "/"
    kv: int  # 0: not KV; else the KV version


@dataclass(frozen=True)
class Secret:
    fields: dict[str, Any]
    lease_id: str = ""
    ttl: float = 0.0  # seconds left when fetched; 0: not leased (re-read on the static interval)
    renewable: bool = False

    @property
    def leased(self) -> bool:
        return self.ttl > 0


def parse(body: Any, mount: Mount | None) -> Secret:
    if not isinstance(body, dict):  # 204 No Content: a write that returns nothing
        return Secret({})
    data = body.get("data") or {}
    if mount and mount.kv:
        return Secret(dict((data.get("data") or {}) if mount.kv == 2 else data))
    lease_id = body.get("lease_id") or ""
    if lease_id:
        return Secret(dict(data), lease_id, float(body.get("lease_duration") or 0), bool(body.get("renewable")))
    expiration = data.get("expiration")  # a PKI certificate issued without a lease
    if isinstance(expiration, int | float) and not isinstance(expiration, bool) and expiration > 0:
        return Secret(dict(data), ttl=max(expiration - time.time(), MIN_DELAY))
    return Secret(dict(data))


def kv_path(path: str, mount: Mount) -> str:
    """KV v2 keeps data under `<mount>data/`; a path already written that way is kept as is."""
    rest = path[len(mount.path):]
    if mount.kv != 2 or rest.startswith("data/"):
        return path
    return f"{mount.path}data/{rest}"


def lease_text(secret: Secret) -> str:
    if not secret.leased:
        return "not leased"
    kind = "renewable" if secret.renewable else "not renewable"
    return f"lease {secret.ttl:g}s, {kind}" if secret.lease_id else f"expires in {secret.ttl:.0f}s"
