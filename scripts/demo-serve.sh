#!/usr/bin/env bash
# Start the Proximity service against a sandbox, in the background, and print its URL and token.
# `make demo-clean` (sandbox destroy) stops it: its pid file lives in the sandbox's run directory.
set -euo pipefail
sandbox=$1 port=${2:-8080}
run=/var/lib/proximity/sandboxes/$sandbox/run
pidfile=$run/api.pid
log=/var/lib/proximity/sandboxes/$sandbox/api.log
setsid .venv/bin/proximity serve --sandbox "$sandbox" --port "$port" --pid-file "$pidfile" >"$log" 2>&1 < /dev/null &
for _ in $(seq 200); do
    if .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null; then
        echo "Proximity API and dashboard: http://127.0.0.1:$port/"
        echo "API token: $(.venv/bin/proximity token show --sandbox "$sandbox")"
        exit 0
    fi
    sleep 0.1
done
echo "the service did not come up; see $log" >&2
exit 1
