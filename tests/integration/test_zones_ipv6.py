"""IPv6 in zones on a real sandbox: a ULA zone (RA and SLAAC from its dnsmasq, NAT66 out of the
uplink), a routed zone (the LAN routes its global prefix to the host: no NAT), AAAA names of
reservations before any boot, isolation between zones over IPv6, and the uplink keeping its own
router advertisements once the host forwards IPv6."""

from __future__ import annotations

import ipaddress
import json

import pytest

from proximity import sandbox as sandboxes
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from tests.integration.tools import Listener, connect, proximity, resolve, wait_or_fail

ROUTED = "2001:db8:77:1::/64"  # out of the sandbox's documentation prefix, routed by its LAN router


def global_address(ns: str, prefix: str) -> str | None:
    """The namespace's address in ``prefix`` once it passed DAD (SLAAC from the zone's advertisements)."""
    out = sandboxes.ns_run(ns, ["ip", "-j", "-6", "address", "show", "scope", "global"]).stdout
    net = ipaddress.IPv6Network(prefix)
    for link in json.loads(out):
        for a in link.get("addr_info", []):
            if "local" in a and ipaddress.IPv6Address(a["local"]) in net and not a.get("tentative"):
                return a["local"]
    return None


@pytest.fixture(scope="module")
def v6(sandbox):
    sb = sandbox
    proximity("up", "--sandbox", sb.name)
    proximity("zone", "create", "ula", "--subnet", "10.30.0.0/24", "--sandbox", sb.name)  # --ipv6 auto: the default
    proximity("zone", "create", "pub", "--subnet", "10.31.0.0/24", "--ipv6", ROUTED, "--sandbox", sb.name)
    sandboxes.route_prefix(sb, ROUTED)
    rows = {r["name"]: r for r in json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout)}
    clients = {zone: sandboxes.attach_client(sb, f"{zone}-1", bridge=f"pz-{zone}") for zone in ("ula", "pub")}
    addresses = {zone: wait_or_fail(lambda zone=zone: global_address(clients[zone].ns, rows[zone]["ipv6_prefix"]),
                                    15, f"a SLAAC address in zone {zone}") for zone in clients}
    try:
        yield sb, rows, clients, addresses
    finally:
        for client in clients.values():
            sandboxes.detach_client(sb, client.hostname)
        sandboxes.unroute_prefix(sb, ROUTED)
        for zone in clients:
            proximity("zone", "delete", zone, "--force", "--sandbox", sb.name, check=False)
        proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False)


def test_a_ula_zone_gets_its_own_64_and_reaches_the_internet_through_nat66(v6):
    sb, rows, clients, addresses = v6
    ula = ipaddress.IPv6Network(rows["ula"]["ipv6_prefix"])
    assert ula.prefixlen == 64 and ula.subnet_of(ipaddress.IPv6Network("fd00::/8")) and rows["ula"]["ipv6_nat"]
    routes = sandboxes.ns_run(clients["ula"].ns, ["ip", "-6", "route", "show", "default"]).stdout
    assert "proto ra" in routes  # the host routes IPv6, so the zone's advertisements offer a default route
    with Listener(sb.lan_ns, "::", 9600) as server:
        assert connect(clients["ula"].ns, sandboxes.INTERNET_HOST6, 9600).returncode == 0
        assert server.next_peer() == sandboxes.HOST_UPLINK_ADDR6.split("/")[0]  # masqueraded


def test_a_routed_zone_is_not_natted(v6):
    sb, rows, clients, addresses = v6
    assert rows["pub"]["ipv6_prefix"] == ROUTED and not rows["pub"]["ipv6_nat"]
    with Listener(sb.lan_ns, "::", 9601) as server:
        assert connect(clients["pub"].ns, sandboxes.INTERNET_HOST6, 9601).returncode == 0
        assert server.next_peer() == addresses["pub"]  # its own address, routed
    with Listener(clients["pub"].ns, "::", 9602):  # routed, yet closed to new connections from outside
        assert connect(sb.lan_ns, addresses["pub"], 9602, timeout=1).returncode != 0


def test_zones_are_isolated_over_ipv6_too(v6):
    sb, rows, clients, addresses = v6
    with Listener(clients["pub"].ns, "::", 9603), Listener(clients["ula"].ns, "::", 9603):
        assert connect(clients["ula"].ns, addresses["pub"], 9603, timeout=1).returncode != 0
        assert connect(clients["pub"].ns, addresses["ula"], 9603, timeout=1).returncode != 0
        assert connect(clients["ula"].ns, rows["pub"]["gateway6"], 53, timeout=1).returncode != 0  # its gateway
        proximity("zone", "peer", "ula", "pub", "--sandbox", sb.name)
        try:
            assert connect(clients["ula"].ns, addresses["pub"], 9603).returncode == 0
        finally:
            proximity("zone", "unpeer", "ula", "pub", "--sandbox", sb.name)


def test_a_reservation_has_its_aaaa_name_before_boot(v6):
    sb, rows, clients, addresses = v6
    manager = NetworkManager(sb.settings())
    view = next(v for v in manager.zones(manager.observe())[0].views() if v.zone == "ula")
    reservation = Reservations(view, manager.host).reserve("app-6", [])
    gateway6 = rows["ula"]["gateway6"]
    expected = str(ipaddress.IPv6Network(rows["ula"]["ipv6_prefix"]).network_address
                   + (int(ipaddress.IPv4Address(reservation.ip)) - int(ipaddress.IPv4Network("10.30.0.0/24").network_address)))
    try:
        found = wait_or_fail(lambda: resolve(clients["ula"].ns, "app-6.ula.internal", gateway6, rdtype="AAAA"),
                             10, "the reservation's AAAA record")
        assert found == [expected]
        assert resolve(sb.name, "app-6.ula.internal", rows["ula"]["gateway"]) == [reservation.ip]
    finally:
        Reservations(view, manager.host).release("app-6")


def test_the_uplink_keeps_accepting_router_advertisements(v6):
    sb, *_ = v6
    value = sandboxes.ns_run(sb.name, ["sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.vmbr0.accept_ra"])
    forwarding, accept_ra = value.stdout.split()
    assert forwarding == "1" and accept_ra == "2"


def test_a_host_with_ipv6_disabled_refuses_an_ipv6_zone_with_the_fix(v6):
    sb, *_ = v6
    key = "net.ipv6.conf.all.disable_ipv6"
    sandboxes.ns_run(sb.name, ["sysctl", "-qw", f"{key}=1"])
    try:
        refused = proximity("zone", "create", "six", "--subnet", "10.32.0.0/24", "--sandbox", sb.name, check=False)
        assert refused.returncode == 2, refused
        assert "IPv6 is disabled" in refused.stderr and f"sysctl -w {key}=0" in refused.stderr
        assert 'zones.six.ipv6' in refused.stderr and "Traceback" not in refused.stderr
        assert "six" not in sb.settings().zones_file.read_text()  # nothing was written
    finally:
        sandboxes.ns_run(sb.name, ["sysctl", "-qw", f"{key}=0"])
