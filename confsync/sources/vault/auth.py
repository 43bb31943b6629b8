"""The token's life as Vault reports it, and the files credentials are read from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confsync.sources.vault.errors import Refused


@dataclass(frozen=True)
class TokenLife:
    ttl: float  # seconds left; 0: never expires (a root token)
    renewable: bool
    full: float  # the TTL a renewal asks for: the one the token was created with


def life_from_lookup(body: Any) -> TokenLife:
    data = body.get("data") or {}
    ttl = float(data.get("ttl") or 0)
    return TokenLife(ttl, bool(data.get("renewable")), float(data.get("creation_ttl") or ttl))


def life_from_auth(auth: Any, full: float | None = None) -> TokenLife:
    ttl = float(auth.get("lease_duration") or 0)
    return TokenLife(ttl, bool(auth.get("renewable")), ttl if full is None else full)


def ttl_text(life: TokenLife) -> str:
    if not life.ttl:
        return "none"
    return f"{life.ttl:g}s, " + ("renewable" if life.renewable else "not renewable")


def read_file(path: Path | None, option: str) -> str:
    try:
        text = Path(path or "").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise Refused(f"cannot read {option} {path}: {exc.strerror}") from None
    if not text:
        raise Refused(f"{option} {path} is empty")
    return text
