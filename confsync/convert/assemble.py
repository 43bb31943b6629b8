"""The emitted pieces → Jinja2 text: Go's literal text escaped so Jinja2 reads it back as it is, and
Go's `{{-`/`-}}` written as Jinja2's `-` markers where Jinja2 strips exactly the same characters,
else the text written already trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass

from confsync.configtemplate import Delimiters
from confsync.convert.gotemplate import Text
from confsync.convert.values import jinja_string


@dataclass
class Tag:
    open: str  # "{%" or "{{": a block or a variable, written with the template's delimiters
    body: str
    strip_before: bool = False
    strip_after: bool = False

    def text(self, delimiters: Delimiters) -> str:
        start, end = delimiters.block if self.open == "{%" else delimiters.variable
        return f"{start}{'-' if self.strip_before else ''} {self.body} {'-' if self.strip_after else ''}{end}"


def _escape(text: str, following: str, delimiters: Delimiters) -> str:
    """Literal text as Jinja2 template data: no delimiter may start in it, nor across its end into
    `following` (what comes next in the output), and CR survives (Jinja2 would read it as LF)."""
    starts = (delimiters.variable[0], delimiters.block[0], delimiters.comment[0])
    window = max(map(len, starts))
    out: list[str] = []
    ahead = following[:window]  # the start of what is written after the character in hand
    for ch in reversed(text):
        piece = ch
        if ch == "\r" or any((ch + ahead).startswith(start) for start in starts):
            piece = f"{delimiters.variable[0]} {jinja_string(ch)} {delimiters.variable[1]}"
        out.append(piece)
        ahead = (piece + ahead)[:window]
    return "".join(reversed(out))


def _merge_texts(pieces: list[Text | Tag]) -> list[Text | Tag]:
    """Texts left side by side (a comment was dropped between them) as one: what Jinja2's `-`
    would strip is the white space around both together."""
    merged: list[Text | Tag] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if isinstance(piece, Text) and isinstance(last, Text):
            merged[-1] = Text(last.text + piece.text, last.pos, last.cut_left, piece.cut_right)
        else:
            merged.append(piece)
    return merged


def assemble(pieces: list[Text | Tag], delimiters: Delimiters) -> str:
    pieces = _merge_texts(pieces)
    texts: dict[int, str] = {}
    for i, piece in enumerate(pieces):
        if isinstance(piece, Tag):
            continue
        before = pieces[i - 1] if i else None
        after = pieces[i + 1] if i + 1 < len(pieces) else None
        prev = before if isinstance(before, Tag) else None
        nxt = after if isinstance(after, Tag) else None
        kept = piece.text
        # Jinja2's `-` strips every Unicode space (str.isspace); Go's only " \t\r\n": keep the marker
        # where the two agree, else write the text already trimmed.
        if piece.cut_left and prev is not None and not (kept[:1].isspace()):
            prev.strip_after = True
            piece_left = piece.cut_left
        else:
            piece_left = ""
        if piece.cut_right and nxt is not None and not (kept[-1:].isspace()):
            nxt.strip_before = True
            piece_right = piece.cut_right
        else:
            piece_right = ""
        # the cut white space stays raw (CR included): Jinja2's `-` strips it whole
        following = piece_right or (nxt.text(delimiters) if nxt is not None else "")
        texts[i] = piece_left + _escape(kept, following, delimiters) + piece_right
    return "".join(p.text(delimiters) if isinstance(p, Tag) else texts[i] for i, p in enumerate(pieces))
