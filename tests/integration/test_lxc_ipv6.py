"""IPv6 in local LXC containers, for real: DHCPv6 (dhcpcd in the rootfs) and SLAAC (the kernel), with a
dnsmasq of the test's own that sends router advertisements, hands out DHCPv6 addresses and answers AAAA.

The test makes one network namespace (``v6<pid>``) with two bridges: ``br6d`` (2001:db8:60::1/64 and
10.60.0.1/24; a stateful DHCPv6 range and a DHCPv4 range) and ``br6s`` (2001:db8:61::1/64 and 10.61.0.1/24,
``ra-stateless``: SLAAC). Containers start inside that namespace; everything is stopped by pid and the
namespace deleted at the end, even on failure. Nothing is created in the machine's own namespace.

The timing test measures, per container, lxc-start to a global IPv6 address that passed DAD (no longer
``tentative``) and to dnsmasq answering its AAAA record; V6_CONTAINERS sets how many (5; the zones
issue's target is 20 with p95 under 2 s).
"""

from __future__ import annotations

import ipaddress
import datetime
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend
from proximity.host import inside_netns
from tests.integration.tools import wait_or_fail

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, LXC)"),
    pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed: apt-get install lxc"),
    pytest.mark.skipif(shutil.which("dhcpcd") is None and not Path("/usr/sbin/dhcpcd").exists(),
                       reason="dhcpcd is not installed: apt-get install dhcpcd-base (scripts/bootstrap.sh does)"),
]

NS = f"v6{os.getpid() % 100000}"
DOMAIN = "v6.test"
DHCP_BRIDGE, SLAAC_BRIDGE = "br6d", "br6s"
DHCP_PREFIX, SLAAC_PREFIX = "2001:db8:60:", "2001:db8:61:"  # ::/64 each
SERVER6 = f"{DHCP_PREFIX}:1"
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


def wait_v6(check, timeout: float, what: str):
    """``wait_or_fail`` polling every 10 ms."""
    return wait_or_fail(check, timeout, what, max_delay=0.01)


def past_dad(backend, vmid: int, root: Path, pid: int, prefix: str, what: str) -> str:
    """The container's address in ``prefix`` once it passed DAD; on a timeout, what the container shows."""
    try:
        return wait_v6(lambda: passed_dad(pid, prefix), 15, what)
    except BaseException:
        print(diagnostics(backend, vmid, root))
        raise


def ns(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NS, *argv], capture_output=True, text=True, check=check, timeout=30)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def global_addrs(pid: int) -> dict[str, int]:
    """The container's global IPv6 addresses on eth0 and their flags, read in its network namespace."""
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-6", "-j", "addr", "show", "dev", "eth0",
                          "scope", "global"], capture_output=True, text=True, timeout=10).stdout
    found: dict[str, int] = {}
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if "local" not in a:  # ip prints an empty entry when there is none
                continue
            flags = (IFA_F_TENTATIVE if a.get("tentative") else 0) | (IFA_F_DADFAILED if a.get("dadfailed") else 0)
            found[a["local"]] = flags
    return found


def passed_dad(pid: int, prefix: str) -> str | None:
    """A global address in ``prefix`` that is past DAD (neither tentative nor failed), or None."""
    return next((a for a, flags in global_addrs(pid).items() if a.startswith(prefix) and not flags), None)


def aaaa(name: str, server: str = SERVER6) -> list[str] | None:
    """AAAA records of ``name`` asked of ``server`` from inside the test namespace; None without an answer."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    with inside_netns(NS):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        answer = dns.query.udp(dns.message.make_query(name, "AAAA"), server, timeout=0.5, sock=sock)
    except (dns.exception.DNSException, OSError):
        return None
    finally:
        sock.close()
    return [item.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.AAAA for item in rrset]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The namespace, its two bridges and dnsmasq (RA, DHCPv6, DHCPv4, DNS); torn down even on failure."""
    root = tmp_path_factory.mktemp("v6")
    root.chmod(0o755)  # dnsmasq drops to nobody
    pidfile, log = root / "dnsmasq.pid", root / "dnsmasq.log"
    subprocess.run(["ip", "netns", "add", NS], check=True)
    backend = LxcBackend(NS, root / "lxc", domain=DOMAIN)
    try:
        ip = ["ip", "-n", NS]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        # The test's router does no DAD (Incus sets accept_dad=0 on its bridges too): a bridge gets its
        # link-local address only when the first port brings carrier, and while that address is tentative
        # dnsmasq sends no router advertisement: the first container's RS goes unanswered and it has no
        # IPv6 default route until a later unsolicited RA (seen here: the route check below fails).
        ns("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        for bridge, addrs in ((DHCP_BRIDGE, [f"{SERVER6}/64", "10.60.0.1/24"]), (SLAAC_BRIDGE, [f"{SLAAC_PREFIX}:1/64", "10.61.0.1/24"])):
            subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], check=True)
            for addr in addrs:  # the test's own router: no DAD, so dnsmasq can bind at once
                subprocess.run([*ip, "addr", "add", addr, "dev", bridge, *(["nodad"] if ":" in addr else [])],
                               check=True)
            subprocess.run([*ip, "link", "set", bridge, "up"], check=True)
        ns("dnsmasq", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--bind-interfaces",
           f"--interface={DHCP_BRIDGE}", f"--interface={SLAAC_BRIDGE}", "--except-interface=lo",
           "--enable-ra", f"--dhcp-range={DHCP_PREFIX}:100,{DHCP_PREFIX}:1ff,64,1h",
           f"--dhcp-range={SLAAC_PREFIX}:,ra-stateless", "--dhcp-range=10.60.0.100,10.60.0.200,1h",
           f"--domain={DOMAIN}", "--dhcp-authoritative", "--no-ping", "--dhcp-rapid-commit", "--log-dhcp", f"--log-facility={log}",
           f"--pid-file={pidfile}", f"--dhcp-leasefile={root / 'dnsmasq.leases'}")
        pid = wait_v6(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "dnsmasq's pid file")
        yield backend, root
    finally:
        for container in backend.list():
            backend.destroy(container.vmid)
        if pidfile.exists() and pidfile.read_text().strip():
            pid = int(pidfile.read_text())
            if alive(pid):
                os.kill(pid, 15)
            wait_v6(lambda: not alive(pid), 10, "dnsmasq to exit")
        subprocess.run(["ip", "netns", "delete", NS], check=True)


def start(backend: LxcBackend, hostname: str, net0: str) -> tuple[int, float, int]:
    """Create and start a container; returns its vmid, when lxc-start was called (time.time()), its init's pid."""
    ct = backend.create(ContainerSpec(hostname=hostname, net0=net0, memory=64))
    t0 = time.time()
    backend.start(ct.vmid)
    pid = backend.container_pid(ct.vmid)
    assert pid
    return ct.vmid, t0, pid


def diagnostics(backend: LxcBackend, vmid: int, root: Path) -> str:
    rootfs = backend.lxcpath / str(vmid) / "rootfs"
    parts = [f"{p}: {(rootfs / p).read_text(errors='replace')[-1500:]}" for p in
             ("var/log/ct-init.log", "var/log/dhcpcd.log") if (rootfs / p).exists()]
    return "\n".join(parts + [f"dnsmasq: {(root / 'dnsmasq.log').read_text(errors='replace')[-1500:]}"])


def test_dhcpv6_address_and_aaaa(lab) -> None:
    backend, root = lab
    vmid, t0, pid = start(backend, "v6dhcp", f"name=eth0,bridge={DHCP_BRIDGE},ip=dhcp,ip6=dhcp,hwaddr=02:60:00:00:00:01")
    addr = past_dad(backend, vmid, root, pid, DHCP_PREFIX, "a DHCPv6 address past DAD")
    dad_seconds = time.time() - t0
    stateful = [f"{DHCP_PREFIX}:{n:x}" for n in range(0x100, 0x200)]
    assert addr in stateful, f"{addr} is not from the DHCPv6 range"
    assert wait_v6(lambda: aaaa(f"v6dhcp.{DOMAIN}") == [addr], 5, "dnsmasq's AAAA record for v6dhcp")
    lease = (root / "dnsmasq.leases").read_text()
    assert re.search(rf"^\d+ \d+ {re.escape(addr)} v6dhcp 00:03:00:01:02:60:00:00:00:01$", lease, re.M), lease
    # the kernel keeps the router advertisements: the default route via the router's link-local address
    routes = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-6", "route", "show", "default"],
                            capture_output=True, text=True).stdout
    assert "via fe80::" in routes and "proto ra" in routes, routes
    # IPv4 as before: udhcpc's lease on the same link
    v4 = wait_v6(lambda: re.search(r"inet (10\.60\.0\.\d+)/24", backend.exec(vmid, ["ip", "-4", "-o", "addr", "show",
                                                                                   "eth0"]).stdout), 10, "an IPv4 lease")
    assert v4
    # both ways over IPv6: the container reaches its router, the router the container
    assert backend.exec(vmid, ["ping", "-6", "-c1", "-W2", SERVER6]).returncode == 0
    assert ns("busybox", "ping", "-6", "-c1", "-W2", addr, check=False).returncode == 0
    print(f"DHCPv6: lxc-start to {addr} past DAD {dad_seconds:.2f} s")
    backend.destroy(vmid)


def test_slaac_by_the_kernel(lab) -> None:
    backend, root = lab
    vmid, t0, pid = start(backend, "v6slaac", f"name=eth0,bridge={SLAAC_BRIDGE},ip=10.61.0.50/24,gw=10.61.0.1,ip6=auto,"
                                               "hwaddr=02:61:00:00:00:01")
    addr = past_dad(backend, vmid, root, pid, SLAAC_PREFIX, "a SLAAC address past DAD")
    dad_seconds = time.time() - t0
    eui64 = ipaddress.IPv6Address(f"{SLAAC_PREFIX}:61:ff:fe00:1")
    assert ipaddress.IPv6Address(addr) == eui64, f"{addr} is not the EUI-64 address of 02:61:00:00:00:01"
    assert not (backend.lxcpath / str(vmid) / "rootfs/usr/sbin/dhcpcd").exists()  # no client for SLAAC
    conf = "/proc/sys/net/ipv6/conf/eth0"
    settings = backend.exec(vmid, ["cat", f"{conf}/optimistic_dad", f"{conf}/use_optimistic",
                                   f"{conf}/router_solicitation_delay", f"{conf}/dad_transmits",
                                   "/proc/sys/net/ipv6/neigh/eth0/retrans_time_ms"]).stdout.split()
    assert settings[:4] == ["1", "1", "0", "1"], "the init did not set up optimistic DAD"
    assert 248 <= int(settings[4]) <= 256, f"RetransTimer {settings[4]} ms, not 250 (within a jiffy)"
    # static IPv4 as before, though the init restarted the link's IPv6 (the link went down and up)
    assert "default via 10.61.0.1 dev eth0" in backend.exec(vmid, ["ip", "-4", "route", "show", "default"]).stdout
    assert backend.exec(vmid, ["ping", "-c1", "-W2", "10.61.0.1"]).returncode == 0
    assert ns("busybox", "ping", "-6", "-c1", "-W2", addr, check=False).returncode == 0
    print(f"SLAAC: lxc-start to {addr} past DAD {dad_seconds:.2f} s")
    backend.destroy(vmid)


class Watch:
    """When container ``name`` (init ``pid``) has a global address in ``prefix`` past DAD, and when dnsmasq
    answers its AAAA record: ``ip -ts monitor address`` in its namespace timestamps the kernel's event as it
    arrives (a poll of the address list covers an event before the monitor listened), then DNS is polled."""

    def __init__(self, pid: int, name: str, prefix: str):
        self.pid, self.name, self.prefix = pid, name, prefix
        self.dad: float | None = None
        self.named: float | None = None
        self.proc = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-ts", "-o", "monitor",
                                      "address", "dev", "eth0"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while self.dad is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if not ready:
                if passed_dad(self.pid, self.prefix):
                    self.dad = time.time()
                continue
            line = self.proc.stdout.readline()
            m = re.match(r"\[([0-9T:.-]+)\] (?!Deleted).*inet6 (\S+)/\d+ scope global (.*)", line)
            if m and m.group(2).startswith(self.prefix) and "tentative" not in m.group(3):
                self.dad = datetime.datetime.fromisoformat(m.group(1)).timestamp()
        while self.dad is not None and self.named is None and time.monotonic() < deadline:
            if aaaa(self.name):
                self.named = time.time()
            else:
                time.sleep(0.01)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.thread.join(timeout=35)


def test_time_to_ipv6(lab) -> None:
    """Dual-stack containers started one after another: lxc-start to a DAD-passed DHCPv6 address and to
    dnsmasq answering the container's AAAA record."""
    backend, root = lab
    count = int(os.environ.get("V6_CONTAINERS", "5"))
    started: list[tuple[int, float, Watch]] = []
    try:
        for n in range(count):
            vmid, wall, pid = start(backend, f"ct{n:02d}", f"name=eth0,bridge={DHCP_BRIDGE},ip=dhcp,ip6=dhcp,"
                                                        f"hwaddr=02:60:00:00:01:{n:02x}")
            started.append((vmid, wall, Watch(pid, f"ct{n:02d}.{DOMAIN}", DHCP_PREFIX)))
        for _, _, watch in started:
            watch.thread.join(timeout=35)
    finally:
        for _, _, watch in started:
            watch.stop()
    late = [vmid for vmid, _, watch in started if watch.named is None]
    if late:
        print(diagnostics(backend, late[0], root))
    assert not late, f"CTs {late} got no IPv6 address past DAD or no AAAA record within 30 s"
    dad = [watch.dad - wall for _, wall, watch in started]
    named = [watch.named - wall for _, wall, watch in started]

    # The floor, kept on purpose: dhcpcd's link-local address, then the DHCPv6 address, each wait one DAD
    # probe and RetransTimer (250 ms, set by the init) before they pass; nothing here may skip DAD.
    assert min(dad) >= 0.45, f"a DHCPv6 address passed DAD {min(dad):.2f} s after lxc-start: was DAD skipped?"

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    print(f"{count} containers, lxc-start to DAD-passed DHCPv6 address: median {statistics.median(dad):.2f} s, "
          f"p95 {p95(dad):.2f} s, max {max(dad):.2f} s; to the AAAA record answered: median "
          f"{statistics.median(named):.2f} s, p95 {p95(named):.2f} s, max {max(named):.2f} s")
