"""Logging in: one small class per auth method, found by name in `METHODS` and imported only when
configured (like the sources' own registry).

A method either has a token already (`token`, `token_file`: it is looked up to learn its TTL) or
logs in: one POST to `auth/<mount>/login` with a payload built from files it re-reads at every login
(a rotated JWT, secret ID or password is picked up without a restart). The source keeps the token
alive (renewal, re-login); a method only knows how to get one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confsync.sources.vault.auth.base import Method
    from confsync.sources.vault.options import AuthOptions

# method name → "module:Class"
METHODS = {
    "token": "confsync.sources.vault.auth.token:Token",
    "token_file": "confsync.sources.vault.auth.token:TokenFile",
    "approle": "confsync.sources.vault.auth.approle:AppRole",
    "kubernetes": "confsync.sources.vault.auth.kubernetes:Kubernetes",
    "jwt": "confsync.sources.vault.auth.jwt:JWT",
    "cert": "confsync.sources.vault.auth.cert:Cert",
    "userpass": "confsync.sources.vault.auth.userpass:UserPass",
}


def method_class(name: str) -> type[Method]:
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def method_for(options: AuthOptions) -> Method:
    return method_class(options.method)(options)
