"""Go's whitespace trimming, text escaping and literal printing, against Go itself, on templates
that hypothesis makes up: a converted template must render what `text/template` renders, for text
full of the characters where Go and Jinja2 disagree (CR, non-breaking space, `{`, `%`, `#`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confsync.convert.emit import convert_template, jinja_delimiters
from confsync.render import Template, make_environment
from tests.helpers import build_ctrender

TEXT = st.text(alphabet=["a", " ", "\t", "\n", "\r", "\xa0", "\u2003", "{", "}", "%", "#", "é", "-", "[", "]"],
               max_size=6)
CONDITIONS = ["true", "false", "1", "0", '""', '"x"']
LITERAL = st.text(alphabet=["x", " ", "{", "%", "#", "\n", "\xa0", '"', "\\"], max_size=4)


def _text(text: str, left: str) -> str:
    """Text Go reads as text: no `left` delimiter in it, nor its first character right before an action."""
    while left in text:
        text = text.replace(left, left[0] + "a" + left[1:])
    return text + "a" if text.endswith(left[0]) else text


@st.composite
def templates(draw: st.DrawFn, delims: tuple[str, str] = ("{{", "}}")) -> str:
    """A Go template written with `delims`."""
    opening, closing = delims
    out = []
    depth = 0
    for _ in range(draw(st.integers(1, 6))):
        out.append(_text(draw(TEXT), opening))
        left = f"{opening}- " if draw(st.booleans()) else f"{opening} "
        right = f" -{closing}" if draw(st.booleans()) else f" {closing}"
        kind = draw(st.sampled_from(["print", "comment", "if", "end", "number", "bool"]))
        if kind == "end" and depth == 0:
            kind = "print"
        if kind == "print":
            lit = draw(LITERAL).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            out.append(f'{left}"{lit}"{right}')
        elif kind == "comment":
            out.append((left if "-" in left else opening) + "/* c */" + (right if "-" in right else closing))
        elif kind == "if":
            out.append(left + "if " + draw(st.sampled_from(CONDITIONS)) + right)
            depth += 1
        elif kind == "end":
            out.append(f"{left}end{right}")
            depth -= 1
        elif kind == "number":
            out.append(f"{left}{draw(st.integers(-1000, 1000))}{right}")
        else:
            out.append(f"{left}{draw(st.sampled_from(['true', 'false']))}{right}")
    out.append(_text(draw(TEXT), opening))
    out.extend(f"{opening} end {closing}" for _ in range(depth))
    return "".join(out)


@pytest.fixture(scope="module")
def ctrender(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ws")
    snapshot = tmp / "empty.json"
    snapshot.write_text("{}")
    return build_ctrender(tmp), snapshot


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=templates())
def test_trimming_and_text_render_as_go_does(ctrender: tuple[Path, Path], tmp_path: Path, source: str) -> None:
    _same_as_go(ctrender, tmp_path, source)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=templates(("[[", "]]")))
def test_with_other_delimiters_text_and_trimming_render_as_go_does(ctrender: tuple[Path, Path], tmp_path: Path,
                                                                   source: str) -> None:
    """The Jinja2 template keeps `[[ ]]`: `{{`, `{%` and `{#` in the text stay as they are, and a `[`
    that would start a delimiter with what follows it is escaped."""
    _same_as_go(ctrender, tmp_path, source, ("[[", "]]"))


def _same_as_go(ctrender: tuple[Path, Path], tmp_path: Path, source: str,
                delims: tuple[str, str] = ("{{", "}}")) -> None:
    binary, snapshot = ctrender
    path = tmp_path / "t.ctmpl"
    path.write_bytes(source.encode())
    go = subprocess.run([str(binary), str(snapshot), str(path), *delims], capture_output=True, timeout=30)
    assert go.returncode == 0, go.stderr
    text, refusals = convert_template(source, *delims)
    assert text is not None, refusals
    (tmp_path / "t.j2").write_text(text)
    env = make_environment([tmp_path], delimiters=jinja_delimiters(*delims))
    result = Template(env, tmp_path / "t.j2", {}).render(lambda dep: None)
    assert result.text is not None, result.error
    assert result.text.encode() == go.stdout, text
