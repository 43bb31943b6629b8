"""Constants, the error and response types, and the parsing helpers every endpoint shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DATACENTER = "dc1"
DEFAULT_LEADER = "127.0.0.1:8300"
MAX_VALUE_SIZE = 512 * 1024  # "Values in the KV store cannot be larger than 512kb."
DEFAULT_WAIT = 5 * 60.0  # "If not set, the wait time defaults to 5 minutes."
MAX_WAIT = 10 * 60.0  # "This is limited to 10 minutes."
RPC_HOLD_TIMEOUT = 7.0  # Consul's performance.rpc_hold_timeout default
HEALTH_STATES = ("passing", "warning", "critical")
THREAD_PREFIX = "consul-emulator"


class ApiError(Exception):
    """An HTTP error answered as ``text/plain``, the way Consul does."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Abort(Exception):
    """The server is stopping: drop the connection without answering."""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.Duration`` string ("10s", "5m", "1m30s", "250ms") to seconds.

    Raises ``ValueError`` for anything Go's ``time.ParseDuration`` would reject
    (notably a bare number such as ``"10"``; only ``"0"`` is allowed unitless).
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def fields(obj: Any, names: tuple[str, ...], *, snake: bool = False, what: str = "body") -> dict[str, Any]:
    """Pick struct fields out of a decoded JSON object the way Go does it.

    Go's encoding/json matches object keys to struct fields case-insensitively,
    and the agent endpoints also accept snake_case; clients (py-consul among
    them) rely on that and send e.g. ``{"node": ..., "serviceid": ...}``.
    Only the top-level keys are normalised; maps such as ``Meta`` keep theirs.
    """
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ApiError(400, f"Request decode failed: {what} must be a JSON object")
    canon = {n.lower(): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        norm = key.lower().replace("_", "") if snake else key.lower()
        if norm in canon:
            out[canon[norm]] = value
    return out


def expect(value: Any, kind: type | tuple[type, ...], name: str, default: Any) -> Any:
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        raise ApiError(400, f"Request decode failed: {name} must be a number")
    if not isinstance(value, kind):
        raise ApiError(400, f"Request decode failed: invalid type for {name}")
    return value


def str_list(value: Any, name: str) -> list[str]:
    value = expect(value, list, name, [])
    if not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"Request decode failed: {name} must be a list of strings")
    return list(value)


def str_map(value: Any, name: str) -> dict[str, str]:
    value = expect(value, dict, name, {})
    return dict(value)


def weights(value: Any, *, snake: bool = False) -> dict[str, int] | None:
    if value is None:
        return None
    w = fields(value, ("Passing", "Warning"), snake=snake, what="Weights")
    return {"Passing": expect(w.get("Passing"), int, "Weights.Passing", 1),
            "Warning": expect(w.get("Warning"), int, "Weights.Warning", 1)}


def flag(query: dict[str, list[str]], name: str) -> bool:
    # Consul treats these query parameters as set when present at all
    # ("?recurse", "?keys", "?raw", "?passing", "?stale", "?consistent").
    return name in query


def bool_param(query: dict[str, list[str]], name: str) -> bool:
    """A boolean parameter as agent/health_endpoint.go reads ?passing (`getBoolQueryParam`): present
    and empty is true, else Go's strconv.ParseBool; anything else is 400."""
    if name not in query:
        return False
    value = query[name][0]
    if value == "":
        return True
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ApiError(400, f"Invalid value for ?{name}")


def one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
