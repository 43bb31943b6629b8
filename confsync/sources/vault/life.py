"""The token's life as Vault reports it, and the files credentials are read from."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confsync.sources.vault.errors import Refused, Unreachable


@dataclass(frozen=True)
class TokenLife:
    ttl: float  # seconds left; 0: never expires (a root token)
    renewable: bool
    full: float  # the TTL a renewal asks for: the one the token was created with
    accessor: str = ""  # names the token without being it: the state file checks an adopted token by it


def life_from_lookup(body: dict[str, Any] | None) -> TokenLife:
    """The token's life from a `token/lookup-self` reply; Unreachable if it is not one."""
    data = part(body, "data")
    try:
        ttl = float(data.get("ttl") or 0)
        return TokenLife(ttl, bool(data.get("renewable")), float(data.get("creation_ttl") or ttl),
                         str(data.get("accessor") or ""))
    except (TypeError, ValueError):
        raise Unreachable("the token lookup reply is not a Vault reply (ttl is not a number)") from None


def life_from_auth(body: dict[str, Any] | None, full: float | None = None) -> TokenLife:
    """From the `auth` part of a login or renewal reply."""
    auth = part(body, "auth")
    try:
        ttl = float(auth.get("lease_duration") or 0)
    except (TypeError, ValueError):
        raise Unreachable("the login reply is not a Vault reply (lease_duration is not a number)") from None
    return TokenLife(ttl, bool(auth.get("renewable")), ttl if full is None else full, str(auth.get("accessor") or ""))


def part(body: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, dict):
        raise Unreachable(f"the reply is not a Vault reply ({key} is not a mapping)")
    return value


def ttl_text(life: TokenLife) -> str:
    if not life.ttl:
        return "none"
    return f"{life.ttl:g}s, " + ("renewable" if life.renewable else "not renewable")


MAX_CREDENTIAL_BYTES = 1 << 20  # a token, JWT or password is a few kB: /dev/zero given by mistake is not


def read_file(path: Path | None, option: str) -> str:
    """A credential file, read at each login in the event loop: only a regular file, so that a FIFO
    (a shell's `<(…)`, a shared volume) cannot block the sidecar for good, even against SIGTERM."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused just below.
        with open(os.open(path or "", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise Refused(f"cannot read {option} {path}: not a regular file")
            data = fh.read(MAX_CREDENTIAL_BYTES + 1)
    except OSError as exc:
        raise Refused(f"cannot read {option} {path}: {exc.strerror}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise Refused(f"cannot read {option} {path}: larger than {MAX_CREDENTIAL_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Refused(f"cannot read {option} {path}: not UTF-8 text") from None
    if not text:
        raise Refused(f"{option} {path} is empty")
    return text
