"""The zookeeper source's options, and the znode paths ZooKeeper accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from confsync.config import Duration, RelPath


@dataclass(frozen=True)
class ZooKeeperAuth:
    credential_file: RelPath  # holds "user:password"; never logged
    scheme: Literal["digest"] = "digest"


@dataclass(frozen=True)
class ZooKeeperOptions:
    hosts: str  # "host:port,host:port"
    chroot: str | None = None  # every path is relative to it
    auth: ZooKeeperAuth | None = None
    session_timeout: Duration = 10.0
    # Every znode watched is checked this often (one `exists`, no watch): ZooKeeper drops, without
    # an event, a watch it may no longer deliver after an ACL change (issue 18). 0: never.
    watch_check_interval: Duration = 300.0
    secret: bool = False  # values are secrets: files 0600 by default, values redacted from diffs and errors

    def __post_init__(self) -> None:
        parts = [p.strip() for p in self.hosts.split(",")]
        if not self.hosts.strip() or not all(parts):
            raise ValueError(f"hosts: expected \"host:port,host:port\", got {self.hosts!r}")
        if "/" in self.hosts:
            raise ValueError("hosts: give the chroot in `chroot`, not after the host list")
        if self.chroot is not None:
            chroot = "/" + self.chroot.strip("/")
            if chroot != "/" and bad_path(chroot.strip("/")):
                raise ValueError(f"chroot: {bad_path(chroot.strip('/'))}")
            object.__setattr__(self, "chroot", None if chroot == "/" else chroot)
        if self.session_timeout <= 0:
            raise ValueError("session_timeout must be positive")
        if self.watch_check_interval < 0:
            raise ValueError("watch_check_interval must be 0 (off) or more")


def bad_path(path: str) -> str | None:
    if not path:
        return None
    # ZooKeeper's PathUtils.validatePath refuses these code points.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xF8FF or ord(c) >= 0xFFF0
           for c in path):
        return "contains a character ZooKeeper does not allow in paths"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "path parts may not be empty, '.' or '..'"
    return None
