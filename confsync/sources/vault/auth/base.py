"""What every auth method is: the options it takes, and how it gets a token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from confsync.sources.vault.errors import Refused, Unreachable
from confsync.sources.vault.life import TokenLife, life_from_auth, life_from_lookup, part

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions


class Vault(Protocol):
    """What a method needs of the source: requests (failures come back as `Problem`s), and the
    client's token."""

    @property
    def client(self) -> Any: ...

    async def call(self, fn: Any, *args: Any, redact: tuple[str, ...] = (), **kwargs: Any) -> Any: ...

    def set_token(self, token: str) -> None: ...


@dataclass(frozen=True)
class Request:
    path: str  # auth/<mount>/login…
    body: dict[str, Any]
    secrets: tuple[str, ...]  # values Vault's error text must never show


class Method:
    """A method that logs in: subclasses name the options they take and build the request."""

    uses: ClassVar[frozenset[str]] = frozenset()  # AuthOptions fields this method reads
    mount: ClassVar[str] = ""  # where Vault enables it by default

    def __init__(self, options: AuthOptions) -> None:
        self.options = options

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        """What the options lack for this method (checked when the config is loaded), or None."""
        return None

    @property
    def name(self) -> str:
        return self.options.method

    def request(self) -> Request:
        raise NotImplementedError

    async def login(self, vault: Vault) -> TokenLife:
        request = self.request()
        try:
            response = await vault.call(vault.client.adapter.post, f"/v1/{request.path}", json=request.body,
                                        redact=request.secrets)
        except Refused as exc:
            raise Refused(f"{self.name} login failed: {exc.reason}", exc.status) from None
        life = life_from_auth(response)
        token = part(response, "auth").get("client_token")
        if not isinstance(token, str) or not token:
            raise Unreachable("the login reply holds no client token")
        vault.set_token(token)
        return life

    def login_path(self) -> str:
        return f"auth/{(self.options.mount or self.mount).strip('/')}/login"


class GivenToken(Method):
    """A token handed to us: looked up to learn its TTL, never logged in for."""

    where = ""  # where the token came from, for messages

    def read(self) -> str:
        raise NotImplementedError

    async def login(self, vault: Vault) -> TokenLife:
        vault.set_token(self.read())
        try:
            return life_from_lookup(await vault.call(vault.client.auth.token.lookup_self))
        except Refused as exc:
            vault.client.token = ""
            raise Refused(f"the token from {self.where} was refused: {exc.reason}", exc.status) from None
