"""The gateway's wire: errors as etcd reports them, replies decoded, sockets kept alive."""

from __future__ import annotations

import base64
import json
import socket
from typing import TYPE_CHECKING, Any

from confsync.sources.failures import PLAIN_TO_TLS_BODY, plain_to_tls, tls_failure

if TYPE_CHECKING:
    import httpx

# A watch stream may be silent for a long time, so its read timeout cannot be short. TCP keepalive
# notices a dead peer (a crashed host, a cut network) after about IDLE + INTERVAL * COUNT = 11 s,
# with no request.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3
UNAUTHENTICATED, OUT_OF_RANGE = 16, 11  # gRPC status codes the gateway passes on as "code"


class Unavailable(Exception):
    """This endpoint cannot serve us now; the message names why, never a secret."""


class TokenRefused(Unavailable):
    """etcd no longer knows our token (expired, or auth was reset): authenticate again."""


class Compacted(Exception):
    """The revision we asked for is gone: read everything again at the current one."""


class StoreReplaced(Exception):
    """The endpoint serves another store than the one our revision came from (restored from a
    backup, or wiped): no event will tell what changed, so read everything again (issue 18)."""


def keepalive_options() -> list[tuple[int, int, int]]:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):  # Linux; elsewhere the system's keepalive timing applies
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def kvs_of(reply: dict[str, Any]) -> dict[bytes, bytes]:
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in reply.get("kvs", ())}


def parse_line(line: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise Unavailable(f"the watch stream sent something that is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise Unavailable("the watch stream sent something that is not a JSON object")
    return message


def stream_error(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return f"unexpected watch reply {str(message)[:200]}"


def error_of(response: httpx.Response, endpoint: str) -> tuple[int, str]:
    """The gRPC code and message of a gateway error reply (a message never holds a secret)."""
    try:
        body = response.json()
        return int(body.get("code", 0)), str(body.get("message") or body.get("error") or "")
    except (ValueError, AttributeError):
        if PLAIN_TO_TLS_BODY in response.text.lower():
            return 0, plain_to_tls(endpoint)
        return 0, f"HTTP {response.status_code} from {response.request.url.path}"


def reply_of(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    """A 200's JSON object, which always has a header; Unavailable for anything else (a proxy's page)."""
    try:
        reply = response.json()
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("header"), dict):
        kind = response.headers.get("Content-Type") or "no content type"
        raise Unavailable(f"{endpoint} answered with something that is not an etcd reply (HTTP 200, {kind})")
    return reply


def describe(exc: BaseException, endpoint: str) -> str:
    text = str(exc)
    if "ssl" in text.lower() or "certificate" in text.lower():
        return tls_failure(text, endpoint, "tls.ca_file or ETCDCTL_CACERT")
    if endpoint.startswith("http://") and "without sending a response" in text:
        # etcd's TLS port hangs up on plain HTTP without a word.
        return f"{text.rstrip('.')}: if {endpoint} speaks TLS, use https://"
    return text or f"{type(exc).__name__}: the connection ended without an answer"
