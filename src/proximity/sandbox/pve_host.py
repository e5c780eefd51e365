"""The sandbox's "Proxmox host" namespace: its files, its /etc/netns entry, ifupdown2 and the uplink.

``ip netns exec NAME`` bind-mounts each entry of ``/etc/netns/NAME/`` over ``/etc/<entry>``;
``/etc/netns/NAME/network`` is a symlink to ``<root>/etc/network`` (the mount follows it) and
``/etc/netns/NAME/resolv.conf`` points the host at the upstream DNS.

The uplink is dual-stack, as a Proxmox node's often is: an ``inet`` and an ``inet6`` stanza for
``vmbr0``, each with its gateway on the LAN router. ``vmbr0`` skips duplicate address detection
(``accept_dad=0``): the sandbox plays a node that has been up for a while, whose uplink passed
DAD long ago, and it would otherwise be tentative for 1-2 s after each create (optimistic DAD
does not help: the kernel applies it to autoconfigured addresses only, not to ifupdown2's
static one). Only the uplink is spared: the namespace's default is put back after the first
``ifreload``, so the bridges Proximity creates do full DAD, as on a real host.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proximity.host import ETC_NETNS, Host
from proximity.host.ifupdown import is_locked, retry_while_locked
from proximity.sandbox.commands import netlink, ns_run
from proximity.sandbox.layout import (
    HOST_NIC,
    HOST_UPLINK_ADDR,
    HOST_UPLINK_ADDR6,
    LAN_GATEWAY,
    LAN_GATEWAY6,
    UPLINK,
    Sandbox,
    SandboxError,
)

HOST_IFUPDOWN2_DIR = Path("/etc/network/ifupdown2")
IFUPDOWN2_LOCK_DIR = Path("/run/network")  # ifupdown2's global lock lives here
_IFF_UP = 0x1
_IFA_F_DADFAILED = 0x08

INTERFACES_TEMPLATE = f"""\
auto lo
iface lo inet loopback

iface {HOST_NIC} inet manual

auto {UPLINK}
iface {UPLINK} inet static
\taddress {HOST_UPLINK_ADDR}
\tgateway {LAN_GATEWAY}
\tbridge-ports {HOST_NIC}
\tbridge-stp off
\tbridge-fd 0

iface {UPLINK} inet6 static
\taddress {HOST_UPLINK_ADDR6}
\tgateway {LAN_GATEWAY6}

source /etc/network/interfaces.d/*
"""


def _ifupdown2_state_line(sb: Sandbox) -> str:
    return f"state_dir={sb.root / 'var/lib/ifupdown2'}/"


def write_host_files(sb: Sandbox) -> None:
    """The host's /etc/network (interfaces file, a copy of ifupdown2's config with its own state
    directory) and Proximity's directories."""
    host = Host()
    etc_network = sb.root / "etc/network"
    host.mkdir(etc_network / "interfaces.d")
    host.write_text(sb.interfaces_file, INTERFACES_TEMPLATE)

    host.mkdir(sb.root / "var/lib/ifupdown2")
    if not HOST_IFUPDOWN2_DIR.is_dir():
        raise SandboxError(
            f"{HOST_IFUPDOWN2_DIR} is missing; install ifupdown2 ('apt-get install ifupdown2')"
        )
    ifupdown2_copy = etc_network / "ifupdown2"
    host.copy_tree(HOST_IFUPDOWN2_DIR, ifupdown2_copy)
    conf = ifupdown2_copy / "ifupdown2.conf"
    text = host.read_text(conf) or ""
    state_line = _ifupdown2_state_line(sb)
    text, count = re.subn(r"(?m)^\s*state_dir\s*=.*$", state_line, text)
    if count == 0:
        text = text.rstrip("\n") + ("\n" if text else "") + state_line + "\n"
    host.write_text(conf, text)

    for d in (sb.dnsmasq_conf.parent, sb.state_dir, sb.run_dir):
        host.mkdir(d)


def write_etc_netns(sb: Sandbox) -> None:
    """/etc/netns/NAME: the host sees its own /etc/network and the LAN's DNS; checked through ip netns exec."""
    host = Host()
    etc = ETC_NETNS / sb.name
    host.mkdir(etc, exist_ok=False)
    host.symlink(etc / "network", sb.root / "etc/network")
    host.write_text(etc / "resolv.conf", f"nameserver {LAN_GATEWAY}\n")

    # `ip netns exec` must show the sandbox's files, not the machine's, before ifupdown2 runs.
    seen = ns_run(
        sb.name, ["cat", "/etc/network/interfaces", "/etc/network/ifupdown2/ifupdown2.conf"]
    )
    if INTERFACES_TEMPLATE not in seen.stdout or _ifupdown2_state_line(sb) not in seen.stdout.splitlines():
        raise SandboxError(
            f"'ip netns exec {sb.name}' does not show {sb.root / 'etc/network'} as /etc/network "
            f"(through the symlink {etc / 'network'}); check that iproute2 supports /etc/netns"
        )


def etc_netns_is_ours(sb: Sandbox) -> bool:
    etc = ETC_NETNS / sb.name
    link = etc / "network"
    if link.is_symlink():
        return link.readlink() == sb.root / "etc/network"
    try:
        return etc.is_dir() and not any(etc.iterdir())
    except OSError:
        return False


def ifreload(ns: str, timeout: float = 60) -> None:
    """``ifreload -a`` in ``ns``, retried while another ifupdown2 holds its global lock."""
    Host().mkdir(IFUPDOWN2_LOCK_DIR)
    proc = retry_while_locked(lambda seconds_left: ns_run(ns, ["ifreload", "-a"], timeout=seconds_left, check=False),
                              lambda proc: proc.returncode != 0 and is_locked(proc.returncode, proc.stderr + proc.stdout),
                              timeout)
    if proc.returncode != 0:
        output = (proc.stderr + proc.stdout).strip()
        raise SandboxError(
            f"'ifreload -a' failed in network namespace {ns} (exit {proc.returncode}): "
            f"{output or 'no output'}; check the interfaces file of the sandbox"
            + (" (another ifupdown2 kept the global lock in /run/network)"
               if is_locked(proc.returncode, output) else "")
        )


@contextmanager
def without_dad(ns: str) -> Iterator[None]:
    """Links created in ``ns`` inside this block skip DAD; the namespace's default is put back after."""
    key = "net.ipv6.conf.default.accept_dad"
    before = ns_run(ns, ["sysctl", "-n", key]).stdout.strip()
    ns_run(ns, ["sysctl", "-qw", f"{key}=0"])
    try:
        yield
    finally:
        ns_run(ns, ["sysctl", "-qw", f"{key}={before}"])


def apply_pending(sb: Sandbox) -> None:
    """"Apply Configuration" as Proxmox does it: ``interfaces.new`` renamed over ``interfaces``, then ``ifreload -a``."""
    pending = sb.interfaces_file.with_name(sb.interfaces_file.name + ".new")
    if not pending.exists():
        raise SandboxError(f"no pending network changes in sandbox {sb.name} ({pending} does not exist)")
    pending.replace(sb.interfaces_file)
    ifreload(sb.name)


def uplink_problem(ns: str) -> str | None:
    """None if vmbr0 is up with HOST_UPLINK_ADDR and HOST_UPLINK_ADDR6 and default routes via LAN_GATEWAY
    and LAN_GATEWAY6."""
    with netlink(ns) as ipr:
        idx = ipr.link_lookup(ifname=UPLINK)
        if not idx:
            return f"{UPLINK} does not exist"
        link = list(ipr.get_links(idx[0]))[0]
        if not link["flags"] & _IFF_UP:
            return f"{UPLINK} is administratively down"
        operstate = link.get_attr("IFLA_OPERSTATE")
        if operstate != "UP":
            return f"{UPLINK} is not operationally up (operstate {operstate})"
        for family, address, gateway in ((socket.AF_INET, HOST_UPLINK_ADDR, LAN_GATEWAY),
                                         (socket.AF_INET6, HOST_UPLINK_ADDR6, LAN_GATEWAY6)):
            problem = _family_problem(ipr, idx[0], family, address, gateway)
            if problem:
                return problem
        return None


def _family_problem(ipr: Any, index: int, family: int, address: str, gateway: str) -> str | None:
    addr, prefixlen = address.split("/")
    addrs = {}
    for a in ipr.get_addr(family=family, index=index):
        flags = a.get_attr("IFA_FLAGS")
        addrs[(a.get_attr("IFA_ADDRESS"), a["prefixlen"])] = a["flags"] if flags is None else flags
    found = addrs.get((addr, int(prefixlen)))
    if found is None:
        return f"{UPLINK} does not have {address} (has {sorted(addrs)})"
    if found & _IFA_F_DADFAILED:
        return f"{address} on {UPLINK} failed duplicate address detection: another host on the LAN has it"
    for route in ipr.get_routes(family=family, table=254):
        if (
            route["dst_len"] == 0
            and route.get_attr("RTA_GATEWAY") == gateway
            and route.get_attr("RTA_OIF") == index
        ):
            return None
    return f"there is no default route via {gateway} dev {UPLINK}"
