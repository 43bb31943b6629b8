"""`approle`: a role ID (an identifier, inline or from a file) and a secret ID from a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from confsync.sources.vault.auth.base import Method, Request
from confsync.sources.vault.life import read_file

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions


class AppRole(Method):
    uses = frozenset({"role_id", "role_id_file", "secret_id_file", "mount"})
    mount = "approle"

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        if bool(options.role_id) == bool(options.role_id_file):
            return "auth method 'approle' needs exactly one of role_id or role_id_file"
        return None

    def request(self) -> Request:
        o = self.options
        role_id = o.role_id or read_file(o.role_id_file, "role_id_file")
        body = {"role_id": role_id}
        if o.secret_id_file:  # omitted for roles with bind_secret_id=false
            body["secret_id"] = read_file(o.secret_id_file, "secret_id_file")
        return Request(self.login_path(), body, tuple(body.values()))
