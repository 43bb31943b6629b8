"""Atomic writes: a reader of the destination sees the old file or the new one, never a part of one.

Temp file in the destination's directory (so the rename stays on one filesystem), write, fsync,
chmod/chown, optional `check` on the staged file, `os.replace`, fsync the directory (so the rename
itself survives a crash: consul-template does not do this last step). Identical bytes: no write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from confsync.errors import WriteError

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644


@dataclass(frozen=True)
class Target:
    destination: Path
    perms: int | None = None  # None: keep the existing file's mode, else DEFAULT_MODE
    create_dirs: bool = True
    backup: bool = False
    check: str | None = None  # shell command; `{staged}` is replaced by the staged file's path
    check_timeout: float = 60.0


def current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteError(f"{path}: cannot read the current file: {exc.strerror}") from None


async def write(target: Target, data: bytes) -> bool:
    """Put `data` at `target.destination`; False when the file already held exactly that."""
    dest = target.destination
    old = current(dest)
    if old == data:
        return False
    staged = _stage(target, data, old is not None)
    try:
        if target.check:
            await _check(target, staged)
        if target.backup and old is not None:
            _backup(dest)
        _replace(staged, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise
    return True


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
        _copy_ownership(dest, staged, target.perms, exists)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise WriteError(f"{dest}: cannot write the new version: {exc.strerror}") from None
    return staged


def _copy_ownership(dest: Path, staged: Path, perms: int | None, exists: bool) -> None:
    mode = perms
    if exists:
        st = os.stat(dest)
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
        if os.geteuid() == 0:  # keep the owner the app expects; only root can give files away
            os.chown(staged, st.st_uid, st.st_gid)
    os.chmod(staged, DEFAULT_MODE if mode is None else mode)


async def _check(target: Target, staged: Path) -> None:
    command = target.check.replace("{staged}", shlex.quote(str(staged)))  # type: ignore[union-attr]
    proc = await asyncio.create_subprocess_shell(
        command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), target.check_timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise WriteError(f"{target.destination}: check timed out after {target.check_timeout:g}s: "
                         f"{target.check}") from None
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    if proc.returncode != 0:
        text = output.decode("utf-8", "replace").strip()
        raise WriteError(f"{target.destination}: check failed (exit {proc.returncode}): {target.check}"
                         + (f"\n{text}" if text else ""))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)


def _backup(dest: Path) -> None:
    """`<destination>.bak`, replaced atomically too; a hard link keeps the mode of the original."""
    bak = dest.with_name(dest.name + ".bak")
    tmp = dest.with_name(f".{dest.name}.bak.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(dest, tmp)
        os.replace(tmp, bak)
    except OSError as exc:
        raise WriteError(f"{dest}: cannot keep a backup at {bak}: {exc.strerror}") from None


def _replace(staged: Path, dest: Path) -> None:
    try:
        os.replace(staged, dest)
    except OSError as exc:
        raise WriteError(f"{dest}: cannot replace the file: {exc.strerror}") from None
    fsync_dir(dest.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
