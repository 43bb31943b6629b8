"""The vault source's persisted state (`state_file:`): the token and the secrets it holds, so that
an init container's credentials pass to the sidecar, and a certificate outlives a restart.

One JSON document, 0600, replaced atomically (confsync/write.py). With a state key it is sealed
with AES-256-GCM (cryptography), so a file that was altered is told from one that was not. A file
that cannot be used (unreadable, not ours, not a state file, written for another source, server
or login, sealed with another key, or altered) is a warning naming it and why, never its contents,
and the source starts fresh: the next save replaces it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import stat
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from confsync.sources.vault.errors import Refused
from confsync.sources.vault.life import read_file

log = logging.getLogger(__name__)

FORMAT = "confsync-vault-state"
VERSION = 1
SEALED = b"confsync-vault-state aes-256-gcm 1\n"  # the first line of a sealed file; also its AAD
MAX_BYTES = 4 << 20  # a state file is a few kB per secret: more is not ours
MIN_KEY = 32  # bytes of key text, e.g. `openssl rand -base64 32`

Request = tuple[str, tuple[tuple[str, Any], ...]]  # a Dep's path and params


@dataclass
class Held:
    """A secret as last fetched or renewed."""

    fields: dict[str, Any]
    expires_at: float  # wall-clock time
    term: float  # seconds the current term lasts: the lease (or certificate) refetch is planned from it
    lease_id: str = ""  # "": a certificate without a lease (only an expiration)
    renewable: bool = False
    duration: float = 0.0  # the lease first granted: what a renewal asks for

    def left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


@dataclass
class State:
    token: str = ""  # "" when the token is not ours to keep (VAULT_TOKEN, token_file)
    accessor: str = ""  # the token's accessor: the leases below were taken with it
    secrets: dict[Request, Held] = field(default_factory=dict)


class Unusable(Exception):
    """Why a state file cannot be used; safe to log (never holds its contents)."""


def identity(source: str, address: str, namespace: str, auth: Any) -> dict[str, str]:
    """What a state file must have been written for: another source, server, namespace or login
    would adopt a token or leases that are not its own."""
    described = asdict(auth) if is_dataclass(auth) and not isinstance(auth, type) else auth
    text = json.dumps(described, sort_keys=True, default=str)
    return {"source": source, "address": address, "namespace": namespace,
            "auth": hashlib.sha256(text.encode()).hexdigest()}


def read_key(key_file: Path | None, key_env: str | None) -> bytes | None:
    """The state key, from the file or the environment variable; ValueError naming which when it
    cannot be had (a config problem: the source does not start)."""
    if key_file is None and key_env is None:
        return None
    if key_file is not None:
        where = f"state_key_file {key_file}"
        try:
            text = read_file(key_file, "state_key_file").encode()  # a FIFO there would block the start
        except Refused as exc:
            raise ValueError(exc.reason) from None
    else:
        where = f"state_key_env {key_env}"
        if key_env not in os.environ:
            raise ValueError(f"{where}: the variable is not set")
        text = os.environ[key_env or ""].strip().encode()
    if len(text) < MIN_KEY:
        raise ValueError(f"{where}: the key must be at least {MIN_KEY} characters (openssl rand -base64 32)")
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise ValueError(f"{where}: encryption needs cryptography, which is not installed: "
                         "pip install 'confsync[vault]'") from None

    return HKDF(hashes.SHA256(), 32, salt=None, info=b"confsync vault state 1").derive(text)


def load(path: Path, key: bytes | None, expected: dict[str, str]) -> State:
    """The state in `path`; an empty one when there is none, or (with a warning) when it cannot be used."""
    try:
        data = _read(path)
        if data is None:
            return State()
        return _decode(_open(data, key), expected)
    except Unusable as exc:
        log.warning("state_file %s: %s: starting fresh", path, exc, extra={"event": "state_ignored"})
        return State()


def dump(state: State, key: bytes | None, ident: dict[str, str], now: float | None = None) -> bytes:
    """The file's bytes; secrets that have expired are left out."""
    now = time.time() if now is None else now
    doc = {"format": FORMAT, "version": VERSION, **ident, "token": state.token, "accessor": state.accessor,
           "secrets": [{"path": path, "params": [[k, list(v) if isinstance(v, tuple) else v] for k, v in params],
                        **asdict(held)}
                       for (path, params), held in state.secrets.items() if held.left(now) > 0]}
    text = json.dumps(doc, sort_keys=True).encode()
    if key is None:
        return text + b"\n"
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return SEALED + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, text, SEALED)) + b"\n"


def _read(path: Path) -> bytes | None:
    """The file's bytes: only a regular file of ours that nobody else may write (it could plant a token)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unusable("a symbolic link (never followed)" if os.path.islink(path) else
                       f"cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Unusable("not a regular file")
        if st.st_uid != os.geteuid():
            raise Unusable(f"owned by uid {st.st_uid}, not by confsync's ({os.geteuid()})")
        if st.st_mode & 0o022:
            raise Unusable(f"others may write it (mode {stat.S_IMODE(st.st_mode):04o})")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Unusable(f"larger than {MAX_BYTES >> 20} MiB")
    return data


def _open(data: bytes, key: bytes | None) -> bytes:
    sealed = data.startswith(SEALED)
    if key is None:
        if sealed:
            raise Unusable("encrypted, and no state_key_file or state_key_env is set")
        return data
    if not sealed:  # a plain file where a sealed one is expected: anyone could have written it
        raise Unusable("not encrypted, while a state key is set")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        raw = base64.b64decode(data[len(SEALED):].strip(), validate=True)
        return AESGCM(key).decrypt(raw[:12], raw[12:], SEALED)
    except (binascii.Error, ValueError, InvalidTag):
        raise Unusable("cannot be decrypted with the state key (another key, or altered)") from None


def _decode(text: bytes, expected: dict[str, str]) -> State:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; `[[[[…` recurses
        raise Unusable("not a confsync state file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise Unusable("not a confsync state file")
    if doc.get("version") != VERSION:
        raise Unusable("written by another version of confsync (state version "
                       f"{doc.get('version')!r}, this one reads {VERSION})")
    for name, value in expected.items():
        if doc.get(name) != value:
            what = {"auth": "another login (auth options)"}.get(name, f"another {name}")
            raise Unusable(f"written for {what}")
    try:
        return State(_text(doc, "token"), _text(doc, "accessor"), dict(_secret(s) for s in _list(doc, "secrets")))
    except (TypeError, ValueError, KeyError) as exc:
        raise Unusable(f"not a confsync state file ({exc})") from None


def _secret(doc: Any) -> tuple[Request, Held]:
    if not isinstance(doc, dict):
        raise TypeError("a secret is not a mapping")
    params = []
    for pair in _list(doc, "params"):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError("params is not a list of [name, value]")
        params.append((pair[0], tuple(pair[1]) if isinstance(pair[1], list) else pair[1]))
    fields = doc["fields"]
    if not isinstance(fields, dict):
        raise TypeError("fields is not a mapping")
    held = Held(fields, _number(doc, "expires_at"), _number(doc, "term"), _text(doc, "lease_id"),
                bool(doc["renewable"] is True), _number(doc, "duration"))
    return (_text(doc, "path"), tuple(params)), held


def _text(doc: dict[str, Any], name: str) -> str:
    if not isinstance(doc.get(name), str):
        raise TypeError(f"{name} is not a string")
    return str(doc[name])


def _number(doc: dict[str, Any], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise TypeError(f"{name} is not a number")
    return float(value)


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    if not isinstance(doc.get(name), list):
        raise TypeError(f"{name} is not a list")
    return list(doc[name])
