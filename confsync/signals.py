"""What each signal does to confsync: none but SIGKILL ends it without its clean stop (issue 10
item 6, issue 11 item 7). The table is documented in docs/operations.md#signals.

    action   signals
    stop     SIGTERM, SIGINT, SIGQUIT, SIGABRT, SIGXCPU   the clean stop: the write in flight finishes
    reload   SIGHUP                                       `run` re-reads its config file
    dump     SIGUSR1                                      log one line of state per template and source
    ignore   SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO (= SIGPOLL), SIGPWR, SIGSYS, SIGSTKFLT,
             SIGTRAP, SIGXFSZ, SIGRTMIN…SIGRTMAX          logged, nothing else
    SIGPIPE  stays ignored as Python starts it (a write to a closed pipe fails with EPIPE instead)

Faults of the process itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE) keep their default: a handler would
return to the faulting instruction and loop on it. Handlers, not SIG_IGN, so that programs confsync
starts (reload and check commands) get their signals' defaults back at exec.

`hold()` covers start-up (imports, config load) until a mode `capture`s the signals on its event
loop: a stop signal then ends the process at once (there is nothing to stop cleanly yet); any other
is remembered and handled as soon as `capture` begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Literal

log = logging.getLogger(__name__)

Action = Literal["stop", "reload", "dump", "ignore"]


def _table() -> dict[int, Action]:
    names: dict[str, Action] = {
        "SIGTERM": "stop", "SIGINT": "stop", "SIGQUIT": "stop", "SIGABRT": "stop", "SIGXCPU": "stop",
        "SIGHUP": "reload",
        "SIGUSR1": "dump",
        "SIGUSR2": "ignore", "SIGALRM": "ignore", "SIGVTALRM": "ignore", "SIGPROF": "ignore",
        "SIGIO": "ignore", "SIGPWR": "ignore", "SIGSYS": "ignore", "SIGSTKFLT": "ignore",
        "SIGTRAP": "ignore", "SIGXFSZ": "ignore",
    }
    table = {int(getattr(signal, name)): action for name, action in names.items() if hasattr(signal, name)}
    if hasattr(signal, "SIGRTMIN"):
        table.update(dict.fromkeys(range(signal.SIGRTMIN, signal.SIGRTMAX + 1), "ignore"))
    return table


TABLE: dict[int, Action] = _table()

_held: list[int] = []
_consumed: dict[int, int] = {}  # signum → deliveries a handler of confsync's own already acted on


def consumed(signum: int) -> None:
    """A signal handled where it arrived (the render budget's SIGALRM): the event loop, which
    hears of every signal through its wakeup fd, then passes over it silently."""
    _consumed[signum] = _consumed.get(signum, 0) + 1


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


class Stopped(BaseException):
    """A stop signal arrived before the event loop could handle it; ends the process with 128+signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(name(signum))
        self.signum = signum


def _early(signum: int, frame: FrameType | None) -> None:
    if TABLE[signum] == "stop":
        raise Stopped(signum)
    _held.append(signum)


def hold() -> None:
    """From the first line of `main`: no signal of the table may end the process uncleanly."""
    for signum in TABLE:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, _early)


@contextlib.contextmanager
def capture(handlers: Mapping[Action, Callable[[int], None]],
            overrides: Mapping[int, Callable[[int], None]] | None = None) -> Iterator[None]:
    """Handle every signal of the table on the running loop: `handlers[action](signum)`.

    An action without a handler is logged and ignored. `overrides` handle single signals their own
    way, inside the table or not (`confsync exec` forwards SIGUSR1, SIGQUIT, SIGWINCH… to the app).
    The handlers found before come back afterwards.
    """
    loop = asyncio.get_running_loop()
    overrides = overrides or {}

    def dispatch(signum: int) -> None:
        if _consumed.get(signum):
            _consumed[signum] -= 1
            return
        if signum in overrides:
            overrides[signum](signum)
            return
        action = TABLE[signum]
        handler = handlers.get(action)
        if handler is None:
            log.warning("%s received: ignored", name(signum), extra={"event": "signal", "reason": action})
            return
        log.info("%s received: %s", name(signum), action, extra={"event": "signal", "reason": action})
        handler(signum)

    previous = {}
    for signum in {*TABLE, *overrides}:
        previous[signum] = signal.getsignal(signum)
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            loop.add_signal_handler(signum, dispatch, signum)
    held, _held[:] = list(_held), []
    for signum in held:
        loop.call_soon(dispatch, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(signum, handler)
