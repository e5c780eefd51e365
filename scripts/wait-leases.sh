#!/usr/bin/env bash
# Wait (up to 30 s) until the sandbox's dnsmasq has handed out N leases: containers boot in the background.
set -euo pipefail
sandbox=$1 want=$2
for _ in $(seq 300); do
    have=$(.venv/bin/proximity leases --sandbox "$sandbox" --json | .venv/bin/python -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$have" -ge "$want" ] && exit 0
    sleep 0.1
done
echo "only $have of $want containers took a lease within 30 s; see: .venv/bin/proximity doctor --sandbox $sandbox" >&2
exit 1
