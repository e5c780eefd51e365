#!/usr/bin/env bash
# The demo's second zone: its containers resolve their own names over IPv4 and IPv6, and a container in
# prox-net cannot reach one in lab (zones are isolated until `proximity zone peer`).
set -euo pipefail
sandbox=$1
p=.venv/bin/proximity
echo "+ proximity ct exec api-01 -- nslookup -type=AAAA api-01.lab.internal   # its IPv6 name"
$p ct exec api-01 --sandbox "$sandbox" -- nslookup -type=AAAA api-01.lab.internal
nginx=$($p ct show nginx-01 --sandbox "$sandbox" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
echo "+ proximity ct exec wordpress-02 -- ping -c1 -W1 $nginx   # inside prox-net: reached"
$p ct exec wordpress-02 --sandbox "$sandbox" -- ping -c1 -W1 "$nginx" >/dev/null
api=$($p ct show api-01 --sandbox "$sandbox" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
echo "+ proximity ct exec wordpress-02 -- ping -c1 -W1 $api   # prox-net -> lab: isolated"
if $p ct exec wordpress-02 --sandbox "$sandbox" -- ping -c1 -W1 "$api" >/dev/null 2>&1; then
    echo "wordpress-02 (prox-net) reached api-01 (lab): the zones are not isolated" >&2
    exit 1
fi
echo "blocked, as it should be: zones are isolated until \`proximity zone peer prox-net lab\`"
