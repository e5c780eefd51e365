#!/usr/bin/env bash
# Install what Proximity needs on a Debian/Proxmox machine, then a virtual environment.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# dhcpcd-base: the DHCPv6 client copied into local test containers (Debian's busybox has no udhcpc6).
packages=(iproute2 ifupdown2 bridge-utils dnsmasq-base dnsmasq-utils nftables iptables busybox dhcpcd-base python3 python3-venv)
# The test suite's browser (Playwright drives Debian's Chromium; no browser download) and its font,
# and what Proxmox's own interfaces writer needs (../shared/pve/pve-rewrite, a test oracle).
[ "${1:-}" = "--test" ] && packages+=(chromium fonts-dejavu-core perl libstring-shellquote-perl libjson-perl
    libnet-ip-perl libdevel-cycle-perl libfilesys-df-perl libhttp-message-perl liburi-perl libtimedate-perl
    libencode-locale-perl)
# Local LXC containers (the sandbox's backend). A Proxmox host has its own (lxc-pve): leave it alone.
command -v pveversion >/dev/null 2>&1 || packages+=(lxc)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "bootstrap: run as root to install: ${missing[*]}" >&2; exit 1; }
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Start no service while installing: Debian's lxc would otherwise bring up lxcbr0 on the host.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
    if [ -f /etc/default/lxc-net ]; then
        sed -i 's/^USE_LXC_BRIDGE=.*/USE_LXC_BRIDGE="false"/' /etc/default/lxc-net
    fi
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Proximity needs Python 3.11 or newer; $("$python" --version) found" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The versions of the lock, each checked against its hash (make lock), as scripts/install.sh does;
# then Proximity itself, editable, with no dependency of its own choosing.
if [ ! -f .venv/.bootstrap-stamp ] || [ pyproject.toml -nt .venv/.bootstrap-stamp ] ||
   [ requirements-test.lock -nt .venv/.bootstrap-stamp ]; then
    .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements-test.lock
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    broken=$(.venv/bin/pip check 2>&1) || {
        echo "$broken" >&2; echo "bootstrap: requirements-test.lock does not cover pyproject.toml: run make lock" >&2; exit 1; }
    touch .venv/.bootstrap-stamp
fi
# An editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE set none is ever
# written: every command would compile Proximity's sources again (~40 ms each time).
.venv/bin/python -m compileall -q src/proximity
