"""Where template paths live in etcd's keyspace, and which dependencies a changed key concerns."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confsync.sources import ABSENT, Dep, Missing


@dataclass(frozen=True)
class KeyRange:
    """One key (`exact`) or every key starting with `start`."""

    start: bytes
    exact: bool

    def __contains__(self, key: bytes) -> bool:
        return key == self.start if self.exact else key.startswith(self.start)

    def body(self) -> dict[str, str]:
        """The `key`/`range_end` pair of an etcd request for this range."""
        if self.exact:
            return {"key": b64(self.start)}
        return {"key": b64(self.start or b"\0"), "range_end": b64(prefix_end(self.start))}


def key_range(base: bytes, dep: Dep) -> KeyRange | None:
    """The range `dep` reads, under the prefix `base` ("" or ending in "/"); None: not a kind of ours."""
    path = dep.path.encode()
    if dep.kind == "key":
        return KeyRange(base + path, exact=True) if path else None
    if dep.kind in ("tree", "ls"):
        return KeyRange(base + path + b"/" if path else base, exact=False)
    return None


def prefix_bytes(prefix: str) -> bytes:
    return (prefix.rstrip("/") + "/").encode() if prefix else b""


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with `prefix` (etcd's `range_end` for a prefix)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # etcd: from `key` to the end of the keyspace
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def span(ranges: Iterable[KeyRange], cut: bool) -> KeyRange:
    """One range covering all of `ranges`: their common prefix (cut back to a "/" when `cut`)."""
    starts = [r.start for r in ranges]
    if len(starts) == 1 and not cut:
        return next(iter(ranges))
    common = _common_prefix(starts)
    if cut:
        common = common[: common.rfind(b"/") + 1]
    return KeyRange(common, exact=False)


def _common_prefix(items: list[bytes]) -> bytes:
    if not items:
        return b""
    low, high = min(items), max(items)  # what the smallest and largest share, all share
    n = 0
    while n < len(low) and low[n] == high[n]:
        n += 1
    return low[:n]


def covers(outer: KeyRange, inner: KeyRange) -> bool:
    return inner.start in outer if inner.exact or outer.exact else inner.start.startswith(outer.start)


def value_of(dep: Dep, rng: KeyRange, mirror: dict[bytes, bytes]) -> Any:
    """What a template gets for `dep` from the watched keys now."""
    try:
        if rng.exact:
            raw = mirror.get(rng.start)
            return ABSENT if raw is None else raw.decode()
        cut = len(rng.start)
        below = sorted((k[cut:], v) for k, v in mirror.items() if k.startswith(rng.start))
        if dep.kind == "tree":
            return {k.decode(): v.decode() for k, v in below}
        return sorted({k.split(b"/", 1)[0].decode() for k, _ in below} - {""})
    except UnicodeDecodeError as exc:
        return Missing(f"a key or value is not UTF-8 text ({exc.reason} at byte {exc.start})")


class Index:
    """Which dependencies a changed key concerns: by exact key, or by prefix."""

    def __init__(self) -> None:
        self.ranges: dict[Dep, KeyRange] = {}
        self._exact: dict[bytes, set[Dep]] = {}
        self._prefix: dict[bytes, set[Dep]] = {}

    def add(self, dep: Dep, rng: KeyRange) -> None:
        self.ranges[dep] = rng
        (self._exact if rng.exact else self._prefix).setdefault(rng.start, set()).add(dep)

    def remove(self, dep: Dep) -> KeyRange | None:
        rng = self.ranges.pop(dep, None)
        if rng:
            table = self._exact if rng.exact else self._prefix
            table[rng.start].discard(dep)
            if not table[rng.start]:
                del table[rng.start]
        return rng

    def deps_of(self, key: bytes) -> set[Dep]:
        found = set(self._exact.get(key, ()))
        for start, deps in self._prefix.items():
            if key.startswith(start):
                found |= deps
        return found

    def wants(self, key: bytes) -> bool:
        return key in self._exact or any(key.startswith(start) for start in self._prefix)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
