"""Run an operator's command (a reload, a check of a staged file) and wait for the *process*.

Waiting for the end of its output instead would wait for every background job it started
(`sleep 5 & echo started` holds the pipe open for 5 s after the shell has exited: issue 10), so
the output is read as it comes and whatever is still in the pipe when the process exits is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

_KEEP = 4096  # bytes of output kept: only its first line is ever shown


@dataclass(frozen=True)
class Finished:
    returncode: int
    output: bytes  # the start of stdout and stderr together

    @property
    def first_line(self) -> str:
        lines = self.output.decode("utf-8", "replace").strip().splitlines()
        return lines[0][:200] if lines else ""


async def run(command: str | Sequence[str]) -> Finished:
    """`command` as a string runs under /bin/sh, as a list as is, in a session of its own.

    Raises OSError if it cannot start. Cancelling (a timeout around it) kills its whole process
    group, background jobs included.
    """
    read_fd, write_fd = os.pipe()
    try:
        options = {"stdin": asyncio.subprocess.DEVNULL, "stdout": write_fd, "stderr": write_fd,
                   "start_new_session": True}
        if isinstance(command, str):
            proc = await asyncio.create_subprocess_shell(command, **options)  # type: ignore[arg-type]
        else:
            proc = await asyncio.create_subprocess_exec(*command, **options)  # type: ignore[arg-type]
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # from here on only the command (and its children) hold it
    os.set_blocking(read_fd, False)
    kept = bytearray()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_fd, 65536):
                kept.extend(chunk[: _KEEP - len(kept)])
            loop.remove_reader(read_fd)  # end of output: every writer has closed it

    loop.add_reader(read_fd, drain)
    try:
        await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    finally:
        drain()  # what it wrote just before it exited
        loop.remove_reader(read_fd)
        os.close(read_fd)
    return Finished(proc.returncode or 0, bytes(kept))
