"""Atomic writes: a reader of the destination sees the old file or the new one, never a part of one.

Temp file in the destination's directory (so the rename stays on one filesystem), write, fsync,
chown/chmod, optional `check` on the staged file, `os.replace`, fsync the directory (so the rename
itself survives a crash: consul-template does not do this last step). Identical bytes: no write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shlex
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from confsync.errors import WriteError

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
SECRET_MODE = 0o600


@dataclass(frozen=True)
class Target:
    destination: Path
    perms: int | None = None  # None: keep the existing file's mode, else DEFAULT_MODE
    create_dirs: bool = True
    backup: bool = False
    check: str | None = None  # shell command; `{staged}` is replaced by the staged file's path
    check_timeout: float = 60.0
    min_bytes: int = 1
    max_shrink: float | None = None  # a fraction: 0.5 refuses losing more than half the bytes
    allow_shrink: bool = False
    format: Literal["json", "yaml", "toml"] | None = None
    allowed_roots: tuple[Path, ...] = ()  # empty: the destination's own directory
    secret: bool = False  # holds a secret: 0600 unless perms say otherwise, .bak never readable by others
    user: int | None = None  # the file's owner; None: the current file's when root, else whoever writes
    group: int | None = None

    def mode(self, existing: int | None) -> int:
        if self.perms is not None:
            return self.perms
        if self.secret:
            return SECRET_MODE
        return DEFAULT_MODE if existing is None else existing


@dataclass(frozen=True)
class Change:
    """What a write replaced: the previous bytes (None: there was no file), for rollback."""

    previous: bytes | None


class RefusedError(WriteError):
    """A guard refused the render; the live file was left as it was."""


def current(path: Path) -> bytes | None:
    """The live file's bytes, None when there is none. Only a regular file is read: a FIFO in the
    destination's place (a shared volume) would block the event loop for good, even against SIGTERM."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused just below.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise WriteError(f"{path}: is not a regular file; left as it is")
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteError(f"{path}: cannot read the current file: {exc.strerror}") from None


def clear_foreign(path: Path) -> None:
    """Remove what is in the place of a file that only confsync may own (the Vault state file, the
    token sink) unless it is a regular file of ours: the writer refuses a symlink for ever, and as
    root it keeps the old file's owner, so a file planted in a shared volume would be given the token."""
    if os.path.islink(path.parent):
        return  # never through a symlinked directory: the write refuses it (_check_inside_roots)
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.unlink(path)


async def write(target: Target, data: bytes, *, guard: bool = True, dry_run: bool = False) -> Change | None:
    """Put `data` at `target.destination`; None when the file already held exactly that.

    `guard=False` is for rollback, which restores bytes that were live a moment ago. `dry_run`
    applies every guard and the check command as the write would, and writes nothing (issue 11 item 3).
    """
    dest = target.destination
    _check_inside_roots(target)
    old = current(dest)
    if old == data:
        if not dry_run:
            _settle_owner_and_mode(target)
        return None
    if guard:
        _check_guards(target, data, old)
    if dry_run:
        await _rehearse(target, data)
        return Change(previous=old)
    staged = _stage(target, data, old is not None)
    try:
        if guard and target.format:
            _check_format(target, data)
        if guard and target.check:
            await _check(target, staged)
        backup = _link_backup(dest) if target.backup and old is not None else None
        _replace(staged, dest)
        if backup:
            _finish_backup(target, backup)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise
    return Change(previous=old)


async def _rehearse(target: Target, data: bytes) -> None:
    """The format and check guards on a copy staged in a private directory, under the destination's name."""
    if target.format:
        _check_format(target, data)
    if target.check:
        with tempfile.TemporaryDirectory(prefix="confsync-dry-run-") as directory:
            staged = Path(directory, target.destination.name)
            staged.write_bytes(data)
            os.chmod(staged, target.mode(None))
            await _check(target, staged)


def _check_inside_roots(target: Target) -> None:
    """Refuse a destination that resolves, through `..` or symlinks, outside the allowed roots.

    A root that is itself a symlink is never trusted: `ln -s /etc out` in a shared volume would
    otherwise make `/etc` the root of `out/app.conf` (issue 10, item 11). The directories above a
    root are the operator's, and are resolved.
    """
    dest = target.destination
    roots = target.allowed_roots or (Path(os.path.normpath(dest.parent)),)
    real = os.path.realpath(dest)
    linked = [root for root in roots if os.path.islink(root)]
    for root in roots:
        real_root = os.path.realpath(root)
        if root not in linked and (real == real_root or real.startswith(real_root.rstrip("/") + "/")):
            return
    why = f"; {', '.join(map(str, linked))}: a symlink, never trusted as a root (name its target)" if linked else ""
    raise RefusedError(f"{dest}: resolves to {real}, outside the allowed roots "
                       f"({', '.join(map(str, roots))}){why}; refused")


def _check_guards(target: Target, data: bytes, old: bytes | None) -> None:
    dest = target.destination
    if old is None:
        return  # nothing good to protect yet
    if len(data) < target.min_bytes:
        raise RefusedError(f"{dest}: render is {len(data)} bytes, under min_bytes={target.min_bytes}; "
                           "kept the current file")
    if target.max_shrink is not None and not target.allow_shrink and old:
        shrink = (len(old) - len(data)) / len(old)
        if shrink > target.max_shrink:
            raise RefusedError(f"{dest}: render would shrink the file by {shrink:.0%} ({len(old)} → "
                               f"{len(data)} bytes), over max_shrink={target.max_shrink:.0%}; kept the "
                               "current file (use --force or allow_shrink to accept)")


def _check_format(target: Target, data: bytes) -> None:
    try:
        text = data.decode("utf-8")
        if target.format == "json":
            import json

            json.loads(text)
        elif target.format == "yaml":
            import yaml

            yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        else:
            import tomllib

            tomllib.loads(text)
    except Exception as exc:  # the parsers' errors carry line and column, never our values
        raise RefusedError(f"{target.destination}: render is not valid {target.format} (kept the current "
                           "file)", _first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    """Parser messages: position only. YAML's may quote the offending line, which could be secret."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{getattr(exc, 'problem', 'syntax error')} at line {mark.line + 1}, column {mark.column + 1}"
    if hasattr(exc, "lineno"):
        return f"{getattr(exc, 'msg', 'syntax error')} at line {exc.lineno}, column {getattr(exc, 'colno', '?')}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _stage(target: Target, data: bytes, exists: bool) -> Path:
    dest = target.destination
    try:
        if target.create_dirs:
            dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(f"{dest}: cannot create a file in {dest.parent}: {exc.strerror}") from None
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            _set_owner_and_mode(target, fh.fileno(), exists)
    except (OSError, WriteError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"{dest}: cannot write the new version: {exc.strerror}") from None
    return staged


def _set_owner_and_mode(target: Target, fd: int, exists: bool) -> None:
    """Owner, group and mode of the staged file, before the rename: no reader ever sees the file
    with another owner or mode. Through the descriptor, not the name: a name in a directory others
    can write may be swapped for a symlink, and chown would follow it."""
    existing = None
    uid, gid = -1, -1  # unchanged: whoever writes
    if exists:
        st = os.stat(target.destination)
        existing = stat.S_IMODE(st.st_mode)
        if os.geteuid() == 0:  # keep the owner the app expects; only root can give files away
            uid, gid = st.st_uid, st.st_gid
    uid = uid if target.user is None else target.user
    gid = gid if target.group is None else target.group
    if (uid, gid) != (-1, -1):
        try:
            os.fchown(fd, uid, gid)
        except OSError as exc:  # the config check knows root and CAP_CHOWN; a filesystem may still refuse
            raise WriteError(f"{target.destination}: cannot give the file to uid {uid}, gid {gid}: {exc.strerror}; "
                             "the current file stays") from None
    os.fchmod(fd, target.mode(existing))


def _settle_owner_and_mode(target: Target) -> None:
    """The bytes are right, but `user`, `group` or `perms` may be new (added to the config since the
    file was written): apply them to the live file, as consul-template does. Through a descriptor
    opened without following a symlink, and only on a regular file with one link: a name in a
    directory others can write may be swapped for a link to a file that is not ours to give away."""
    if target.user is None and target.group is None and target.perms is None:
        return
    try:
        fd = os.open(target.destination, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # a symlink (written through, never changed in place) or gone: the next write settles it
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return
        uid = -1 if target.user in (None, st.st_uid) else target.user
        gid = -1 if target.group in (None, st.st_gid) else target.group
        if (uid, gid) != (-1, -1):
            os.fchown(fd, uid, gid)
        if target.perms is not None and stat.S_IMODE(st.st_mode) != target.perms:
            os.fchmod(fd, target.perms)
    except OSError as exc:
        raise WriteError(f"{target.destination}: cannot set its owner or mode: {exc.strerror}") from None
    finally:
        os.close(fd)


async def _check(target: Target, staged: Path) -> None:
    from confsync import command

    try:
        async with asyncio.timeout(target.check_timeout):
            done = await command.run(target.check.replace("{staged}", shlex.quote(str(staged))))  # type: ignore[union-attr]
    except TimeoutError:
        raise WriteError(f"{target.destination}: check timed out after {target.check_timeout:g}s: "
                         f"{target.check}") from None
    except OSError as exc:
        raise WriteError(f"{target.destination}: cannot run the check: {exc.strerror}") from None
    if done.returncode != 0:  # the first line is the app's complaint; the rest may be the staged file
        raise WriteError(f"{target.destination}: check failed (exit {done.returncode}): {target.check}",
                         done.first_line)


def _link_backup(dest: Path) -> Path:
    """A hard link to the live file, taken before the replace: it becomes `<destination>.bak`."""
    tmp = dest.with_name(f".{dest.name}.bak.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(dest, tmp)
    except OSError as exc:
        raise WriteError(f"{dest}: cannot keep a backup: {exc.strerror}") from None
    return tmp


def _finish_backup(target: Target, tmp: Path) -> None:
    bak = target.destination.with_name(target.destination.name + ".bak")
    try:
        if target.secret:  # the old inode is no longer live: tightening it cannot affect the app
            os.chmod(tmp, stat.S_IMODE(os.stat(tmp).st_mode) & 0o700)
        os.replace(tmp, bak)
    except OSError as exc:
        log.warning("%s: could not keep the backup: %s", target.destination, exc.strerror)


_warned_ebusy: set[Path] = set()


def _replace(staged: Path, dest: Path) -> None:
    try:
        os.replace(staged, dest)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise WriteError(f"{dest}: cannot replace the file: {exc.strerror}") from None
        _write_in_place(staged, dest)
        return
    fsync_dir(dest.parent)


def _write_in_place(staged: Path, dest: Path) -> None:
    """A single file bind-mounted into a container cannot be renamed over (EBUSY): rewrite it in
    place. Not atomic, so a reader may see a partial file: the log says so, once per file."""
    if dest not in _warned_ebusy:
        _warned_ebusy.add(dest)
        log.warning("%s is a mount point (EBUSY on rename): writing in place, which is not atomic; "
                    "mount the directory instead", dest, extra={"event": "in_place_write"})
    try:
        data = staged.read_bytes()
        with open(dest, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise WriteError(f"{dest}: cannot write in place: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged)


# Left by a write that was killed (`kill -9`, OOM) between staging and rename: mkstemp's
# `.NAME.XXXXXXXX.tmp` and the backup's `.NAME.bak.tmp`. A write in flight is younger than its
# check's timeout, so only files older than this are removed (issue 10, item 12).
STALE_AGE = 600.0
_STAGED_SUFFIX = re.compile(r"(?:[a-z0-9_]{8}|bak)\.tmp")


def sweep_stale(destination: Path) -> list[Path]:
    """Remove the stale temp files confsync left beside `destination`; the ones removed."""
    prefix = f".{destination.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(destination.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix) or not _STAGED_SUFFIX.fullmatch(entry.name[len(prefix):]):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_AGE:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
