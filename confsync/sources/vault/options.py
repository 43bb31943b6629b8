"""The vault source's options, and what templates see of it (`vault.secret`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from confsync.config import Duration, Perms, RelPath
from confsync.sources import ABSENT, Functions


@dataclass(frozen=True)
class SinkOptions:
    """Where the current token is written for the application (Vault Agent's file sink)."""

    path: RelPath
    mode: Perms = 0o600
    wrap_ttl: Duration | None = None  # write a response-wrapping token (JSON) that unwraps to the token

    def __post_init__(self) -> None:
        if self.mode & 0o004:
            raise ValueError(f"mode {self.mode:04o} lets every user read the token: use at most 0640")
        if self.wrap_ttl is not None and self.wrap_ttl < 1:
            raise ValueError("wrap_ttl must be at least 1s")


@dataclass(frozen=True)
class AuthOptions:
    """How to get a token. No option takes a secret inline: tokens, secret IDs, JWTs and passwords
    come from files (or the environment), so the config file itself never holds one."""

    method: Literal["token", "token_file", "approle", "kubernetes", "jwt", "cert", "userpass"] = "token"
    token_file: RelPath | None = None  # token_file
    role_id: str | None = None  # approle: the role ID is an identifier, not a secret…
    role_id_file: RelPath | None = None  # …but may come from a file too
    secret_id_file: RelPath | None = None  # approle; omit for roles with bind_secret_id=false
    role: str | None = None  # kubernetes, jwt; cert: the certificate role's name
    jwt_file: RelPath | None = None  # kubernetes (default: the pod's service account token), jwt
    username: str | None = None  # userpass
    password_file: RelPath | None = None  # userpass: one of these two
    password_env: str | None = None  # userpass: the name of the environment variable
    mount: str | None = None  # where the auth method is enabled (default: its own name)
    sink: SinkOptions | None = None  # any method

    def __post_init__(self) -> None:
        from confsync.sources.vault.auth import method_class

        method = method_class(self.method)
        for f in fields(self):
            if f.name not in ("method", "sink") and f.name not in method.uses \
                    and getattr(self, f.name) != f.default:
                raise ValueError(f"{f.name} is not used by auth method {self.method!r}")
        problem = method.problem(self)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class TLSOptions:
    ca_file: RelPath | None = None  # default: VAULT_CACERT, else the system's CAs
    verify: bool = True
    cert_file: RelPath | None = None  # a client certificate, for servers that ask for one
    key_file: RelPath | None = None


@dataclass(frozen=True)
class VaultOptions:
    address: str | None = None  # default: VAULT_ADDR, else http://127.0.0.1:8200
    namespace: str | None = None  # default: VAULT_NAMESPACE
    auth: AuthOptions = AuthOptions()
    static_secret_interval: Duration = 300.0
    timeout: Duration = 10.0  # per request
    tls: TLSOptions = TLSOptions()
    # The token and leases, kept for the next start (an init container's, for its sidecar): state.py
    state_file: RelPath | None = None
    state_key_file: RelPath | None = None  # encrypt state_file with the key in this file…
    state_key_env: str | None = None  # …or in this environment variable
    revoke_on_shutdown: bool = False  # `run`/`exec` give back the token and leases when they stop

    def __post_init__(self) -> None:
        if self.address is not None and not re.match(r"https?://[^/]", self.address):
            raise ValueError(f"address must start with http:// or https://, got {self.address!r}")
        if self.static_secret_interval <= 0:
            raise ValueError("static_secret_interval must be more than 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be more than 0")
        if self.auth.method == "cert" and not (self.tls.cert_file and self.tls.key_file):
            raise ValueError("auth method 'cert' logs in with the client certificate: set tls.cert_file "
                             "and tls.key_file")
        if (self.state_key_file or self.state_key_env) and not self.state_file:
            raise ValueError("state_key_file and state_key_env encrypt state_file: set state_file too")
        if self.state_key_file and self.state_key_env:
            raise ValueError("set one of state_key_file or state_key_env, not both")
        sink = self.auth.sink
        if self.state_file and sink and os.path.realpath(self.state_file) == os.path.realpath(sink.path):
            raise ValueError("state_file and auth.sink.path name the same file: each write would replace the other")

    def written(self) -> dict[str, Path]:
        """The files this source writes (option → path): no template may write them too."""
        return {k: p for k, p in (("state_file", self.state_file),
                                  ("auth.sink.path", self.auth.sink.path if self.auth.sink else None)) if p}


# -- what templates see -------------------------------------------------------------------------


class VaultFunctions(Functions):
    """`vault.secret(path, **params)`, and `vault.list(path)`: the key names under a path. No
    per-field key(): a Vault secret is a set of fields read (or issued) together, and leased as one."""

    def secret(self, path: str, **params: Any) -> dict[str, Any]:
        # Parameters are secret whenever any input to them is (issue 18); which input a value came
        # from cannot be told, so a vault dependency never shows its parameter values.
        dep = replace(self._dep("secret", path, **_hashable(params)), secret_params=True)
        return self._lookup(dep, ABSENT)  # type: ignore[no-any-return]

    def list(self, path: str) -> Any:
        """The names under `path`, sorted; a sub-folder's name ends with "/" (as Vault lists it)."""
        return self._lookup(self._dep("list", path), ABSENT)

    def key(self, path: str, default: Any = ABSENT) -> str:
        raise TypeError(f"{self._source}.key() does not exist: use {self._source}.secret(path)['field']")

    def tree(self, prefix: str = "") -> dict[str, str]:
        raise TypeError(f"{self._source}.tree() does not exist: use {self._source}.secret(path)")

    def ls(self, prefix: str = "") -> Any:
        raise TypeError(f"{self._source}.ls() does not exist: use {self._source}.list(path)")


def _hashable(params: dict[str, Any]) -> dict[str, Any]:
    """A Dep is hashable: lists become tuples (and lists again in the request body)."""
    out = {}
    for name, value in params.items():
        if isinstance(value, list | tuple):
            value = tuple(value)
        if not isinstance(value, str | int | float | bool | tuple):
            raise TypeError(f"secret() parameter {name}: expected a string, number, boolean or list")
        out[name] = value
    return out
