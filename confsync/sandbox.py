"""The template sandbox: Jinja2's immutable sandbox, and a budget every render runs under.

A template is code, and a render runs on the event loop: `{{ 'x'*300000000 }}`, `center(10**9)`,
two nested `range(100000)` loops or `lipsum(n=10**7)` used to take gigabytes or run for ever, with
/healthz and SIGTERM waiting behind them (issue 10, item 4). Each render now has a `Budget`
(`render:` in the config):

- wall time, `timeout`: checked at every step below, and, on the main thread, enforced by SIGALRM
  too, so even a long pure-Python filter is cut;
- steps, `max_iterations`: every loop iteration (each `{% for %}` iterates through `_iterate`, put
  there when the template is parsed) and every call (`call`);
- size, `max_output`: the rendered file, and each string or list a template builds on the way.
  What would amplify is checked *before* it runs (`*`, `**`, `%`, `~`, `+`, format widths,
  `center`/`ljust`/`indent`/`replace`/`join`/`batch`/`lipsum`…); every result after. All the
  template builds together may not pass `4 × max_output`, so memory stays bounded whatever it does.

A budget error is a template error naming the file and line; the last good file stays.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from confsync import signals
from confsync.config import RenderBudget
from confsync.sources import Functions

MAX_POWER_BITS = 65_536  # `2 ** n`: an integer this large is more than any config needs


class BudgetError(Exception):
    """A render went past its budget; the message says which limit."""


class Budget:
    def __init__(self, limits: RenderBudget, deadline: float | None = None) -> None:
        self.limits = limits
        own = time.monotonic() + limits.timeout
        self.deadline = own if deadline is None else min(own, deadline)
        self.steps = 0
        self.made = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_iterations:
            raise BudgetError(f"more than {self.limits.max_iterations} loop iterations and calls "
                              "(render.max_iterations)")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetError("the render took too long (render.timeout, or the --timeout of once/init)")

    def fits(self, size: int, what: str) -> None:
        """Before building something of about `size` characters (or 8 bytes a list item)."""
        if size > self.limits.max_output:
            raise BudgetError(f"{what} would be about {size} characters, over render.max_output "
                              f"({self.limits.max_output})")

    def add(self, value: Any, what: str) -> None:
        """After building `value`: it counts against the size limit and the total."""
        size = _size(value, self.limits.max_output)
        self.fits(size, what)
        self.count(size)

    def count(self, size: int) -> None:
        self.made += size
        if self.made > 4 * self.limits.max_output:
            raise BudgetError(f"the template built more than {4 * self.limits.max_output} characters in all "
                              "(4 × render.max_output)")


def _size(value: Any, limit: int) -> int:
    """About how much memory `value` holds, in characters (8 a container item); stops past `limit`."""
    total, pending = 0, [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 8 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 8 * len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, range):
            total += 8 * len(item)
        else:
            total += 8
    return total


# -- what is checked before it runs -------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _format_widths(fmt: str) -> int:
    """The widest field a `%` or `{}` format string asks for (`%999999999s`, `{:>999999999}`)."""
    widths = [int(n) for m in _PERCENT_SPEC.finditer(fmt) for n in m.groups() if n and n != "*"]
    with contextlib.suppress(ValueError):
        for _, _, spec, _ in string.Formatter().parse(fmt):
            widths += [int(n) for n in re.findall(r"\d+", spec or "")]
    return max(widths, default=0)


def _ints(args: Iterable[Any]) -> int:
    return max((a for a in args if isinstance(a, int) and not isinstance(a, bool)), default=0)


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _estimate(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> int:
    """The size a call to `name` (a filter, a str method or a global) could reach, before it runs."""
    value = args[0] if args else ""
    rest = list(args[1:]) + list(kwargs.values())
    base = _size(value, limit)
    if name in ("center", "ljust", "rjust", "zfill", "batch", "slice", "wordwrap", "truncate"):
        return base + _ints(rest)
    if name == "indent":
        lines = value.count("\n") + 1 if isinstance(value, str) else 0
        return base + lines * max(_ints(rest), _text_len(rest[0] if rest else ""))
    if name == "expandtabs":
        return base + (value.count("\t") if isinstance(value, str) else 0) * _ints(rest)
    if name == "replace" and isinstance(value, str):
        old, new = (rest + ["", ""])[:2]
        hits = value.count(old) if isinstance(old, str) and old else len(value) + 1
        return base + hits * _text_len(new)
    if name in ("join", "format", "format_map", "split", "splitlines", "rsplit"):
        return base + sum(_size(a, limit) for a in rest) + _format_widths(value if isinstance(value, str) else "") \
            + (8 * (_text_len(value) + 1) if name in ("split", "splitlines", "rsplit") else 0)
    if name == "lipsum":
        n, _html, _low, high = (list(args) + [5, True, 20, 100])[:4]
        n, high = kwargs.get("n", n), kwargs.get("max", high)
        return int(n) * int(high) * 12 if isinstance(n, int) and isinstance(high, int) else 0
    return 0


_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format",
                          "format_map", "split", "splitlines", "rsplit"})


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the budget of the render in progress (`budget`, None between renders)."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.budget: Budget | None = None

    # -- parse time: every loop and `~` goes through the budget --------------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Instrument().visit(super()._parse(source, name, filename))  # type: ignore[no-any-return]

    def iterate(self, iterable: Iterable[Any], literal: int) -> Iterable[Any]:
        """A loop's items, one step each; `literal` is the template text its body writes each time."""
        budget = self.budget
        return iterable if budget is None else _counted(iterable, budget, literal)

    def join_parts(self, parts: list[Any]) -> str:
        budget = self.budget
        if budget is not None:
            budget.fits(sum(_size(p, budget.limits.max_output) for p in parts), "a ~ concatenation")
        text = "".join(str(p) for p in parts)
        if budget is not None:
            budget.add(text, "a ~ concatenation")
        return text

    # -- run time -------------------------------------------------------------------------------

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = __self.budget
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        budget.step()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str) and name in _STR_METHODS:
            budget.fits(_estimate(name, (owner, *args), kwargs, budget.limits.max_output), f"str.{name}()")
        elif name == "generate_lorem_ipsum":
            budget.fits(_estimate("lipsum", args, kwargs, budget.limits.max_output), "lipsum()")
        result = super().call(__context, __obj, *args, **kwargs)
        if not isinstance(owner, Functions):  # values from sources are inputs, not built here
            budget.add(result, f"the result of {name or 'a call'}()")
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget
        if budget is not None:
            _check_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if budget is not None:
            budget.add(result, f"a {operator} operation")
        return result

    def _finalize(self, value: Any) -> Any:
        """Every `{{ ... }}`, at top level or into a `{% set %}` block or a macro."""
        if self.budget is not None:
            self.budget.add(value, "an output expression")
        return value

    def bounded_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """A filter under the budget: its size estimated before it runs, its result counted after."""
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            budget = self.budget
            if budget is None:  # constant folding at compile time: leave it to the render, budgeted
                raise nodes.Impossible()
            budget.step()
            budget.fits(_estimate(name, args[skip:], kwargs, budget.limits.max_output), f"the {name} filter")
            result = func(*args, **kwargs)
            budget.add(result, f"the {name} filter")
            return result

        return bounded

    @contextlib.contextmanager
    def running(self, budget: Budget) -> Iterator[None]:
        """Renders under `budget`; on the main thread SIGALRM cuts even a long filter at the deadline."""
        self.budget = budget
        alarm = threading.current_thread() is threading.main_thread()
        previous: Any = None
        if alarm:
            previous = signal.signal(signal.SIGALRM, functools.partial(_on_alarm, budget))
            signal.setitimer(signal.ITIMER_REAL, max(budget.deadline - time.monotonic(), 0.001))
        try:
            yield
        finally:
            self.budget = None
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


def _on_alarm(budget: Budget, signum: int, frame: FrameType | None) -> None:
    signals.consumed(signum)  # ours: the event loop, told of it too, must not report it as stray
    budget.check_time()  # raises past the deadline; a stray SIGALRM before it changes nothing


def _counted(iterable: Iterable[Any], budget: Budget, literal: int) -> Iterator[Any]:
    for item in iterable:
        budget.step()
        budget.count(literal)
        yield item


def _check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    limit = budget.limits.max_output
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(times, int) and isinstance(seq, str | bytes | list | tuple):
                budget.fits(_size(seq, limit) * max(times, 0), f"a {type(seq).__name__} multiplied by {times}")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        if right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise BudgetError(f"{left} ** {right} has more than {MAX_POWER_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        rest = right if isinstance(right, tuple) else (right,)
        budget.fits(len(left) + _format_widths(left) + _ints(rest) + sum(_size(r, limit) for r in rest),
                    "a % format")
    elif operator == "+" and isinstance(left, str | list | tuple):
        budget.fits(_size(left, limit) + _size(right, limit), "a + concatenation")


class _Instrument(NodeTransformer):
    """Every `{% for %}` iterates through `environment.iterate`, every `~` is `environment.join_parts`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        literal = sum(len(data.data) for data in nodes.Node.find_all(node, nodes.TemplateData))
        node.iter = nodes.Call(nodes.EnvironmentAttribute("iterate"), [node.iter, nodes.Const(literal)], [],
                               None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("join_parts"), [nodes.List(node.nodes, lineno=node.lineno)], [],
                          None, None, lineno=node.lineno)
