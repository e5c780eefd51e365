"""Integration tests of proximity.sandbox: real namespaces, ifupdown2, dnsmasq, udhcpc.

Needs root. Everything is created inside network namespaces named t<pid>... and removed by a
fixture that always calls sandbox.destroy(); the machine's own namespace is only read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from proximity import sandbox
from proximity.sandbox import lan
from proximity.sandbox.commands import ip

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

BASE = f"t{os.getpid() % 100000}"  # + one letter per test: at most 7 characters
STANDIN_BRIDGE = "prox-net"
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40


# --------------------------------------------------------------------------- helpers


def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not cond():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def ours(name: str) -> set[str]:
    return {ns for ns in netns_list() if ns == name or ns.startswith(f"{name}-")}


def root_links() -> set[str]:
    """Link names in the machine's own namespace (read only)."""
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def root_addrs() -> str:
    return subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True, check=True).stdout


def start_standin_dhcp(sb: sandbox.Sandbox) -> int:
    """Stand-in for what Proximity sets up: bridge prox-net 10.10.0.1/24 and a DHCP server."""
    ip(sb.name, "link", "add", STANDIN_BRIDGE, "type", "bridge")
    ip(sb.name, "addr", "add", "10.10.0.1/24", "dev", STANDIN_BRIDGE)
    ip(sb.name, "link", "set", STANDIN_BRIDGE, "up")
    pidfile = sb.run_dir / "standin-dhcp.pid"
    sandbox.ns_run(
        sb.name,
        [
            "dnsmasq",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            f"--interface={STANDIN_BRIDGE}",
            "--except-interface=lo",
            "--dhcp-range=10.10.0.100,10.10.0.150,12h",
            "--dhcp-option=option:router,10.10.0.1",
            "--domain=prox.local",
            f"--pid-file={pidfile}",
            f"--dhcp-leasefile={sb.root / 'standin-dhcp.leases'}",
        ],
    )
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="stand-in pid file")
    return int(pidfile.read_text())


def stop_pid(pid: int) -> None:
    if alive(pid):
        os.kill(pid, 15)
    wait_until(lambda: not alive(pid), what=f"pid {pid} to exit")


@pytest.fixture
def make_name() -> Iterator[Callable[[str], str]]:
    """Unique sandbox names; every sandbox named through it is destroyed at the end."""
    names: list[str] = []

    def make(suffix: str) -> str:
        name = f"{BASE}{suffix}"
        names.append(name)
        return name

    yield make
    for name in names:
        sandbox.destroy(name)
        assert not ours(name)


# --------------------------------------------------------------------------- tests


def test_validate_name() -> None:
    for good in ("a", "pve1", "a-b-c", "abcdefghij"):
        sandbox.validate_name(good)
    for bad in ("", "1abc", "Abc", "abcdefghijk", "a_b", "a/b", "-a", "a.b"):
        with pytest.raises(sandbox.SandboxError, match="sandbox name"):
            sandbox.validate_name(bad)


def test_settings_overrides() -> None:
    sb = sandbox.Sandbox(name="x", lan_ns="x-lan", root=Path("/r/x"))
    assert sb.settings_overrides() == {
        "interfaces_file": "/r/x/etc/network/interfaces",
        "dnsmasq_conf": "/r/x/etc/proximity/dnsmasq.conf",
        "leases_file": "/r/x/var/lib/proximity/dnsmasq.leases",
        "state_dir": "/r/x/var/lib/proximity",
        "pve_cluster_firewall": "/r/x/etc/pve/firewall/cluster.fw",
        "run_dir": "/r/x/run",
        "upstream_dns": ["198.51.100.1"],
        "netns": "x",
    }


def test_lifecycle(make_name: Callable[[str], str]) -> None:
    name = make_name("a")
    links_before, addrs_before = root_links(), root_addrs()
    with pytest.raises(sandbox.SandboxError, match=f"proximity sandbox create {name}"):
        sandbox.load(name)

    t0 = time.monotonic()
    sb = sandbox.create(name)
    create_seconds = time.monotonic() - t0
    assert sb == sandbox.load(name)
    assert sb.lan_ns == f"{name}-lan"
    assert sb.root == sandbox.SANDBOX_ROOT / name
    assert {name, sb.lan_ns} <= netns_list()
    assert (sb.root / "sandbox.json").is_file()
    assert sb.interfaces_file.read_text() == sandbox.INTERFACES_TEMPLATE
    assert Path(f"/etc/netns/{name}/resolv.conf").read_text() == "nameserver 198.51.100.1\n"

    with pytest.raises(sandbox.SandboxError, match=f"proximity sandbox destroy {name}"):
        sandbox.create(name)

    # vmbr0 up with its address and the default route, seen through netlink
    with IPRoute(netns=name, flags=0) as ipr:
        (idx,) = ipr.link_lookup(ifname="vmbr0")
        link = list(ipr.get_links(idx))[0]
        assert link["flags"] & 1 and link.get_attr("IFLA_OPERSTATE") == "UP"
        addrs = {
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(family=socket.AF_INET, index=idx)
        }
        assert "198.51.100.2/24" in addrs
        defaults = [
            r.get_attr("RTA_GATEWAY")
            for r in ipr.get_routes(family=socket.AF_INET, table=254)
            if r["dst_len"] == 0
        ]
        assert defaults == ["198.51.100.1"]
        (eno1,) = ipr.link_lookup(ifname="eno1")
        assert list(ipr.get_links(eno1))[0].get_attr("IFLA_MASTER") == idx
        # IPv6 beside it: the inet6 stanza's address (past DAD: not tentative) and its default route
        addrs6 = {
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}": a.get_attr("IFA_FLAGS")
            for a in ipr.get_addr(family=socket.AF_INET6, index=idx)
        }
        assert addrs6.get(sandbox.HOST_UPLINK_ADDR6) is not None, addrs6
        assert not addrs6[sandbox.HOST_UPLINK_ADDR6] & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
        defaults6 = [
            (r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"))
            for r in ipr.get_routes(family=socket.AF_INET6, table=254)
            if r["dst_len"] == 0
        ]
        assert defaults6 == [(sandbox.LAN_GATEWAY6, idx)]
    # only the uplink skipped DAD: links Proximity creates later get the namespace's (kernel) default
    assert sandbox.ns_run(name, ["sysctl", "-n", "net.ipv6.conf.default.accept_dad"]).stdout.strip() == "1"

    # the host namespace reaches the internet host over both families (ping from inside it)
    for family, target in (("-4", sandbox.INTERNET_HOST), ("-6", sandbox.INTERNET_HOST6)):
        ping = sandbox.ns_run(name, ["busybox", "ping", family, "-c1", "-W2", target], check=False)
        assert ping.returncode == 0 and "1 packets received" in ping.stdout, ping

    # the LAN side: gateway, internet test host, no forwarding
    with IPRoute(netns=sb.lan_ns, flags=0) as ipr:
        lan_addrs = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
        lan_addrs6 = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET6)}
    assert {"198.51.100.1", "203.0.113.10"} <= lan_addrs
    assert {sandbox.LAN_GATEWAY6, sandbox.INTERNET_HOST6} <= lan_addrs6
    fwd = sandbox.ns_run(sb.lan_ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
    assert fwd == "0"
    fwd6 = sandbox.ns_run(sb.lan_ns, ["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout.strip()
    assert fwd6 == "0"

    # ifupdown2 agrees with the interfaces file (and uses the sandbox's own state dir)
    sandbox.ns_run(name, ["ifquery", "-a", "--check"])
    assert any((sb.root / "var/lib/ifupdown2").iterdir())

    # upstream DNS answers internet.test from inside the host namespace
    out = sandbox.ns_run(
        name, ["busybox", "nslookup", "-type=a", "internet.test", "198.51.100.1"], check=False
    ).stdout
    assert "203.0.113.10" in out, out
    out = sandbox.ns_run(
        name, ["busybox", "nslookup", "-type=aaaa", "internet.test", sandbox.LAN_GATEWAY6], check=False
    ).stdout
    assert sandbox.INTERNET_HOST6 in out, out

    upstream_pid = int((sb.run_dir / "upstream-dns.pid").read_text())
    assert alive(upstream_pid)

    # a client on the stand-in prox-net gets a lease and a resolv.conf
    standin_pid = start_standin_dhcp(sb)
    try:
        client = sandbox.attach_client(sb, "ct101")
        assert client.hostname == "ct101" and client.ns == f"{name}-ct101"
        assert client.ip is not None
        leased = ipaddress.IPv4Address(client.ip)
        assert (
            ipaddress.IPv4Address("10.10.0.100") <= leased <= ipaddress.IPv4Address("10.10.0.150")
        )
        resolv = Path(f"/etc/netns/{client.ns}/resolv.conf").read_text().split("\n")
        assert "nameserver 10.10.0.1" in resolv
        assert "search prox.local" in resolv
        assert client.ns in netns_list()
        assert sandbox.clients(sb) == [client]
        with IPRoute(netns=name, flags=0) as ipr:
            (veth,) = ipr.link_lookup(ifname="pxc0")
            (bridge,) = ipr.link_lookup(ifname=STANDIN_BRIDGE)
            assert list(ipr.get_links(veth))[0].get_attr("IFLA_MASTER") == bridge
        with pytest.raises(sandbox.SandboxError, match="already attached"):
            sandbox.attach_client(sb, "ct101")

        second = sandbox.attach_client(sb, "ct102")
        assert second.ip and second.ip != client.ip
        sandbox.detach_client(sb, "ct102")
        assert second.ns not in netns_list()
        assert not Path(f"/etc/netns/{second.ns}").exists()
        assert sandbox.clients(sb) == [client]
        sandbox.detach_client(sb, "ct102")  # idempotent

        with pytest.raises(sandbox.SandboxError, match="bridge nobr does not exist"):
            sandbox.attach_client(sb, "ct103", bridge="nobr")
        assert f"{name}-ct103" not in netns_list()
    finally:
        stop_pid(standin_pid)

    t0 = time.monotonic()
    sandbox.destroy(name)  # the client ct101 is still attached: destroy removes it too
    destroy_seconds = time.monotonic() - t0
    sandbox.destroy(name)  # idempotent

    assert not ours(name), ours(name)
    for ns in (name, sb.lan_ns, client.ns):
        assert not Path(f"/etc/netns/{ns}").exists()
    assert not sb.root.exists()
    wait_until(lambda: not alive(upstream_pid), what="upstream dnsmasq to exit")
    assert root_links() == links_before
    assert root_addrs() == addrs_before
    with pytest.raises(sandbox.SandboxError, match="does not exist"):
        sandbox.load(name)
    print(f"create {create_seconds:.2f}s, destroy {destroy_seconds:.3f}s")


def test_zone_reaches_internet_by_nat66_or_a_routed_prefix(make_name: Callable[[str], str]) -> None:
    """A guest on a stand-in zone bridge reaches the internet host over IPv6 through the host: with NAT66 out
    of vmbr0 (the test's own rule), or with the zone's global prefix routed back by the LAN (route_prefix)."""
    name = make_name("d")
    sb = sandbox.create(name)
    guest, guest_addr, zone_gw = f"{name}-g6", "2001:db8:100::50", "2001:db8:100::1"
    ip(name, "link", "add", "zone6", "type", "bridge")  # a stand-in for a zone's bridge
    ip(name, "addr", "add", f"{zone_gw}/64", "dev", "zone6", "nodad")
    ip(name, "link", "set", "zone6", "up")
    sandbox.ns_run(name, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    subprocess.run(["ip", "netns", "add", guest], check=True)
    try:
        ip(name, "link", "add", "g6h", "type", "veth", "peer", "name", "eth0", "netns", guest)
        ip(name, "link", "set", "g6h", "master", "zone6", "up")
        ip(guest, "link", "set", "lo", "up")
        ip(guest, "addr", "add", f"{guest_addr}/64", "dev", "eth0", "nodad")
        ip(guest, "link", "set", "eth0", "up")
        ip(guest, "-6", "route", "add", "default", "via", zone_gw)

        def ping(ns: str, target: str, *source: str) -> bool:
            argv = ["busybox", "ping", "-6", "-c1", "-W1", *(["-I", *source] if source else []), target]
            return sandbox.ns_run(ns, argv, check=False).returncode == 0

        assert ping(guest, zone_gw)
        assert not ping(guest, sandbox.INTERNET_HOST6)  # the LAN knows no way back to the zone

        nat66 = ('add table ip6 t_nat66; add chain ip6 t_nat66 post { type nat hook postrouting priority 100; }; '
                 'add rule ip6 t_nat66 post oifname "vmbr0" masquerade')
        sandbox.ns_run(name, ["nft", nat66])
        assert ping(guest, sandbox.INTERNET_HOST6)  # NAT66: the internet sees the uplink's address
        sandbox.ns_run(name, ["nft", "delete", "table", "ip6", "t_nat66"])
        assert not ping(sb.lan_ns, guest_addr, sandbox.INTERNET_HOST6)

        assert sandbox.route_prefix(sb, "2001:db8:100::/56") == "2001:db8:100::/56"
        assert sandbox.route_prefix(sb, "2001:db8:100::/56")  # replacing it is fine
        route = ip(sb.lan_ns, "-6", "route", "show", "exact", "2001:db8:100::/56").stdout
        assert f"via {sandbox.HOST_UPLINK_ADDR6.split('/')[0]} dev lan0" in route, route
        assert ping(guest, sandbox.INTERNET_HOST6)  # routed: no NAT, both ways
        assert ping(sb.lan_ns, guest_addr, sandbox.INTERNET_HOST6)
        sandbox.unroute_prefix(sb, "2001:db8:100::/56")
        sandbox.unroute_prefix(sb, "2001:db8:100::/56")  # idempotent
        assert not ping(sb.lan_ns, guest_addr, sandbox.INTERNET_HOST6)
    finally:
        subprocess.run(["ip", "netns", "delete", guest], check=True)

    for bad, says in (("2001:db8:100::1/56", "not an IPv6 network"), ("10.10.0.0/24", "not an IPv6 network"),
                      ("2001:db9::/48", "outside 2001:db8::/32"), ("2001:db8::/32", "overlaps"),
                      ("2001:db8:203:113::/64", "overlaps")):
        with pytest.raises(sandbox.SandboxError, match=says):
            sandbox.route_prefix(sb, bad)


def test_failed_create_is_cleaned_up(
    make_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make_name("b")
    links_before = root_links()
    started: list[int] = []
    real_start = lan.start_upstream_dns

    def start_then_fail(sb: sandbox.Sandbox, timeout: float = 10) -> int:
        started.append(real_start(sb, timeout))
        raise sandbox.SandboxError("injected failure")

    monkeypatch.setattr(lan, "start_upstream_dns", start_then_fail)
    with pytest.raises(sandbox.SandboxError, match="injected failure"):
        sandbox.create(name)

    assert started, "the failure was injected after dnsmasq started"
    wait_until(lambda: not alive(started[0]), what="upstream dnsmasq to exit")
    assert not ours(name)
    assert not Path(f"/etc/netns/{name}").exists()
    assert not (sandbox.SANDBOX_ROOT / name).exists()
    assert root_links() == links_before


def test_destroy_leaves_foreign_namespace_alone(make_name: Callable[[str], str]) -> None:
    name = make_name("c")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with pytest.raises(sandbox.SandboxError, match="not a Proximity sandbox"):
            sandbox.destroy(name)
        with pytest.raises(sandbox.SandboxError, match="not a Proximity sandbox"):
            sandbox.load(name)
        with pytest.raises(sandbox.SandboxError, match="exists"):
            sandbox.create(name)
        assert name in netns_list()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_destroy_removes_the_namespace_of_a_probe_its_service_was_stopped_in(make_name: Callable[[str], str]) -> None:
    """`make demo-clean` stops the service, maybe midway through a probe: its namespace goes too."""
    name = make_name("p")
    sandbox.create(name)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"pxprobe-{gone.pid}"  # a probe whose process is dead
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        sandbox.destroy(name)
        assert stale not in netns_list()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


def test_no_leftovers() -> None:
    """Runs last in this module: nothing of this run remains."""
    mine = re.compile(rf"{BASE}[a-z](-.*)?")
    assert not [ns for ns in netns_list() if mine.fullmatch(ns)]
    etc_netns = Path("/etc/netns")
    if etc_netns.exists():
        assert not [p for p in etc_netns.iterdir() if mine.fullmatch(p.name)]
