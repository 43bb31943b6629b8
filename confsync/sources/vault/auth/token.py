"""`token` (VAULT_TOKEN) and `token_file`: a token someone else logged in for."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from confsync.sources.vault.auth.base import GivenToken
from confsync.sources.vault.errors import Refused
from confsync.sources.vault.life import read_file

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions


class Token(GivenToken):
    where = "VAULT_TOKEN"

    def read(self) -> str:
        token = os.environ.get("VAULT_TOKEN", "").strip()
        if not token:
            raise Refused("auth method 'token' needs VAULT_TOKEN in the environment")
        return token


class TokenFile(GivenToken):
    """Re-read at every login: a rotated file is picked up when the old token is refused."""

    uses = frozenset({"token_file"})

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        return None if options.token_file else "auth method 'token_file' needs token_file"

    @property
    def where(self) -> str:  # type: ignore[override]
        return str(self.options.token_file)

    def read(self) -> str:
        return read_file(self.options.token_file, "token_file")
