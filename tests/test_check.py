"""`confsync check` as a process on a corpus of broken configs (issue 11): each is refused with exit 2
and a message naming the file:line or the field path at fault; all problems of a config in one run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import cli_env, confsync

KV = "sources:\n  kv: {type: files, root: ./data}\n"
ONE = KV + "templates:\n  - {source: t.j2, destination: out/t.conf}\n"


def with_reloader(**fields: str) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return (KV + "templates:\n  - {source: t.j2, destination: out/t.conf, reload: app}\n"
            + f"reloaders:\n  app: {{{body}}}\n")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

# (config, template text, what the message must say)
CORPUS = {
    "undefined source": (ONE, '{{ kv.key("a") }}\n{{ kvv.key("a") }}\n', "t.j2:2: 'kvv' is undefined"),
    "missing include": (ONE, '{% include "nope.j2" %}\n', "t.j2:1: template 'nope.j2' not found"),
    "missing extends": (ONE, '{% extends "base.j2" %}\n', "t.j2:1: template 'base.j2' not found"),
    "missing import": (ONE, '\n{% import "macros.j2" as m %}\n', "t.j2:2: template 'macros.j2' not found"),
    "undefined name in an include": (ONE, '{% include "inc.j2" %}\n', "inc.j2:3: 'nosuch' is undefined"),
    "syntax error": (ONE, "ok\n{% if %}\n", "t.j2:2: syntax error"),
    "unknown function": (ONE, '{{ kv.kye("a") }}\n', "t.j2:1: kv.kye: no such function"),
    "malformed key name": (ONE, '{{ kv.key("a/./b") }}\n', "t.j2:1: kv.key('a/./b'): malformed key name"),
    "empty config file": ("", "", "the file is empty"),
    "no template": (KV, "", "templates: no template configured"),
    "reload url port out of range": (with_reloader(url='"http://127.0.0.1:99999/"'), "x", "reloaders.app.url:"),
    "reload url broken": (with_reloader(url='"http://[::1"'), "x", "is not a valid URL"),
    "reload url scheme": (with_reloader(url='"ftp://host/"'), "x", "expected http://host"),
    "reload method": (with_reloader(url='"http://127.0.0.1:1/"', method='"Ü"'), "x", "method: expected an HTTP"),
    "SIG_DFL": (with_reloader(pid_file="app.pid", signal="SIG_DFL"), "x", "unknown signal 'SIG_DFL'"),
    "SIG_IGN": (with_reloader(pid_file="app.pid", signal="SIG_IGN"), "x", "unknown signal 'SIG_IGN'"),
    "signal typo": (with_reloader(pid_file="app.pid", signal="SIGHUPP"), "x", "unknown signal 'SIGHUPP'"),
    "pid file empty": (with_reloader(pid_file='""'), "x", "reloaders.app.pid_file: expected a path"),
    "command missing": (with_reloader(command="[/nonexistent/reload-app]"), "x", "not found"),
    "command empty": (with_reloader(command='"  "'), "x", "command: empty"),
    "timeout 0": (with_reloader(pid_file="app.pid", timeout="0"), "x", "reloaders.app.timeout: must be more than 0"),
    "retries negative": (with_reloader(pid_file="app.pid", retries="-1"), "x", "reloaders.app.retries"),
    "splay .inf": (with_reloader(pid_file="app.pid", splay=".inf"), "x", "reloaders.app.splay: a duration must be"),
    "wait .nan": (ONE + "wait: {min: .nan}\n", "x", "wait.min: a duration must be"),
    "wait .inf": (ONE + "wait: {max: .inf}\n", "x", "wait.max: a duration must be"),
    "listen": (ONE + "listen: abc\n", "x", "listen: expected host:port"),
    "listen port": (ONE + "listen: 127.0.0.1:99999\n", "x", "listen: expected host:port"),
    "log level": (ONE + "log_level: verbose\n", "x", "log_level: expected one of"),
    "perms setuid": (ONE.replace("out/t.conf", 'out/t.conf, perms: "4755"'), "x", "setuid"),
    "perms 7777": (ONE.replace("out/t.conf", 'out/t.conf, perms: "7777"'), "x", "setuid"),
    "perms world-writable": (ONE.replace("out/t.conf", 'out/t.conf, perms: "0666"'), "x", "every user write"),
    "min_bytes negative": (ONE.replace("out/t.conf", "out/t.conf, min_bytes: -5"), "x", "templates[0].min_bytes"),
    "duplicate key": (ONE + "templates: []\n", "x", "confsync.yaml:5: duplicate key 'templates' (first at line 3)"),
    "duplicate nested key": (KV + "templates:\n  - source: t.j2\n    source: u.j2\n    destination: o\n", "x",
                             "confsync.yaml:5: duplicate key 'source'"),
    "destination is the source": (KV + "templates:\n  - {source: t.j2, destination: t.j2}\n", "x",
                                  "templates[0].destination: is the template's own source file"),
    "destination is the config file": (KV + "templates:\n  - {contents: x, destination: confsync.yaml}\n", "x",
                                       "templates[0].destination: is the config file itself"),
    "include out of the folder": (ONE, '{% include "link.j2" %}', "t.j2:1: refused: 'link.j2' leads out of the "
                                  "template folder through a symlink"),
    "destination in a files root": (KV + "templates:\n  - {source: t.j2, destination: data/t.conf}\n", "x",
                                    "is inside the root of source 'kv'"),
    "alias bomb": (BOMB, "x", "a YAML alias bomb"),
    "YAML error names the file": (ONE + "wait: [\n", "x", 'in "{dir}/confsync.yaml", line'),
    "unknown key": (ONE + "waitt: 1s\n", "x", "waitt: unknown key"),
    "source timeout 0": ("sources:\n  kv: {type: files, root: ./data}\n  e: {type: etcd, timeout: 0}\n"
                         + ONE[len(KV):], "x", "sources.e.timeout: must be more than 0"),
    "source type": ("sources:\n  kv: {type: filez, root: .}\n" + ONE[len(KV):], "x", "sources.kv.type: unknown"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_check_refuses_a_broken_config(tmp_path, case):
    config, text, expected = CORPUS[case]
    (tmp_path / "data").mkdir()
    (tmp_path / "t.j2").write_text(text)
    (tmp_path / "inc.j2").write_text('{{ kv.key("a") }}\n\n{{ nosuch }}\n')
    (tmp_path / "link.j2").symlink_to("/etc/passwd")
    (tmp_path / "confsync.yaml").write_text(config)
    result = confsync("check", "-c", str(tmp_path / "confsync.yaml"), timeout=120)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert expected.format(dir=tmp_path) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "<unicode string>" not in result.stderr
    assert result.stderr.count("\n") < 20, result.stderr  # one line per problem, not a dump


def test_check_reports_every_problem_in_one_run(tmp_path):
    (tmp_path / "t.j2").write_text("x")
    (tmp_path / "confsync.yaml").write_text(textwrap.dedent("""
        sources:
          kv: {type: files, root: ./data}
          bad: {type: nosuch}
        templates:
          - {source: t.j2, destination: out/a.conf, perms: "4755", wait: {min: .nan}}
          - {source: t.j2, destination: out/b.conf, reload: app}
        reloaders:
          app: {url: "http://127.0.0.1:99999/", timeout: 0}
        listen: abc
        log_format: xml
    """))
    result = confsync("check", "-c", str(tmp_path / "confsync.yaml"))
    assert result.returncode == 2
    for field in ("sources.bad.type", "templates[0].perms", "templates[0].wait.min", "reloaders.app.timeout",
                  "reloaders.app.url:", "listen:", "log_format:"):
        assert field in result.stderr, (field, result.stderr)


def test_check_reports_every_template_problem_in_one_run(tmp_path):
    (tmp_path / "a.j2").write_text('{{ kvv.key("x") }}\n{% include "gone.j2" %}\n')
    (tmp_path / "b.j2").write_text("{% for %}\n")
    (tmp_path / "confsync.yaml").write_text(KV + "templates:\n  - {source: a.j2, destination: out/a}\n"
                                            "  - {source: b.j2, destination: out/b}\n")
    (tmp_path / "data").mkdir()
    result = confsync("check", "-c", str(tmp_path / "confsync.yaml"))
    assert result.returncode == 2
    assert "a.j2:1: 'kvv' is undefined" in result.stderr
    assert "a.j2:2: template 'gone.j2' not found" in result.stderr
    assert "b.j2:1: syntax error" in result.stderr


def test_check_accepts_a_good_config(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "base.j2").write_text("{% block body %}{% endblock %}\n")
    (tmp_path / "m.j2").write_text("{% macro up(x) %}{{ x | upper }}{% endmacro %}\n")
    (tmp_path / "t.j2").write_text(textwrap.dedent("""\
        {% extends "base.j2" %}
        {% import "m.j2" as m %}
        {% block body %}{% for k, v in kv.tree("app").items() %}{{ loop.index }}{{ m.up(k) }}{{ v }}
        {% endfor %}{{ env("HOME") }}{{ range(3) | list }}{% set x = 1 %}{{ x }}{% endblock %}
    """))
    (tmp_path / "confsync.yaml").write_text(ONE + "log_level: DEBUG\nlisten: 127.0.0.1:9101\n")
    result = confsync("check", "-c", str(tmp_path / "confsync.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok (1 template(s))" in result.stdout


def test_a_malformed_key_name_is_a_template_error_not_missing_data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "t.j2").write_text('{% set k = "a/./b" %}{{ kv.key(k) }}\n')
    (tmp_path / "confsync.yaml").write_text(ONE)
    result = confsync("once", "-c", str(tmp_path / "confsync.yaml"), "--timeout", "5s")
    assert result.returncode == 1, result.stderr
    assert "malformed key name" in result.stderr


@pytest.mark.parametrize("kind, extra", [("vault", "vault"), ("consul", "consul"), ("zookeeper", "zookeeper")])
@pytest.mark.parametrize("command", ["check", "once", "run"])
def test_a_missing_client_names_the_extra(tmp_path, kind, extra, command):
    """As in `pip install confsync` without extras: the client module cannot be imported."""
    module = {"vault": "hvac", "consul": "consul", "zookeeper": "kazoo"}[kind]
    (tmp_path / "t.j2").write_text("x")
    (tmp_path / "confsync.yaml").write_text(f"sources:\n  s: {{type: {kind}}}\n"
                                            "templates:\n  - {source: t.j2, destination: out/t}\n")
    hide = textwrap.dedent(f"""
        import sys
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == {module!r}:
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        sys.argv = ["confsync", {command!r}, "-c", {str(tmp_path / "confsync.yaml")!r}]
        from confsync.cli import main
        main()
    """)
    result = subprocess.run([sys.executable, "-c", hide], env=cli_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"pip install 'confsync[{extra}]'" in result.stderr
    assert "sources.s.type" in result.stderr
    assert "Traceback" not in result.stderr
