"""The nftables table's rules for real, in bare namespaces (no sandbox): two zones, IPv4 and IPv6.

A host namespace with two bridges (zone ``a`` masqueraded, zone ``b`` routed and with host services)
and an uplink to a "wan" namespace; client namespaces on the bridges. The table is rendered from a
``FirewallSpec`` and loaded with ``nft -f``, as ``up`` does. br_netfilter is on in the host namespace
(as pve-firewall forces), so traffic inside a bridge passes the table too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from ipaddress import ip_interface
from pathlib import Path

import pytest

from proximity.errors import HostError
from proximity.host import Host
from proximity.network import nft
from proximity.network.changes import Env
from proximity.network.nft_changes import ApplyRuleset, live_digest
from proximity.settings import load_settings
from tests.integration.tools import Listener

TAG = f"nf{os.getpid() % 100000}"
H, W = f"{TAG}-h", f"{TAG}-w"
CLIENTS = {  # client: (bridge, IPv4, IPv6)
    "a1": ("zA", "10.61.0.10", "fd61::10"),
    "a2": ("zA", "10.61.0.11", "fd61::11"),
    "b1": ("zB", "10.62.0.10", "fd62::10"),
}
GW = {"zA": ("10.61.0.1", "fd61::1"), "zB": ("10.62.0.1", "fd62::1")}
UP4, UP6, WAN4, WAN6 = "198.51.100.2", "2001:db8:1::2", "198.51.100.1", "2001:db8:1::1"
PORT = 7000



def ns(name: str) -> str:
    return f"{TAG}-{name}"


def sh(namespace: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {namespace}: {result.stderr}")
    return result


def ip(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "-n", namespace, *args], check=True, timeout=30, capture_output=True)


def zone_spec(peers: bool = False) -> nft.FirewallSpec:
    a = nft.FirewallZone("a", "zA", (ip_interface("10.61.0.1/24"), ip_interface("fd61::1/64")))
    b = nft.FirewallZone("b", "zB", (ip_interface("10.62.0.1/24"), ip_interface("fd62::1/64")), "routed", True)
    return nft.FirewallSpec((a, b), "up0", frozenset({frozenset({"a", "b"})}) if peers else frozenset())


def load(spec: nft.FirewallSpec) -> None:
    subprocess.run(["ip", "netns", "exec", H, "nft", "-f", "-"], input=nft.render_table(spec), check=True,
                   text=True, timeout=30)


def listening(namespace: str, port: int = PORT) -> Listener:
    """A dual-stack TCP server in a namespace that prints each peer; stopped by pid."""
    return Listener(namespace, "::", port)


def tcp(namespace: str, address: str, port: int = PORT, timeout: float = 1.5) -> bool:
    code = ("import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), "
            "timeout=float(sys.argv[3])); s.recv(10)")
    return sh(namespace, sys.executable, "-c", code, address, str(port), str(timeout), check=False).returncode == 0


def ping(namespace: str, address: str) -> bool:
    return sh(namespace, "busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


@pytest.fixture(scope="module")
def zones():
    names = [H, W, *(ns(c) for c in CLIENTS)]
    servers: list[Listener] = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
            ip(name, "link", "set", "lo", "up")
        for br, (gw4, gw6) in GW.items():
            ip(H, "link", "add", br, "type", "bridge")
            ip(H, "address", "add", f"{gw4}/24", "dev", br)
            ip(H, "address", "add", f"{gw6}/64", "dev", br, "nodad")
            ip(H, "link", "set", br, "up")
        ip(H, "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", W)
        ip(H, "address", "add", f"{UP4}/24", "dev", "up0")
        ip(H, "address", "add", f"{UP6}/64", "dev", "up0", "nodad")
        ip(H, "link", "set", "up0", "up")
        ip(W, "address", "add", f"{WAN4}/24", "dev", "wan0")
        ip(W, "address", "add", f"{WAN6}/64", "dev", "wan0", "nodad")
        ip(W, "link", "set", "wan0", "up")
        # The routed zone b is routed to by the wan; zone a is not (it is masqueraded).
        ip(W, "route", "add", "10.62.0.0/24", "via", UP4)
        ip(W, "-6", "route", "add", "fd62::/64", "via", UP6)
        for client, (br, a4, a6) in CLIENTS.items():
            c = ns(client)
            ip(H, "link", "add", f"v{client}", "type", "veth", "peer", "name", "eth0", "netns", c)
            ip(H, "link", "set", f"v{client}", "master", br, "up")
            ip(c, "address", "add", f"{a4}/24", "dev", "eth0")
            ip(c, "address", "add", f"{a6}/64", "dev", "eth0", "nodad")
            ip(c, "link", "set", "eth0", "up")
            ip(c, "route", "add", "default", "via", GW[br][0])
            ip(c, "-6", "route", "add", "default", "via", GW[br][1])
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"):
            sh(H, "sysctl", "-q", "-w", key)
        load(zone_spec())
        servers = [listening(name) for name in (H, W, *(ns(c) for c in CLIENTS))]
        # The host's own services: ssh on 22 and DNS on 53 (tcp), on every address.
        servers += [listening(H, 22), listening(H, 53)]
        yield servers
    finally:
        for server in servers:
            server.stop()
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def test_zones_are_isolated_both_ways_for_ipv4_and_ipv6_until_peered(zones):
    a1, b1 = CLIENTS["a1"], CLIENTS["b1"]
    for family in (1, 2):
        assert not ping(ns("a1"), b1[family]) and not ping(ns("b1"), a1[family]), family
        assert not tcp(ns("a1"), b1[family]) and not tcp(ns("b1"), a1[family]), family
    load(zone_spec(peers=True))
    try:
        for family in (1, 2):
            assert ping(ns("a1"), b1[family]) and ping(ns("b1"), a1[family]), family
            assert tcp(ns("a1"), b1[family]) and tcp(ns("b1"), a1[family]), family
    finally:
        load(zone_spec())
    assert not tcp(ns("a1"), b1[1])


def test_inside_a_bridge_traffic_flows_with_br_netfilter_on(zones):
    assert sh(H, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables").stdout.strip() == "1"
    for family in (1, 2):
        assert ping(ns("a1"), CLIENTS["a2"][family]) and tcp(ns("a2"), CLIENTS["a1"][family]), family


def test_zones_reach_the_uplink_masqueraded_or_routed_and_the_outside_cannot_reach_in(zones):
    wan = zones[1]
    for family, (seen_a, wan_addr) in ((1, (UP4, WAN4)), (2, (UP6, WAN6))):
        assert tcp(ns("a1"), wan_addr) and wan.next_peer() == seen_a  # masqueraded
        assert tcp(ns("b1"), wan_addr) and wan.next_peer() == CLIENTS["b1"][family]  # routed: its own address
        assert not tcp(W, CLIENTS["b1"][family])  # routed to, yet new connections in are dropped
        assert not ping(W, CLIENTS["b1"][family])


def test_the_host_answers_a_zone_on_its_own_gateway_only_and_host_services_need_the_switch(zones):
    for family in (0, 1):
        own, other = GW["zA"][family], GW["zB"][family]
        assert ping(ns("a1"), own) and tcp(ns("a1"), own, 53)  # ICMP and DNS on its own gateway
        assert not ping(ns("a1"), other) and not tcp(ns("a1"), other, 53)  # never another zone's gateway
        assert not tcp(ns("a1"), own, 22) and not tcp(ns("a1"), UP4 if family == 0 else UP6, 22)  # ssh: no
        assert tcp(ns("b1"), GW["zB"][family], 22)  # zone b has host_services
        assert not tcp(ns("b1"), GW["zA"][family], 22)  # ... but not through another zone's gateway


def _env(tmp_path: Path) -> Env:
    settings = load_settings(dnsmasq_conf=str(tmp_path / "dnsmasq.conf"), state_dir=str(tmp_path / "state"),
                             leases_file=str(tmp_path / "leases"))
    return Env(Host(H), settings, None)


def test_a_ruleset_that_nft_refuses_changes_nothing(zones, tmp_path):
    env = _env(tmp_path)
    before = live_digest(env)
    bad = nft.render_table(zone_spec()).replace("masquerade\n", "masqeurade\n", 1)
    change = ApplyRuleset(env.settings.ruleset_file, bad, None)
    with pytest.raises(HostError, match="nft refused the ruleset.*not changed"):
        change.apply(env)
    assert live_digest(env) == before and not env.settings.ruleset_file.exists()
    assert not env.settings.ruleset_state_file.exists()
    change.undo(env)  # nothing was applied: nothing to undo
    assert live_digest(env) == before


def test_kill_9_of_nft_leaves_the_old_table_or_the_new_one(zones, tmp_path):
    """``nft -f`` is one transaction: killed at any point, the kernel has the old table or the new one."""
    old_spec = zone_spec()
    many = (nft.FirewallZone(f"k{i}", f"k{i}", (ip_interface(f"10.{100 + i // 250}.{i % 250}.1/24"),))
            for i in range(400))
    big = nft.FirewallSpec(tuple(many), "up0")
    env = _env(tmp_path)
    path = tmp_path / "big.nft"
    path.write_text(nft.render_table(big))
    load(big)
    new = live_digest(env)
    seen, killed = set(), 0
    rng = random.Random(1)
    try:
        for _ in range(12):
            load(old_spec)
            old = live_digest(env)
            proc = subprocess.Popen(["ip", "netns", "exec", H, "nft", "-f", str(path)])
            time.sleep(rng.uniform(0, 0.4))  # a random point in the load (it takes ~0.3 s here)
            proc.send_signal(signal.SIGKILL)
            killed += proc.wait(timeout=10) == -signal.SIGKILL
            now = live_digest(env)
            assert now in (old, new), "a mix of the two tables"
            seen.add("new" if now == new else "old")
    finally:
        load(old_spec)
    assert killed  # some were killed mid-load (which table each left depends on timing; either is right)


def test_the_ruleset_digest_survives_a_reload_of_the_same_file(zones, tmp_path):
    """Handles change on every load; the normalised listing does not (so an ifreload's post-up is no drift)."""
    env = _env(tmp_path)
    first = live_digest(env)
    load(zone_spec())
    assert live_digest(env) == first
    listing = json.loads(sh(H, "nft", "-j", "list", "table", "inet", "proximity").stdout)
    assert any("handle" in next(iter(item.values())) for item in listing["nftables"] if "metainfo" not in item)
