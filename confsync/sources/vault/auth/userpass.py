"""`userpass`: a user name (inline: it is not a secret) and a password from a file or an
environment variable, never from the config file itself."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote

from confsync.sources.vault.auth.base import Method, Request
from confsync.sources.vault.errors import Refused
from confsync.sources.vault.life import read_file

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions


class UserPass(Method):
    uses = frozenset({"username", "password_file", "password_env", "mount"})
    mount = "userpass"

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        if not options.username:
            return "auth method 'userpass' needs username"
        if bool(options.password_file) == bool(options.password_env):
            return "auth method 'userpass' needs exactly one of password_file or password_env"
        return None

    def request(self) -> Request:
        o = self.options
        if o.password_file:
            password = read_file(o.password_file, "password_file")
        else:
            password = os.environ.get(o.password_env or "", "")
            if not password:
                raise Refused(f"auth method 'userpass' needs the environment variable {o.password_env}")
        # The name is a path segment: quoted, so `../x` or `a/b` cannot reach another endpoint.
        return Request(f"{self.login_path()}/{quote(o.username or '', safe='')}", {"password": password},
                       (password,))
