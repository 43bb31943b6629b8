"""Request failures mapped to clean reasons: paths, statuses and Vault's own error text, never hvac's
exception text (it holds request URLs and bodies), a token or a request parameter's value."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import Any

from confsync.sources.failures import PLAIN_TO_TLS_BODY, plain_to_tls, tls_failure


class Problem(Exception):
    """A request failed; `reason` is safe to log and show."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


class Unreachable(Problem):
    """No answer, or the server cannot serve (sealed, standby, overloaded): the source is down."""


class Refused(Problem):
    """The server answered, and the answer is no (400, 403, 404, 500…)."""


RATE_LIMITED = 429
RETRY_AFTER_MAX = 300.0  # s: a Retry-After longer than this is taken as this


_DOWN_STATUSES = {501, 502, 503}
_REASONS = {403: "permission denied", 404: "does not exist"}


def problem_of(exc: BaseException, address: str, redact: tuple[str, ...] = (),
               retry_after: float = 0.0) -> Problem | None:
    """Map an hvac or requests exception to a clean `Problem` (None: not a request failure).
    `retry_after`: the Retry-After of the reply, if it had one (hvac's exception does not keep it)."""
    import hvac.exceptions
    import requests

    if isinstance(exc, requests.Timeout):
        return Unreachable(f"{address} did not answer in time")
    if isinstance(exc, requests.exceptions.SSLError):
        return Unreachable(tls_failure(str(exc), address, "tls.ca_file or VAULT_CACERT"))
    if isinstance(exc, requests.ConnectionError):
        refused = "refused" in str(exc).lower()
        return Unreachable(f"cannot reach {address}" + (": connection refused" if refused else ""))
    if isinstance(exc, requests.RequestException):  # an address requests cannot use, a bad body…
        return Unreachable(f"request to {address} failed ({type(exc).__name__})")
    if isinstance(exc, hvac.exceptions.VaultError):
        status = _status_of(exc)
        detail = _clean_errors(exc.errors, redact)
        if status == 400 and PLAIN_TO_TLS_BODY in str(getattr(exc, "text", "") or "").lower():
            return Unreachable(plain_to_tls(address))
        if status == RATE_LIMITED:  # a quota: the server is there, and asks us to slow down
            return Unreachable(f"{address} is rate-limiting us (HTTP 429{': ' + detail if detail else ''})",
                               status, retry_after)
        if status in _DOWN_STATUSES:
            return Unreachable(f"{address} cannot serve (HTTP {status}{': ' + detail if detail else ''})")
        reason = _REASONS.get(status or 0, f"refused (HTTP {status})")
        if detail and detail != reason:
            reason += f": {detail}"
        return Refused(reason, status)
    return None


def _status_of(exc: Any) -> int | None:
    import hvac.exceptions as e

    for cls, status in ((e.InvalidRequest, 400), (e.Unauthorized, 401), (e.Forbidden, 403),
                        (e.InvalidPath, 404), (e.PreconditionFailed, 412), (e.RateLimitExceeded, 429),
                        (e.InternalServerError, 500), (e.VaultNotInitialized, 501), (e.BadGateway, 502),
                        (e.VaultDown, 503)):
        if isinstance(exc, cls):
            return status
    return None


def _clean_errors(errors: Any, redact: tuple[str, ...]) -> str:
    """Vault's `errors` list, multierror bullets flattened, with request parameter values hidden."""
    if isinstance(errors, str):
        errors = [errors]
    lines: list[str] = []
    for error in errors or []:
        bullets = re.findall(r"^\s*\* (.+)$", str(error), re.M)
        lines.extend(bullets or [line.strip() for line in str(error).splitlines() if line.strip()])
    text = "; ".join(dict.fromkeys(lines))[:300]
    for value in redact:
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


def retry_after_of(header: str | None, now: float) -> float:
    """Seconds a Retry-After header asks us to wait (RFC 9110 10.2.3: seconds or an HTTP date)."""
    if not header:
        return 0.0
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - now
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def not_a_reply(address: str, body: Any) -> Unreachable:
    """A 200 whose body is not a JSON object: whoever answered is not Vault (a proxy, a portal…)."""
    what = f"{type(body).__name__}"
    if hasattr(body, "status_code"):  # hvac hands back the response when the body is not JSON
        what = f"HTTP {body.status_code}, {body.headers.get('Content-Type') or 'no content type'}"
    return Unreachable(f"{address} answered with something that is not a Vault reply ({what})")
