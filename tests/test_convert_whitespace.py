"""Go's whitespace trimming, text escaping and literal printing, against Go itself, on templates
that hypothesis makes up: a converted template must render what `text/template` renders, for text
full of the characters where Go and Jinja2 disagree (CR, non-breaking space, `{`, `%`, `#`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confsync.convert.emit import convert_template
from confsync.render import Template, make_environment
from tests.helpers import build_ctrender

TEXT = st.text(alphabet=["a", " ", "\t", "\n", "\r", "\xa0", "\u2003", "{", "}", "%", "#", "é", "-"], max_size=6)
CONDITIONS = ["true", "false", "1", "0", '""', '"x"']
LITERAL = st.text(alphabet=["x", " ", "{", "%", "#", "\n", "\xa0", '"', "\\"], max_size=4)


def _text(text: str) -> str:
    """Text Go reads as text: no "{{" in it, nor a "{" right before an action."""
    while "{{" in text:
        text = text.replace("{{", "{a{")
    return text + "a" if text.endswith("{") else text


@st.composite
def templates(draw: st.DrawFn) -> str:
    out = []
    depth = 0
    for _ in range(draw(st.integers(1, 6))):
        out.append(_text(draw(TEXT)))
        left = "{{- " if draw(st.booleans()) else "{{ "
        right = " -}}" if draw(st.booleans()) else " }}"
        kind = draw(st.sampled_from(["print", "comment", "if", "end", "number", "bool"]))
        if kind == "end" and depth == 0:
            kind = "print"
        if kind == "print":
            lit = draw(LITERAL).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            out.append(f'{left}"{lit}"{right}')
        elif kind == "comment":
            out.append((left if "-" in left else "{{") + "/* c */" + (right if "-" in right else "}}"))
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
    out.append(_text(draw(TEXT)))
    out.extend("{{ end }}" for _ in range(depth))
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
    binary, snapshot = ctrender
    path = tmp_path / "t.ctmpl"
    path.write_bytes(source.encode())
    go = subprocess.run([str(binary), str(snapshot), str(path)], capture_output=True, timeout=30)
    assert go.returncode == 0, go.stderr
    text, refusals = convert_template(source)
    assert text is not None, refusals
    (tmp_path / "t.j2").write_text(text)
    result = Template(make_environment([tmp_path]), tmp_path / "t.j2", {}).render(lambda dep: None)
    assert result.text is not None, result.error
    assert result.text.encode() == go.stdout, text
