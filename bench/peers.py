"""Peer baselines: other projects' container networks, each its dnsmasq with its shipped defaults.

Each peer gets a namespace of its own (``NAME-KEY``, recorded as a client of the sandbox before it
exists, so ``sandbox.destroy`` stops what runs in it and removes it), a bridge there with the peer's
address, and dnsmasq started with the argv (and config file) the peer's own code builds. Only paths
change: pid, lease and config files live under the sandbox's state directory. Firewall and NAT rules,
``ip_forward`` and AppArmor are left out: no packet leaves the namespace, and none of them is on the
DHCP or DNS path. Sources (read with the search tool's fetch; none of their code is copied here):

- lxc-net: lxc/lxc ``config/init/common/lxc-net.in`` at lxc-5.0.2 (Debian 12's lxc 1:5.0.2-1+deb12u4
  installs the same script as /usr/libexec/lxc/lxc-net);
- libvirt: libvirt/libvirt ``src/network/default.xml.in`` and ``src/network/bridge_driver.c``
  (``networkDnsmasqConfContents``, ``networkBuildDhcpDaemonCommandLine``);
- Incus: lxc/incus ``internal/server/network/driver_bridge.go`` (``setup``: the dnsmasq argv) and
  ``internal/server/sys/os.go`` (the unprivileged user and group).
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend, random_mac
from proximity.host import ETC_NETNS, Host, wait_for
from proximity.sandbox.clients import detach_client
from proximity.sandbox.commands import add_ns, ip
from proximity.sandbox.layout import Sandbox, write_json


@dataclass(frozen=True)
class Peer:
    key: str  # namespace suffix and container-name prefix
    label: str  # as the rows name it
    bridge: str
    address: str  # the bridge's address, CIDR
    mac: str | None  # the bridge's MAC, where the peer sets one
    domain: str  # "" where the default has none: the A record asked for is the bare hostname
    factor: float  # Proximity's target: p95 at least this many times faster
    dnsmasq: Callable[[Path, str], list[str]]  # (state dir, gateway) -> argv; writes its files
    pid_file: str | None  # under the state dir; None: dnsmasq stays in the foreground

    @property
    def gateway(self) -> str:
        return self.address.split("/")[0]

    def fqdn(self, hostname: str) -> str:
        return f"{hostname}.{self.domain}" if self.domain else hostname


def first_user(*names: str) -> str:
    """The first of ``names`` that exists, as lxc-net and Incus pick dnsmasq's user."""
    for name in names:
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    raise RuntimeError(f"none of the users {', '.join(names)} exists")


def lxc_net(state: Path, gateway: str) -> list[str]:
    """lxc-net's start(): LXC_DOMAIN="", LXC_DHCP_PING="true", LXC_DHCP_CONFILE="", no IPv6 (5.0.2)."""
    return ["dnsmasq", "--conf-file=/dev/null", "-u", first_user("lxc-dnsmasq", "dnsmasq", "nobody"),
            "--strict-order", "--bind-interfaces", f"--pid-file={state}/dnsmasq.pid",
            "--listen-address", gateway, "--dhcp-range", "10.0.3.2,10.0.3.254",
            "--dhcp-lease-max=253", "--dhcp-no-override",
            "--except-interface=lo", "--interface=lxcbr0",
            f"--dhcp-leasefile={state}/dnsmasq.lxcbr0.leases",
            "--dhcp-authoritative"]  # fmt: skip


def libvirt(state: Path, gateway: str) -> list[str]:
    """The default network's generated default.conf, and the argv that points dnsmasq at it.

    libvirt's leases helper (``--dhcp-script``, which keeps libvirt's own lease status file) is
    replaced by /bin/true: it answers ``init`` with no leases, as the helper does on a fresh network.
    """
    for empty in ("default.hostsfile", "default.addnhosts"):
        Host().write_text(state / empty, "")
    Host().write_text(state / "default.conf", "\n".join([
        "##WARNING:  THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE",
        "##OVERWRITTEN AND LOST.  Changes to this configuration should be made using:",
        "##    virsh net-edit default",
        "## or other application using the libvirt API.",
        "##",
        "## dnsmasq conf file created by libvirt",
        "strict-order",
        f"pid-file={state}/default.pid",
        "except-interface=lo",
        "bind-dynamic",
        "interface=virbr0",
        "dhcp-range=192.168.122.2,192.168.122.254,255.255.255.0",
        "dhcp-no-override",
        "dhcp-authoritative",
        "dhcp-lease-max=253",
        f"dhcp-hostsfile={state}/default.hostsfile",
        f"addn-hosts={state}/default.addnhosts",
    ]) + "\n")  # fmt: skip
    return ["env", "VIR_BRIDGE_NAME=virbr0", "dnsmasq", f"--conf-file={state}/default.conf",
            "--leasefile-ro", "--dhcp-script=/bin/true"]


def incus(state: Path, gateway: str) -> list[str]:
    """An IPv4-only managed bridge (ipv6.address=none), every other key at its default; not in debug."""
    (state / "dnsmasq.hosts").mkdir(exist_ok=True)
    Host().write_text(state / "dnsmasq.raw", "\n")  # raw.dnsmasq is empty
    net = gateway.rsplit(".", 1)[0]
    return ["dnsmasq", "--keep-in-foreground", "--strict-order", "--bind-interfaces",
            "--except-interface=lo", "--pid-file=", "--no-ping", "--interface=incusbr0",
            "--dhcp-rapid-commit", "--no-negcache", "--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra",
            f"--listen-address={gateway}", "--dhcp-no-override", "--dhcp-authoritative",
            f"--dhcp-leasefile={state}/dnsmasq.leases", f"--dhcp-hostsfile={state}/dnsmasq.hosts",
            "--dhcp-range", f"{net}.2,{net}.254,1h",
            "-s", "incus", "--interface-name", "_gateway.incus,incusbr0", "-S", "/incus/",
            f"--conf-file={state}/dnsmasq.raw",
            "-u", first_user("incus", "nobody"), "-g", "nogroup"]  # fmt: skip


PEERS = [
    Peer("lxcnet", "lxc-net (Debian 12)", "lxcbr0", "10.0.3.1/24", "00:16:3e:00:00:00", "", 3, lxc_net,
         "dnsmasq.pid"),
    Peer("libvirt", "libvirt default network", "virbr0", "192.168.122.1/24", None, "", 3, libvirt,
         "default.pid"),
    # `incus admin init` picks a random free 10.x.y.1/24; this one is free in its namespace.
    Peer("incus", "Incus managed bridge", "incusbr0", "10.120.0.1/24", None, "incus", 1, incus, None),
]


@dataclass
class Network:
    peer: Peer
    ns: str
    backend: LxcBackend

    def create(self, i: int) -> tuple[int, str]:
        """A container on the peer's bridge, as the seed rows make them: (vmid, the name to resolve)."""
        hostname = f"{self.peer.key}-{i:02d}"
        ct = self.backend.create(ContainerSpec(hostname, f"name=eth0,bridge={self.peer.bridge},ip=dhcp,"
                                                         f"hwaddr={random_mac()}"))
        return ct.vmid, self.peer.fqdn(hostname)


def _dnsmasq(ns: str, argv: list[str], state: Path, peer: Peer) -> int:
    """Start the peer's dnsmasq in ``ns``; its pid (from its pid file when it daemonizes)."""
    with open(state / "dnsmasq.log", "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    if peer.pid_file is None:  # `ip netns exec` execs: the same pid
        return proc.pid
    if proc.wait(timeout=20) != 0:
        raise RuntimeError(f"{peer.label}: dnsmasq exited {proc.returncode}; see {state / 'dnsmasq.log'}")
    return int((state / peer.pid_file).read_text().strip())


@contextmanager
def network(sb: Sandbox, peer: Peer) -> Iterator[Network]:
    """The peer's namespace, bridge and dnsmasq; every container, process and link gone afterwards."""
    ns, state = sb.client_ns(peer.key), sb.state_dir / "peers" / peer.key
    write_json(sb.client_record(peer.key), {"hostname": peer.key, "ns": ns, "bridge": peer.bridge,
                                            "host_veth": None})  # first: proves ownership to destroy()
    backend = LxcBackend(ns, state / "lxc")
    try:
        add_ns(ns)
        Host().write_text(ETC_NETNS / ns / "resolv.conf", "")  # dnsmasq gets no upstream server
        ip(ns, "link", "add", "dev", peer.bridge, "type", "bridge")
        ip(ns, "addr", "add", peer.address, "broadcast", "+", "dev", peer.bridge)
        if peer.mac:
            ip(ns, "link", "set", "dev", peer.bridge, "address", peer.mac)
        ip(ns, "link", "set", "dev", peer.bridge, "up")
        state.mkdir(parents=True, exist_ok=True)
        pid = _dnsmasq(ns, peer.dnsmasq(state, peer.gateway), state, peer)
        if not wait_for(lambda: Host(ns).resolve(peer.fqdn("nobody"), peer.gateway, 0.2, 1) is not None, 10):
            raise RuntimeError(f"{peer.label}: dnsmasq (pid {pid}) does not answer DNS on {peer.gateway}")
        yield Network(peer, ns, backend)
    finally:
        if backend.lxcpath.is_dir():
            for container in backend.list():
                backend.destroy(container.vmid)
        detach_client(sb, peer.key)  # stops dnsmasq (every process in ns), deletes ns and the record
