#!/usr/bin/env bash
# Install confsync in a virtualenv, start the demo app and confsync's daemon on the `files` source.
# Then, in another terminal:  echo -n db2.internal > examples/quickstart/data/db/host
# Ctrl-C, SIGTERM or closing the terminal (SIGHUP) stops both: neither is left running (issue 11).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[ -x "$root/.venv/bin/confsync" ] || { python3 -m venv "$root/.venv" && "$root/.venv/bin/pip" install -q -e "$root"; }
cd "$here"
app="" sync=""
stop() {
    trap - INT TERM HUP EXIT
    # confsync first, so it does not signal an app that is going away; each waited for.
    [ -z "$sync" ] || { kill -TERM "$sync" 2>/dev/null || true; wait "$sync" 2>/dev/null || true; }
    [ -z "$app" ] || { kill -TERM "$app" 2>/dev/null || true; wait "$app" 2>/dev/null || true; }
}
trap 'stop; exit 0' INT TERM HUP
trap stop EXIT
"$root/.venv/bin/python" demo_app.py &
app=$!
echo "confsync is watching $here/data — edit a file there (Ctrl-C to stop)."
"$root/.venv/bin/confsync" run -c confsync.yaml &
sync=$!
wait "$sync"
