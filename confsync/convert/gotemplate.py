"""A parser for Go's text/template language, as consul-template feeds it (golang.org/pkg/text/template).

It produces a small tree that the emitter translates; every node keeps its line and column so a
refusal can point at it. Whitespace trimming (`{{-`, `-}}`) is applied here, to the text nodes, with
Go's definition of white space (space, tab, CR, LF); `cut_*` keep what was cut so the
emitter can keep the marker where Jinja2 would trim exactly the same characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GO_SPACE = " \t\r\n"
KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


class GoSyntaxError(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.line, self.col, self.message = line, col, message


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


# -- pipelines ----------------------------------------------------------------------------------


@dataclass
class Field:  # .A.B on the dot
    names: list[str]
    pos: Pos


@dataclass
class Variable:  # $x.A.B; `$` alone is the template's root
    name: str
    names: list[str]
    pos: Pos


@dataclass
class Dot:
    pos: Pos


@dataclass
class Ident:  # a function name
    name: str
    pos: Pos


@dataclass
class Literal:
    value: str | int | float | bool | None
    pos: Pos


@dataclass
class Paren:  # (pipeline).A.B
    pipe: Pipe
    names: list[str]
    pos: Pos


Arg = Field | Variable | Dot | Ident | Literal | Paren


@dataclass
class Command:
    args: list[Arg]
    pos: Pos


@dataclass
class Pipe:
    decl: list[str]  # variables declared (`$x :=`) or assigned (`$x =`)
    assign: bool  # `=` rather than `:=`
    cmds: list[Command]
    pos: Pos


# -- the template tree --------------------------------------------------------------------------


@dataclass
class Text:
    text: str
    pos: Pos
    cut_left: str = ""  # the white space a `-}}` before it cut from its start
    cut_right: str = ""  # ... and a `{{-` after it from its end


@dataclass
class Action:
    pipe: Pipe
    pos: Pos


@dataclass
class Branch:  # if / range / with
    kind: str
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None
    pos: Pos


@dataclass
class Call:  # {{ template "name" pipeline }}
    name: str
    pipe: Pipe | None
    pos: Pos


@dataclass
class Unsupported:  # parsed but never translated (break, continue)
    what: str
    pos: Pos


Node = Text | Action | Branch | Call | Unsupported


@dataclass
class Parsed:
    body: list[Node]
    defines: dict[str, list[Node]] = field(default_factory=dict)


# -- lexing -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n]+)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?))
  | (?P<variable>\$[A-Za-z_0-9]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z_0-9]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
""", re.VERBOSE)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: Pos


def _position(source: str, offset: int) -> Pos:
    line = source.count("\n", 0, offset) + 1
    return Pos(line, offset - (source.rfind("\n", 0, offset) + 1) + 1)


def _lex_action(source: str, start: int, end: int) -> list[_Tok]:
    toks: list[_Tok] = []
    i = start
    while i < end:
        m = _TOKEN.match(source, i, end)
        if not m:
            p = _position(source, i)
            raise GoSyntaxError(p.line, p.col, f"unexpected {source[i]!r} in action")
        kind = m.lastgroup or ""
        if kind != "space":
            text = m.group()
            pos = _position(source, i)
            chained = kind == "field" and toks and i > start and source[i - 1] not in GO_SPACE
            if chained and toks[-1].kind == "variable":  # `$x.A`
                toks[-1] = _Tok("variable", toks[-1].text + text, toks[-1].pos)
            elif chained and toks[-1].kind == "rparen":  # `(f x).A`
                toks.append(_Tok("chain", text, pos))
            else:
                toks.append(_Tok(kind, text, pos))
        i = m.end()
    return toks


_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
               '"': '"', "'": "'"}


def _unquote(tok: _Tok) -> str:
    if tok.kind == "raw":
        return tok.text[1:-1].replace("\r", "")  # Go drops carriage returns from raw strings
    body, out, i = tok.text[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _GO_ESCAPES:
            out.append(_GO_ESCAPES[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise GoSyntaxError(tok.pos.line, tok.pos.col, f"bad escape in {tok.text}")
            if e == "x" and int(digits, 16) > 0x7F:
                raise GoSyntaxError(tok.pos.line, tok.pos.col, "a \\x escape above 0x7f is a raw byte, not text")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise GoSyntaxError(tok.pos.line, tok.pos.col, f"unknown escape \\{e} in {tok.text}")
    return "".join(out)


def _number(tok: _Tok) -> int | float:
    text = tok.text.replace("_", "")
    try:
        return int(text, 0)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise GoSyntaxError(tok.pos.line, tok.pos.col, f"bad number {tok.text}") from None


# -- parsing ------------------------------------------------------------------------------------


class _Actions:
    """The source cut into text and actions, trimming applied."""

    def __init__(self, source: str, left: str, right: str) -> None:
        self.items: list[Text | tuple[list[_Tok], Pos]] = []
        i = 0
        trim_next = False
        while True:
            j = source.find(left, i)
            if j < 0:
                self._text(source, i, len(source), trim_next, False)
                break
            inner = j + len(left)
            trim_left = source.startswith("-", inner) and inner + 1 < len(source) and source[inner + 1] in GO_SPACE
            self._text(source, i, j, trim_next, trim_left)
            if trim_left:
                inner += 2
            # a comment: /* ... */ right after the delimiter
            k = inner
            while k < len(source) and source[k] in GO_SPACE and trim_left:
                k += 1
            if source.startswith("/*", k):
                close = source.find("*/", k + 2)
                if close < 0:
                    p = _position(source, j)
                    raise GoSyntaxError(p.line, p.col, "unclosed comment")
                after = close + 2
                trim_right = source[after:after + 1] in (" ", "\t", "\r", "\n") and \
                    source.startswith("-" + right, after + 1)
                end = after + 2 if trim_right else after
                if not source.startswith(right, end):
                    p = _position(source, j)
                    raise GoSyntaxError(p.line, p.col, "comment ends with */ right before the closing delimiter")
                i = end + len(right)
                trim_next = trim_right
                continue
            end = self._find_close(source, inner, right, j)
            trim_right = end >= 2 and source[end - 1] == "-" and source[end - 2] in GO_SPACE
            stop = end - 1 if trim_right else end
            self.items.append((_lex_action(source, inner, stop), _position(source, j)))
            i = end + len(right)
            trim_next = trim_right

    @staticmethod
    def _find_close(source: str, i: int, right: str, start: int) -> int:
        """The closing delimiter, skipping over quoted strings (they may contain it)."""
        while i < len(source):
            if source.startswith(right, i):
                return i
            c = source[i]
            if c in "\"'`":
                close = source.find(c, i + 1) if c == "`" else _quote_end(source, i)
                if close < 0:
                    break
                i = close + 1
                continue
            i += 1
        p = _position(source, start)
        raise GoSyntaxError(p.line, p.col, "unclosed action")

    def _text(self, source: str, start: int, end: int, trim_left: bool, trim_right: bool) -> None:
        text = source[start:end]
        pos = _position(source, start)
        cut_left = cut_right = ""
        if trim_left:
            stripped = text.lstrip(GO_SPACE)
            cut_left, text = text[:len(text) - len(stripped)], stripped
        if trim_right:
            stripped = text.rstrip(GO_SPACE)
            cut_right, text = text[len(stripped):], stripped
        if text or cut_left or cut_right:
            self.items.append(Text(text, pos, cut_left, cut_right))


def _quote_end(source: str, i: int) -> int:
    q = source[i]
    j = i + 1
    while j < len(source) and source[j] != "\n":
        if source[j] == "\\":
            j += 2
            continue
        if source[j] == q:
            return j
        j += 1
    return -1


class _Parser:
    def __init__(self, items: list[Text | tuple[list[_Tok], Pos]]) -> None:
        self.items = items
        self.i = 0
        self.defines: dict[str, list[Node]] = {}

    def parse(self) -> Parsed:
        body, stop = self._list(top=True)
        if stop is not None:
            toks, pos = stop
            raise GoSyntaxError(pos.line, pos.col, f"unexpected {{{{{toks[0].text}}}}}")
        return Parsed(body, self.defines)

    def _list(self, top: bool = False) -> tuple[list[Node], tuple[list[_Tok], Pos] | None]:
        """Nodes up to an `end` or `else` (returned, not consumed past)."""
        nodes: list[Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, Text):
                nodes.append(item)
                continue
            toks, pos = item
            if not toks:
                raise GoSyntaxError(pos.line, pos.col, "missing value for command")
            word = toks[0].text if toks[0].kind == "ident" else ""
            if word in ("end", "else"):
                return nodes, item
            if word in ("if", "range", "with"):
                nodes.append(self._branch(word, toks[1:], pos))
            elif word in ("define", "block"):
                name_tok = toks[1] if len(toks) > 1 else None
                if name_tok is None or name_tok.kind not in ("string", "raw"):
                    raise GoSyntaxError(pos.line, pos.col, f"{word} needs a quoted name")
                name = _unquote(name_tok)
                body, stop = self._list()
                self._expect_end(stop, pos, word)
                self.defines[name] = body
                if word == "block":
                    nodes.append(Call(name, self._pipe(toks[2:], pos) if len(toks) > 2 else None, pos))
                elif not top:
                    raise GoSyntaxError(pos.line, pos.col, "define is allowed only at the top level")
            elif word == "template":
                name_tok = toks[1] if len(toks) > 1 else None
                if name_tok is None or name_tok.kind not in ("string", "raw"):
                    raise GoSyntaxError(pos.line, pos.col, "template needs a quoted name")
                nodes.append(Call(_unquote(name_tok), self._pipe(toks[2:], pos) if len(toks) > 2 else None, pos))
            elif word in ("break", "continue"):
                nodes.append(Unsupported(word, pos))
            else:
                nodes.append(Action(self._pipe(toks, pos), pos))
        return nodes, None

    @staticmethod
    def _expect_end(stop: tuple[list[_Tok], Pos] | None, pos: Pos, what: str) -> None:
        if stop is None or stop[0][0].text != "end" or len(stop[0]) != 1:
            raise GoSyntaxError(pos.line, pos.col, f"{what} without a matching end")

    def _branch(self, kind: str, toks: list[_Tok], pos: Pos) -> Branch:
        pipe = self._pipe(toks, pos)
        body, stop = self._list()
        else_body: list[Node] | None = None
        if stop is not None and stop[0][0].text == "else":
            rest = stop[0][1:]
            if rest and rest[0].text in ("if", "with") and rest[0].kind == "ident":
                # `else if x` is `else` + a nested `if` sharing this branch's `end`
                if rest[0].text != kind:
                    raise GoSyntaxError(stop[1].line, stop[1].col, f"else {rest[0].text} inside {kind}")
                else_body = [self._branch(kind, rest[1:], stop[1])]
                return Branch(kind, pipe, body, else_body, pos)
            if rest:
                raise GoSyntaxError(stop[1].line, stop[1].col, "unexpected words after else")
            else_body, stop = self._list()
        self._expect_end(stop, pos, kind)
        return Branch(kind, pipe, body, else_body, pos)

    def _pipe(self, toks: list[_Tok], pos: Pos) -> Pipe:
        decl: list[str] = []
        assign = False
        # `$x :=`, `$x =`, `$i, $e :=`
        j = 0
        names: list[str] = []
        while j < len(toks) and toks[j].kind == "variable":
            names.append(toks[j].text)
            if j + 1 < len(toks) and toks[j + 1].kind == "comma":
                j += 2
                continue
            j += 1
            break
        if names and j < len(toks) and toks[j].kind in ("declare", "assign"):
            decl, assign = names, toks[j].kind == "assign"
            toks = toks[j + 1:]
        if not toks:
            raise GoSyntaxError(pos.line, pos.col, "missing value in pipeline")
        cmds: list[Command] = []
        current: list[_Tok] = []
        depth = 0
        for tok in toks:
            if tok.kind == "pipe" and depth == 0:
                cmds.append(self._command(current, pos))
                current = []
                continue
            depth += {"lparen": 1, "rparen": -1}.get(tok.kind, 0)
            current.append(tok)
        cmds.append(self._command(current, pos))
        return Pipe(decl, assign, cmds, toks[0].pos)

    def _command(self, toks: list[_Tok], pos: Pos) -> Command:
        if not toks:
            raise GoSyntaxError(pos.line, pos.col, "empty command in pipeline")
        args: list[Arg] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok.kind == "lparen":
                depth, j = 1, i + 1
                while j < len(toks) and depth:
                    depth += {"lparen": 1, "rparen": -1}.get(toks[j].kind, 0)
                    j += 1
                if depth:
                    raise GoSyntaxError(tok.pos.line, tok.pos.col, "unclosed (")
                inner = self._pipe(toks[i + 1:j - 1], tok.pos)
                chain: list[str] = []
                if j < len(toks) and toks[j].kind == "chain":
                    chain = toks[j].text[1:].split(".")
                    j += 1
                args.append(Paren(inner, chain, tok.pos))
                i = j
                continue
            args.append(_arg(tok))
            i += 1
        return Command(args, toks[0].pos)


def _arg(tok: _Tok) -> Arg:
    p = tok.pos
    if tok.kind in ("string", "raw"):
        return Literal(_unquote(tok), p)
    if tok.kind == "char":
        text = _unquote(_Tok("string", '"' + tok.text[1:-1] + '"', p))
        if len(text) != 1:
            raise GoSyntaxError(p.line, p.col, f"bad character constant {tok.text}")
        return Literal(ord(text), p)
    if tok.kind == "number":
        return Literal(_number(tok), p)
    if tok.kind == "field":
        return Field(tok.text[1:].split("."), p)
    if tok.kind == "variable":
        name, _, rest = tok.text.partition(".")
        return Variable(name, rest.split(".") if rest else [], p)
    if tok.kind == "dot":
        return Dot(p)
    if tok.kind == "ident":
        if tok.text in ("true", "false"):
            return Literal(tok.text == "true", p)
        if tok.text == "nil":
            return Literal(None, p)
        return Ident(tok.text, p)
    raise GoSyntaxError(p.line, p.col, f"unexpected {tok.text!r}")


def parse(source: str, left: str = "{{", right: str = "}}") -> Parsed:
    return _Parser(_Actions(source, left, right).items).parse()
