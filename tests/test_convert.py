"""`confsync convert` as a process: refusals with file:line:column, the partial report and exit code,
and the config mapping (HCL and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from confsync import filters_go
from tests.helpers import confsync


def _convert(tmp_path: Path, templates: dict[str, str], extra: str = "") -> tuple[int, str, Path]:
    blocks = [extra]
    for name, text in templates.items():
        (tmp_path / name).write_text(text)
        blocks.append(f'template {{\n  source = "{tmp_path / name}"\n  destination = "{tmp_path / "out" / name}"\n}}')
    (tmp_path / "ct.hcl").write_text("\n".join(blocks) + "\n")
    result = confsync("convert", str(tmp_path / "ct.hcl"), "-o", str(tmp_path / "conv"))
    return result.returncode, result.stdout + result.stderr, tmp_path / "conv"


@pytest.mark.parametrize(("text", "where", "reason"), [
    ('{{ plugin "x" }}', "1:4", "plugin: runs a program"),
    ('a\n{{ writeToFile "/etc/x" "y" "" "" }}', "2:4", "writeToFile"),
    ('{{ frobnicate "x" }}', "1:4", "unknown function 'frobnicate'"),
    ('{{ timestamp }}', "1:4", "timestamp: changes at every render"),
    ('{{ range service "web" }}{{ .Namespace }}{{ end }}', "1:29", ".Namespace of a service: translated are"),
    ('{{ with secret "secret/data/x" }}{{ .LeaseID }}{{ end }}', "1:37", ".LeaseID of a secret"),
    ('{{ with secret "secret/x" }}{{ .Data.data.y }}{{ end }}', "1:32", "write a KV v2 path as mount/data/"),
    ('{{ tree "a" }}', "1:1", "printing a kvlist"),
    ('{{ printf "%q" 5 }}', "1:4", "%q of a int"),
    ('{{ printf "%05s" "x" }}', "1:4", "flags of %05s differ"),
    ('{{ eq 1 "1" }}', "1:4", "eq of a int and a str"),
    ('{{ range $i := service "a" }}{{ break }}{{ end }}', "1:30", "loop controls"),
    ('{{ if }}', "1:1", "syntax error"),
    ('{{ service "web|healthy" }}', "1:4", "unknown health state 'healthy'"),
    ('{{ service "web?ns=a" }}', "1:4", "?ns=, ?partition= and ?peer= are not translated"),
    ('{{ key "app/" }}', "1:4", "confsync strips every leading and trailing /"),
    ('{{ tree "//app" }}', "1:4", "consul-template one leading /"),
    ('{{ key 5 }}', "1:4", "key's path: expects str"),
    ('{{ executeTemplate (env "T") }}', "1:4", "executeTemplate's name must be a quoted string literal"),
    ('{{ indent (add 1 1) "x" }}', "1:4", "an int64, which Go refuses for an int"),
    ('{{ key "a?ns=x" }}', "1:4", "?ns= and ?partition= are not translated"),
    ('{{ range caRoots }}{{ .NotBefore }}{{ end }}', "1:23", ".NotBefore of a CA root: translated are ID"),
    ('{{ range secrets "kv1" }}{{ with secret (printf "kv1/%s" .) }}{{ .Data.x }}{{ end }}{{ end }}', "1:66",
     "whether it is KV v2 (.Data.data) cannot be told"),
])
def test_refusals_name_file_line_column_and_reason(tmp_path: Path, text: str, where: str, reason: str) -> None:
    code, out, conv = _convert(tmp_path, {"bad.ctmpl": text, "good.ctmpl": '{{ key "a" }}\n'})
    assert code == 1
    assert "PARTIAL" in out
    assert f"{tmp_path / 'bad.ctmpl'}:{where}: " in out and reason in out, out
    assert not (conv / "templates" / "bad.j2").exists()
    assert (conv / "templates" / "good.j2").read_text() == '{{ consul.key("a") }}\n'
    config = yaml.safe_load((conv / "confsync.yaml").read_text())
    assert [t["source"] for t in config["templates"]] == ["templates/good.j2"]
    assert (conv / "convert-report.txt").read_text().count("REFUSED") == 1


@pytest.mark.parametrize(("setting", "expected"), [
    ("", {"consistency": "stale", "max_stale": "2s"}),  # consul-template's DefaultMaxStale
    ('max_stale = "0s"', {}),  # 0: only the leader answers
])
def test_max_stale_maps_as_consul_template_applies_it(tmp_path: Path, setting: str, expected: dict[str, str]) -> None:
    code, out, conv = _convert(tmp_path, {"a.ctmpl": '{{ key "a" }}\n'},
                               'consul {\n  address = "127.0.0.1:8500"\n}\n' + setting)
    assert code == 0, out
    assert yaml.safe_load((conv / "confsync.yaml").read_text())["sources"]["consul"] == {
        "type": "consul", "address": "127.0.0.1:8500", **expected}


def test_config_blocks_map_to_confsync(tmp_path: Path) -> None:
    (tmp_path / "a.ctmpl").write_text('{{ key "x" }}')
    (tmp_path / "ct.hcl").write_text(f'''
consul {{
  address = "127.0.0.1:8500"
  namespace = "team-a"
  token = "do-not-copy"
}}
vault {{
  address = "http://127.0.0.1:8200"
  renew_token = true
}}
wait {{
  min = "2s"
  max = "10s"
}}
max_stale = "10m"
pid_file = "{tmp_path / 'ct.pid'}"
template {{
  source = "{tmp_path / 'a.ctmpl'}"
  destination = "{tmp_path / 'out/a'}"
  perms = 0640
  backup = true
  command = "nginx -s reload"
  command_timeout = "30s"
  wait = "1s:5s"
}}
template {{
  contents = "{{{{ key \\"y\\" }}}}"
  destination = "{tmp_path / 'out/b'}"
  command = "nginx -s reload"
  command_timeout = "30s"
}}
''')
    result = confsync("convert", str(tmp_path / "ct.hcl"), "-o", str(tmp_path / "conv"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "conv" / "confsync.yaml").read_text()
    assert "do-not-copy" not in text
    config = yaml.safe_load(text)
    assert config["sources"]["consul"] == {"type": "consul", "address": "127.0.0.1:8500", "consistency": "stale",
                                           "max_stale": "10m", "namespace": "team-a"}
    assert config["sources"]["vault"] == {"type": "vault", "address": "http://127.0.0.1:8200"}
    assert config["wait"] == {"min": "2s", "max": "10s"}
    assert config["pid_file"] == str(tmp_path / "ct.pid")
    first, second = config["templates"]
    assert first["perms"] == "0640" and first["backup"] is True and first["wait"] == {"min": "1s", "max": "5s"}
    assert first["reload"] == second["reload"] == "nginx"  # one reloader for one command
    assert config["reloaders"] == {"nginx": {"command": "nginx -s reload", "timeout": "30s"}}
    assert second["contents"] == '{{ consul.key("y") }}' and "source" not in second  # inline stays inline
    check = confsync("check", "-c", str(tmp_path / "conv" / "confsync.yaml"))
    assert check.returncode == 0, check.stderr


def test_json_config_and_exec_refused(tmp_path: Path) -> None:
    (tmp_path / "ct.json").write_text(json.dumps({
        "exec": {"command": "app"},
        "vault": {"ssl": {"ca_cert": "/ca.pem", "server_name": "vault.internal"}},
        "template": [{"contents": "{{ env \"HOME\" }}", "destination": str(tmp_path / "out")}]}))
    result = confsync("convert", str(tmp_path / "ct.json"), "-o", str(tmp_path / "conv"))
    assert result.returncode == 1
    assert "exec: not translated: write the `exec:` section" in result.stdout
    assert "vault.ssl.server_name: not translated" in result.stdout
    config = yaml.safe_load((tmp_path / "conv" / "confsync.yaml").read_text())
    assert config["templates"][0]["contents"] == '{{ env("HOME", "") }}'


def test_delimiters_inline_contents_and_owner_are_translated(tmp_path: Path) -> None:
    """The file's own `{{ }}` stays as written: the Jinja2 template keeps consul-template's delimiters."""
    (tmp_path / "rules.ctmpl").write_text('up [[ if keyExists "a" ]]yes[[ end ]]\n')
    (tmp_path / "ct.hcl").write_text(f'''
template {{
  contents = "x: {{{{ $labels.x }}}} {{% raw %}} {{# c #}}\\nedge [ [[- key \\"a\\" ]]\\n[[ key \\"b\\" ]]\\n"
  left_delimiter = "[["
  right_delimiter = "]]"
  destination = "{tmp_path / 'out/inline'}"
  user = "daemon"
  group = "4321"
}}
template {{
  source = "{tmp_path / 'rules.ctmpl'}"
  destination = "{tmp_path / 'out/rules'}"
  left_delimiter = "[["
  right_delimiter = "]]"
  uid = 4242
  gid = 7
}}
''')
    result = confsync("convert", str(tmp_path / "ct.hcl"), "-o", str(tmp_path / "conv"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "conv" / "confsync.yaml").read_text()
    assert "- contents: |\n    x: {{ $labels.x }}" in text  # a block, as a person writes it
    inline, rules = yaml.safe_load(text)["templates"]
    delimiters = {"variable": ["[[", "]]"], "block": ["[[%", "%]]"], "comment": ["[[#", "#]]"]}
    assert inline == {"contents": 'x: {{ $labels.x }} {% raw %} {# c #}\nedge [ [[- consul.key("a") ]]\n'
                                  '[[ consul.key("b") ]]\n',
                      "destination": str(tmp_path / "out/inline"), "delimiters": delimiters,
                      "user": "daemon", "group": 4321}
    assert rules["delimiters"] == delimiters and (rules["user"], rules["group"]) == (4242, 7)
    jinja = (tmp_path / "conv" / rules["source"]).read_text()
    assert jinja.startswith("up [[% if ") and jinja.endswith(" %]]yes[[% endif %]]\n"), jinja
    check = confsync("check", "-c", str(tmp_path / "conv" / "confsync.yaml"))
    assert check.returncode == 0, check.stderr


def test_default_delimiters_apply_to_templates_without_their_own(tmp_path: Path) -> None:
    """consul-template's default_delimiters (even after the templates): a template written in them
    is parsed with them, not read as plain text."""
    (tmp_path / "ct.hcl").write_text(f'''
template {{
  contents = "<< key \\"a\\" >> {{{{ x }}}}"
  destination = "{tmp_path / 'out/a'}"
}}
template {{
  contents = "[[ key \\"b\\" >>"
  left_delimiter = "[["
  destination = "{tmp_path / 'out/b'}"
}}
default_delimiters {{
  left = "<<"
  right = ">>"
}}
''')
    result = confsync("convert", str(tmp_path / "ct.hcl"), "-o", str(tmp_path / "conv"))
    assert result.returncode == 0, result.stdout + result.stderr
    a, b = yaml.safe_load((tmp_path / "conv" / "confsync.yaml").read_text())["templates"]
    assert a["contents"] == '<< consul.key("a") >> {{ x }}' and a["delimiters"]["variable"] == ["<<", ">>"]
    assert b["contents"] == '[[ consul.key("b") >>' and b["delimiters"]["variable"] == ["[[", ">>"]


def test_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ct.hcl").write_text("template {\n  source = \n}\n")
    result = confsync("convert", str(tmp_path / "ct.hcl"), "-o", str(tmp_path / "conv"))
    assert result.returncode == 2
    assert f"{tmp_path / 'ct.hcl'}:" in result.stderr and "not valid HCL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("guard", "value"), [
    (filters_go.go_service_name, "v2.web"),  # consul-template reads a tag, a datacenter, a near node
    (filters_go.go_service_name, "web@dc2"),
    (filters_go.go_node_name, "n1@dc2"),
    (filters_go.go_node_name, ""),  # the local agent's node to consul-template
    (filters_go.go_vault_path, " / "),
    (filters_go.go_parse_int, " 5"),
    (filters_go.go_parse_int, "1_000"),
    (filters_go.go_parse_int, str(2**63)),
    (filters_go.go_parse_bool, "yes"),
    (lambda v: filters_go.go_must_env(v, "X"), ""),  # mustEnv of an empty or unset variable
    (filters_go.go_parse_float, "1_000.5"),  # Python's float() reads it, Go's ParseFloat does not
    (filters_go.go_parse_float, "1e400"),
])
def test_render_time_guards_fail_where_consul_template_reads_otherwise(guard, value) -> None:
    """A value computed at render time that consul-template would read another way (or refuse)
    fails the render, keeping the last good file, rather than rendering something else."""
    with pytest.raises(ValueError):
        guard(value)
