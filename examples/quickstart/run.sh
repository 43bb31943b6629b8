#!/usr/bin/env bash
# Install confsync in a virtualenv, start the demo app and confsync's daemon on the `files` source.
# Then, in another terminal:  echo -n db2.internal > examples/quickstart/data/db/host
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[ -x "$root/.venv/bin/confsync" ] || { python3 -m venv "$root/.venv" && "$root/.venv/bin/pip" install -q -e "$root"; }
cd "$here"
"$root/.venv/bin/python" demo_app.py &
app=$!
trap 'kill $app 2>/dev/null' EXIT
echo "confsync is watching $here/data — edit a file there (Ctrl-C to stop)."
"$root/.venv/bin/confsync" run -c confsync.yaml
