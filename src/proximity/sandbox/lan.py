"""The sandbox's LAN namespace: the router the host's uplink reaches, "the internet" and the upstream DNS.

``NAME-lan`` holds ``lan0`` 198.51.100.1/24 and 2001:db8:198:51::1/64 (the peer of the host's
``eno1``), ``inet0`` 203.0.113.10/24 and 2001:db8:203:113::10/64 (the internet test host) and a
dnsmasq on 198.51.100.1 and 2001:db8:198:51::1 that answers ``internet.test`` (A and AAAA). It
does not forward and has no route to Proximity's subnets: what a zone sends out is answered only
once the host masquerades it (NAT66 for IPv6), unless the zone's prefix is routed here with
:func:`route_prefix` (a routed global prefix: the LAN router sends it back to the host's uplink).

The LAN's own links do no duplicate address detection (``accept_dad=0``): they stand in for
another network, and an address usable at once keeps sandbox creation fast.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from proximity.host import Host, wait_for
from proximity.sandbox.commands import add_ns, ip, ns_run
from proximity.sandbox.layout import (
    DOC_PREFIX6,
    HOST_NIC,
    HOST_UPLINK_ADDR6,
    INTERNET_HOST,
    INTERNET_HOST6,
    INTERNET_NAME,
    INTERNET_NIC,
    INTERNET_NIC_PEER,
    INTERNET_PREFIXLEN,
    INTERNET_PREFIXLEN6,
    LAN_GATEWAY,
    LAN_GATEWAY6,
    LAN_NIC,
    LAN_PREFIXLEN,
    LAN_PREFIXLEN6,
    UPSTREAM_DNS_LOG,
    UPSTREAM_DNS_PID,
    Sandbox,
    SandboxError,
    SandboxInputError,
)
from proximity.sandbox.processes import read_pidfile


def build_lan(sb: Sandbox) -> str:
    """Both namespaces, the wire between them and the LAN's addresses; returns the internet NIC's kind."""
    add_ns(sb.name)
    add_ns(sb.lan_ns)
    # before any link exists there: links take the namespace's defaults when they are created
    ns_run(sb.lan_ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0",
                       "net.ipv6.conf.default.accept_ra=0"])
    ip(sb.name, "link", "add", HOST_NIC, "type", "veth",
       "peer", "name", LAN_NIC, "netns", sb.lan_ns)  # fmt: skip
    ip(sb.lan_ns, "addr", "add", f"{LAN_GATEWAY}/{LAN_PREFIXLEN}", "dev", LAN_NIC)
    ip(sb.lan_ns, "addr", "add", f"{LAN_GATEWAY6}/{LAN_PREFIXLEN6}", "dev", LAN_NIC)
    ip(sb.lan_ns, "link", "set", LAN_NIC, "up")
    kind = _add_internet_nic(sb.lan_ns)
    ns_run(sb.lan_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"])
    return kind


def _add_internet_nic(lan_ns: str) -> str:
    """inet0 with INTERNET_HOST: a dummy, or a veth pair inside lan_ns if the kernel lacks dummy."""
    try:
        ip(lan_ns, "link", "add", INTERNET_NIC, "type", "dummy")
        kind = "dummy"
    except SandboxError as exc:
        if "Unknown device type" not in str(exc):
            raise
        ip(lan_ns, "link", "add", INTERNET_NIC, "type", "veth", "peer", "name", INTERNET_NIC_PEER)
        ip(lan_ns, "link", "set", INTERNET_NIC_PEER, "up")
        kind = "veth"
    ip(lan_ns, "addr", "add", f"{INTERNET_HOST}/{INTERNET_PREFIXLEN}", "dev", INTERNET_NIC)
    ip(lan_ns, "addr", "add", f"{INTERNET_HOST6}/{INTERNET_PREFIXLEN6}", "dev", INTERNET_NIC)
    ip(lan_ns, "link", "set", INTERNET_NIC, "up")
    return kind


def _routed_prefix(prefix: str) -> ipaddress.IPv6Network:
    """``prefix`` checked: an IPv6 network inside DOC_PREFIX6 that is neither the LAN's nor the internet's."""
    example = "2001:db8:100::/56"
    try:
        net = ipaddress.IPv6Network(prefix)
    except ValueError as exc:
        raise SandboxInputError(
            f"routed prefix {prefix!r} is not an IPv6 network ({exc}); give one like {example}"
        ) from None
    if not net.subnet_of(ipaddress.IPv6Network(DOC_PREFIX6)):
        raise SandboxInputError(
            f"routed prefix {net} is outside {DOC_PREFIX6}: the sandbox uses documentation addresses only; "
            f"give one like {example}"
        )
    taken = [ipaddress.IPv6Interface(f"{LAN_GATEWAY6}/{LAN_PREFIXLEN6}").network,
             ipaddress.IPv6Interface(f"{INTERNET_HOST6}/{INTERNET_PREFIXLEN6}").network]
    clash = next((t for t in taken if net.overlaps(t)), None)
    if clash is not None:
        raise SandboxInputError(
            f"routed prefix {net} overlaps {clash}, the sandbox's own LAN or internet prefix; give one like {example}"
        )
    return net


def route_prefix(sb: Sandbox, prefix: str) -> str:
    """Route ``prefix`` (a zone's global IPv6 prefix) from the LAN router back to the host's uplink address.

    What an upstream router does for a routed zone: traffic from "the internet" to the zone's addresses
    goes to the Proxmox host, which forwards it onto the zone's bridge; no NAT66 is needed. Replaces an
    earlier route for the same prefix; returns the prefix as routed (normalised).
    """
    net = _routed_prefix(prefix)
    via = HOST_UPLINK_ADDR6.split("/")[0]
    ip(sb.lan_ns, "-6", "route", "replace", str(net), "via", via, "dev", LAN_NIC)
    return str(net)


def unroute_prefix(sb: Sandbox, prefix: str) -> None:
    """Remove the route that :func:`route_prefix` added (a no-op when there is none)."""
    net = _routed_prefix(prefix)
    if ip(sb.lan_ns, "-6", "route", "show", "exact", str(net)).stdout.strip():
        ip(sb.lan_ns, "-6", "route", "del", str(net), "dev", LAN_NIC)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_upstream_dns(sb: Sandbox, timeout: float = 10) -> int:
    """Start dnsmasq in the LAN namespace and wait until it answers INTERNET_NAME."""
    pidfile = sb.run_dir / UPSTREAM_DNS_PID
    logfile = sb.root / UPSTREAM_DNS_LOG
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--bind-interfaces",
        f"--listen-address={LAN_GATEWAY}",
        f"--listen-address={LAN_GATEWAY6}",
        "--except-interface=lo",
        f"--host-record={INTERNET_NAME},{INTERNET_HOST},{INTERNET_HOST6}",
        f"--pid-file={pidfile}",
        f"--log-facility={logfile}",
        "--log-queries",
    ]
    ns_run(sb.lan_ns, argv, timeout=timeout)  # dnsmasq daemonises; errors come before that
    pid = wait_for(lambda: read_pidfile(pidfile), timeout)
    if pid is None:
        raise SandboxError(
            f"the upstream DNS (dnsmasq) in {sb.lan_ns} wrote no pid file {pidfile}; see {logfile}"
        )

    last_error = "no answer"
    host = Host(sb.name)

    def answers() -> bool:
        nonlocal last_error
        if not host.alive(pid):
            raise SandboxError(
                f"the upstream DNS (dnsmasq, pid {pid}) in {sb.lan_ns} exited: {_log_tail(logfile)}"
            )
        found = host.resolve(INTERNET_NAME, LAN_GATEWAY, timeout=0.5, attempts=1)
        if found is None:
            last_error = "no answer"
            return False
        last_error = f"answer {found}"
        return INTERNET_HOST in found

    if not wait_for(answers, timeout):
        raise SandboxError(
            f"the upstream DNS at {LAN_GATEWAY} did not answer {INTERNET_NAME} with "
            f"{INTERNET_HOST} from namespace {sb.name} within {timeout:g}s ({last_error}); "
            f"see {logfile}"
        )
    return pid
