"""`jwt`: a JWT from a file (an OIDC provider's, a CI job's, a workload identity's), re-read at
every login; Vault checks it against the mount's keys and the role's bound claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from confsync.sources.vault.auth.base import Method, Request
from confsync.sources.vault.life import read_file

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions


class JWT(Method):
    uses = frozenset({"role", "jwt_file", "mount"})
    mount = "jwt"

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        return None if options.jwt_file else "auth method 'jwt' needs jwt_file"

    def request(self) -> Request:
        jwt = read_file(self.options.jwt_file, "jwt_file")
        body = {"jwt": jwt}
        if self.options.role:  # else the mount's default_role
            body["role"] = self.options.role
        return Request(self.login_path(), body, (jwt,))
