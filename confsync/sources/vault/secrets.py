"""Secrets as fetched: a reply's fields, and its lease or expiry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confsync.sources.vault.errors import Refused

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
    # Of a secret adopted from the state file (else both are its ttl): how long its current term
    # lasts (the refetch is planned from it), and the lease first granted (what a renewal asks for).
    term: float = 0.0
    duration: float = 0.0

    @property
    def leased(self) -> bool:
        return self.ttl > 0


def parse(body: dict[str, Any] | None, mount: Mount | None) -> Secret:
    """A reply as a secret; Refused when it is not shaped like one (issue 18: never an empty
    secret in place of a reply that cannot be understood)."""
    if body is None:  # 204 No Content: a write that returns nothing
        return Secret({})
    try:
        return _parse(body, mount)
    except (TypeError, ValueError) as exc:
        raise Refused(f"the reply is not a secret ({exc})") from None


def _parse(body: dict[str, Any], mount: Mount | None) -> Secret:
    data = _mapping(body.get("data"), "data")
    if mount and mount.kv:
        return Secret(_mapping(data.get("data"), "data.data") if mount.kv == 2 else data)
    lease_id = body.get("lease_id") or ""
    if lease_id:
        return Secret(dict(data), lease_id, float(body.get("lease_duration") or 0), bool(body.get("renewable")))
    expiration = data.get("expiration")  # a PKI certificate issued without a lease
    if isinstance(expiration, int | float) and not isinstance(expiration, bool) and expiration > 0:
        return Secret(dict(data), ttl=max(expiration - time.time(), MIN_DELAY))
    return Secret(dict(data))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{where} is a {type(value).__name__}, not a mapping")
    return dict(value)


def listing(body: dict[str, Any] | None) -> Secret:
    """A LIST reply as its sorted key names (in `fields["keys"]`); Refused when it holds none."""
    data = body.get("data") if isinstance(body, dict) else None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Refused("the reply is not a list of keys")
    return Secret({"keys": sorted(keys)})


def kv_path(path: str, mount: Mount, kind: str = "secret") -> str:
    """KV v2 keeps data under `<mount>data/`, and lists key names under `<mount>metadata/`; a path
    already written that way is kept as is."""
    rest = path[len(mount.path):]
    where = "metadata/" if kind == "list" else "data/"
    if mount.kv != 2 or rest.startswith(where):
        return path
    return f"{mount.path}{where}{rest}"


def lease_text(secret: Secret) -> str:
    if not secret.leased:
        return "not leased"
    kind = "renewable" if secret.renewable else "not renewable"
    return f"lease {secret.ttl:g}s, {kind}" if secret.lease_id else f"expires in {secret.ttl:.0f}s"
