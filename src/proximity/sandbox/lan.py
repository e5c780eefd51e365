"""The sandbox's LAN namespace: the router the host's uplink reaches, "the internet" and the upstream DNS.

``NAME-lan`` holds ``lan0`` 198.51.100.1/24 (the peer of the host's ``eno1``), ``inet0``
203.0.113.10/24 (the internet test host) and a dnsmasq on 198.51.100.1 that answers
``internet.test``. It does not forward and has no route to Proximity's subnet.
"""

from __future__ import annotations

from pathlib import Path

from proximity.host import Host, wait_for
from proximity.sandbox.commands import add_ns, ip, ns_run
from proximity.sandbox.layout import (
    HOST_NIC,
    INTERNET_HOST,
    INTERNET_NAME,
    INTERNET_NIC,
    INTERNET_NIC_PEER,
    INTERNET_PREFIXLEN,
    LAN_GATEWAY,
    LAN_NIC,
    LAN_PREFIXLEN,
    UPSTREAM_DNS_LOG,
    UPSTREAM_DNS_PID,
    Sandbox,
    SandboxError,
)
from proximity.sandbox.processes import read_pidfile


def build_lan(sb: Sandbox) -> str:
    """Both namespaces, the wire between them and the LAN's addresses; returns the internet NIC's kind."""
    add_ns(sb.name)
    add_ns(sb.lan_ns)
    ip(sb.name, "link", "add", HOST_NIC, "type", "veth",
       "peer", "name", LAN_NIC, "netns", sb.lan_ns)  # fmt: skip
    ip(sb.lan_ns, "addr", "add", f"{LAN_GATEWAY}/{LAN_PREFIXLEN}", "dev", LAN_NIC)
    ip(sb.lan_ns, "link", "set", LAN_NIC, "up")
    kind = _add_internet_nic(sb.lan_ns)
    ns_run(sb.lan_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
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
    ip(lan_ns, "link", "set", INTERNET_NIC, "up")
    return kind


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
        "--except-interface=lo",
        f"--host-record={INTERNET_NAME},{INTERNET_HOST}",
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
