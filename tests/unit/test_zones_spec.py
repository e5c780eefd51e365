"""The zone spec: the default zone is today's network, further zones come from [zones.NAME] tables,
allocations are stable, overlaps are refused naming both sides. Pure: no host, no root."""

import dataclasses
import ipaddress
import json
import string

import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from rich.text import Text

from proximity.errors import HostError, NotFoundError, SettingsError
from proximity.host import Host
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from proximity.spec import alloc, config
from proximity.spec.checks import check_range, default_range
from proximity.spec.config import parse_ipv6_mode, parse_zone
from proximity.spec.macs import free_mac
from proximity.spec.naming import DEFAULT_ZONE, ZONE_NAME_RE, bridge_name, check_zone_name
from proximity.spec.overlaps import Claim, host_claims
from proximity.spec.state import ZoneAllocation, ZoneState, load_state, parse_state, render_state, save_state
from proximity.spec.zones import resolve

V4, V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
GID = 0x4C1F20A9B3  # a fixed Global ID: fd4c:1f20:a9b3::/48


def no_global_id():
    raise AssertionError("a ULA prefix was made though no zone needs one")


def with_config(tmp_path, monkeypatch, text, **overrides):
    config = tmp_path / "proximity.toml"
    config.write_text(text)
    monkeypatch.setenv("PROXIMITY_CONFIG", str(config))
    return load_settings(**overrides)


def refused(tmp_path, monkeypatch, text, **overrides) -> str:
    with pytest.raises(SettingsError) as caught:
        with_config(tmp_path, monkeypatch, text, **overrides)
    message = str(caught.value)
    assert "Traceback" not in message
    # The CLI prints errors as Rich markup: nothing in the message may read as a tag and vanish.
    assert Text.from_markup(message).plain == message
    return message


# -- the default zone ----------------------------------------------------------------------------------

def test_the_default_zone_is_todays_network_with_todays_paths():
    s = load_settings()
    spec = resolve(s, ZoneState(), new_global_id=no_global_id)
    (zone,) = spec.zones
    assert spec.default is zone and zone.is_default and zone.name == DEFAULT_ZONE == "prox-net"
    assert (zone.type, zone.bridge, zone.domain, zone.lease_time) == ("local", "prox-net", "prox.local", "12h")
    assert zone.nat == "masquerade" and zone.host_services  # as today: nothing filters the host's services
    (v4,) = zone.subnets
    assert zone.ipv4 is v4 and zone.ipv6 is None  # IPv6 is opt-in for the default zone
    assert (str(v4.cidr), str(v4.gateway_interface), v4.nat) == ("10.10.0.0/24", "10.10.0.1/24", True)
    assert tuple(map(str, v4.dhcp_range)) == ("10.10.0.100", "10.10.0.250") and v4.pool_size == s.pool_size
    p = zone.paths
    assert (p.dnsmasq_conf, p.leases_file, p.reservations_db, p.dhcp_hosts_file, p.addn_hosts_file) == (
        s.dnsmasq_conf, s.leases_file, s.reservations_db, s.dhcp_hosts_file, s.addn_hosts_file)
    assert (p.service_name, p.unit_file, p.dns_pid_file, p.dns_log_file) == (
        "proximity-dns", s.unit_file, s.dns_pid_file, s.dns_log_file)
    assert str(p.leases_file) == "/var/lib/proximity/dnsmasq.leases"
    assert spec.state == ZoneState()  # nothing was allocated, so nothing is to be saved


def test_the_default_zone_follows_changed_settings():
    s = load_settings(bridge="lab-net", gateway="10.77.0.254/16", dhcp_start="10.77.1.0", dhcp_end="10.77.9.255",
                      domain="lab.example", lease_time="1h", service_name="lab-dns")
    zone = resolve(s, ZoneState()).default
    assert (zone.name, zone.bridge, zone.domain, zone.lease_time) == ("prox-net", "lab-net", "lab.example", "1h")
    assert (str(zone.ipv4.cidr), str(zone.ipv4.gateway)) == ("10.77.0.0/16", "10.77.0.254")
    assert tuple(map(str, zone.ipv4.dhcp_range)) == ("10.77.1.0", "10.77.9.255")
    assert zone.paths.service_name == "lab-dns" and zone.paths.unit_file.name == "lab-dns.service"


def test_ipv6_on_the_default_zone_when_asked(monkeypatch):
    monkeypatch.setenv("PROXIMITY_IPV6", "auto")
    spec = resolve(load_settings(), ZoneState(), new_global_id=lambda: GID)
    v6 = spec.default.ipv6
    assert str(v6.cidr) == "fd4c:1f20:a9b3:1::/64" and str(v6.gateway) == "fd4c:1f20:a9b3:1::1"
    assert v6.nat  # a ULA reaches out only masqueraded, as Incus, Docker and PVE SDN do
    assert tuple(map(str, v6.dhcp_range)) == ("fd4c:1f20:a9b3:1::1000", "fd4c:1f20:a9b3:1::ffff")
    assert spec.state.ula == V6("fd4c:1f20:a9b3::/48") and spec.state.get("prox-net").ipv6_id == 1
    routed = resolve(load_settings(ipv6="2001:db8:0:7::/64"), ZoneState(), new_global_id=no_global_id).default.ipv6
    assert str(routed.cidr) == "2001:db8:0:7::/64" and not routed.nat  # a routed prefix is never NATed


@pytest.mark.parametrize(("value", "reason"), [
    ("on", "not 'auto'"), ("2001:db8::/48", "/64"), ("2001:db8::1/64", "host bits zero"),
    ("fe80::/64", "not a unicast prefix"), ("ff02::/64", "not a unicast prefix"), ("10.0.0.0/24", "not 'auto'"),
])
def test_a_wrong_ipv6_setting_is_refused_with_the_reason(value, reason):
    with pytest.raises(SettingsError) as caught:
        load_settings(ipv6=value)
    assert "'ipv6'" in str(caught.value) and reason in str(caught.value)


# -- [zones.NAME] tables ---------------------------------------------------------------------------------

ZONES = """
domain = "prox.local"

[zones.web]
subnet = "10.20.0.0/24"
ipv6 = "off"

[zones.db]
subnet = "10.30.0.254/16"
dhcp_range = "10.30.1.0-10.30.1.99"
domain = "db.lab.example"
ipv6 = "2001:db8:0:30::/64"
nat = "off"
host_services = true
type = "local"

[zones.build]
"""


def test_zones_load_from_the_same_file_in_its_order(tmp_path, monkeypatch):
    s = with_config(tmp_path, monkeypatch, ZONES)
    assert [z.name for z in s.zones] == ["web", "db", "build"]
    web, db, build = s.zones
    assert (web.subnet, web.gateway, web.ipv6, web.domain, web.nat, web.host_services) == (
        V4("10.20.0.0/24"), ipaddress.IPv4Address("10.20.0.1"), "off", None, "masquerade", False)
    assert (db.gateway, db.ipv6, db.nat, db.host_services) == (
        ipaddress.IPv4Address("10.30.0.254"), V6("2001:db8:0:30::/64"), "off", True)
    assert build == parse_zone("build", {})  # every key may be left out
    assert s.bridge == "prox-net" and s.domain == "prox.local"  # the top-level settings are as before


def test_further_zones_resolve_with_their_own_names_paths_and_networks(tmp_path, monkeypatch):
    s = with_config(tmp_path, monkeypatch, ZONES)
    spec = resolve(s, ZoneState(), new_global_id=lambda: GID)
    assert [z.name for z in spec.zones] == ["prox-net", "web", "db", "build"]
    web, db, build = spec.zone("web"), spec.zone("db"), spec.zone("build")
    assert (web.bridge, web.domain, web.host_services, web.ipv6) == ("pz-web", "web.internal", False, None)
    assert tuple(map(str, web.ipv4.dhcp_range)) == ("10.20.0.100", "10.20.0.250")
    assert (str(db.ipv4.gateway_interface), db.domain, db.nat, db.ipv4.nat, db.ipv6.nat) == (
        "10.30.0.254/16", "db.lab.example", "off", False, False)
    assert tuple(map(str, db.ipv4.dhcp_range)) == ("10.30.1.0", "10.30.1.99")
    assert str(build.ipv4.cidr) == "10.10.1.0/24"  # allocated: the first /24 after the default zone's
    assert str(build.ipv6.cidr) == "fd4c:1f20:a9b3:1::/64" and build.ipv6.nat  # "auto" is the new zones' default
    assert spec.state.get("build") == ZoneAllocation(V4("10.10.1.0/24"), 1)
    p = web.paths
    assert p.dnsmasq_conf == s.dnsmasq_conf.parent / "zones" / "web.conf"
    assert str(p.dnsmasq_conf) == "/etc/proximity/zones/web.conf"
    assert {p.leases_file.parent, p.reservations_db.parent, p.dhcp_hosts_file.parent, p.addn_hosts_file.parent,
            p.dns_log_file.parent} == {s.state_dir / "zones" / "web"}
    assert (p.service_name, p.unit_file.name) == ("proximity-dns@web", "proximity-dns@.service")
    assert p.dns_pid_file == s.run_dir / "proximity-dns@web.pid"
    assert all(z.upstream_dns == tuple(s.upstream_dns) and z.lease_time == s.lease_time for z in spec.zones)
    with pytest.raises(NotFoundError, match="'nope'.*prox-net, web, db, build"):
        spec.zone("nope")


@pytest.mark.parametrize(("table", "reasons"), [
    ('[zones.web]\nsubnett = "10.20.0.0/24"\n', ["zones.web: ", "'subnett' is not a setting of a local zone"]),
    ('[zones.web]\nvni = 5\n', ["zones.web: ", "'vni'"]),
    ('[zones.web]\ntype = "vxlan"\n', ["zones.web.type", "'vxlan'", "not supported yet", "'local'"]),
    ('[zones.web]\ntype = "ovn"\n', ["zones.web.type", "'ovn' is not a zone type"]),
    ('[zones.Web]\n', ["'Web'", "lowercase"]),
    ('[zones.prox-net]\nsubnet = "10.20.0.0/24"\n', ["'prox-net' is the default zone", "top-level settings"]),
    ('[zones.web]\nsubnet = "10.20.0.0/33"\n', ["zones.web.subnet", "not an IPv4 subnet"]),
    ('[zones.web]\nsubnet = "2001:db8::/64"\n', ["zones.web.subnet", "ipv6 ="]),
    ('[zones.web]\nsubnet = "10.20.0.0/30"\n', ["zones.web.subnet", "/29 or shorter"]),
    ('[zones.web]\nsubnet = "10.20.0.255/24"\n', ["zones.web.subnet", "broadcast"]),
    ('[zones.web]\ndhcp_range = "10.10.1.5-10.10.1.9"\n', ["zones.web.dhcp_range", "needs the subnet"]),
    ('[zones.web]\nsubnet = "10.20.0.0/24"\ndhcp_range = "10.20.0.1-10.20.0.9"\n',
     ["zones.web.dhcp_range", "contains the gateway 10.20.0.1"]),
    ('[zones.web]\nsubnet = "10.20.0.0/24"\ndhcp_range = "10.21.0.1-10.21.0.9"\n', ["outside the subnet 10.20.0.0/24"]),
    ('[zones.web]\nsubnet = "10.20.0.0/24"\ndhcp_range = "10.20.0.9"\n', ["not a range"]),
    ('[zones.web]\ndomain = "web"\n', ["zones.web.domain", "single label"]),
    ('[zones.web]\nnat = "yes"\n', ["zones.web.nat", "'masquerade'"]),
    ('[zones.web]\nnat = 1\n', ["zones.web.nat", "'masquerade'"]),
    ('[zones.web]\nhost_services = "true"\n', ["zones.web.host_services", "without quotes"]),
    ('[zones.web]\nipv6 = "2001:db8::/56"\n', ["zones.web.ipv6", "/64", "2001:db8::/64"]),
    ('zones = "web"\n', ["not a set of zones", "table zones.NAME"]),
    ('[zones]\nweb = 5\n', ["zones.web is 5, not a table"]),
])
def test_a_wrong_table_is_refused_naming_the_zone_the_key_and_the_fix(tmp_path, monkeypatch, table, reasons):
    message = refused(tmp_path, monkeypatch, table)
    assert "proximity.toml" in message
    for reason in reasons:
        assert reason in message


def test_every_wrong_key_of_every_zone_is_named_at_once(tmp_path, monkeypatch):
    message = refused(tmp_path, monkeypatch, '[zones.a]\nsubnet = "x"\nnat = 1\n[zones.b]\ndomian = "b.lab"\n')
    assert "zones.a.subnet" in message and "zones.a.nat" in message and "zones.b: 'domian'" in message


def test_the_zones_cannot_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROXIMITY_ZONES", "web")
    with pytest.raises(SettingsError, match="table zones.NAME"):
        load_settings()


def test_other_settings_still_refuse_unknown_keys_beside_the_zones(tmp_path, monkeypatch):
    message = refused(tmp_path, monkeypatch, 'brige = "x"\n[zones.web]\n')
    assert "'brige' is not a setting" in message


# -- overlaps, named on both sides ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ('[zones.web]\nsubnet = "10.10.1.0/24"\n[zones.db]\nsubnet = "10.10.1.0/25"\n',
     "zone db's subnet 10.10.1.0/25 overlaps zone web's subnet 10.10.1.0/24: pick another subnet for zone db"),
    ('[zones.web]\nsubnet = "10.10.0.0/16"\n',
     "zone web's subnet 10.10.0.0/16 overlaps zone prox-net's subnet 10.10.0.0/24: pick another subnet for zone web"),
    ('[zones.web]\ndomain = "prox.local"\n', "zone web's domain prox.local is zone prox-net's domain prox.local"),
    ('[zones.web]\ndomain = "web.prox.local"\n', "zone web's domain web.prox.local is under or above zone prox-net's"),
    ('[zones.a]\ndomain = "lab.example"\n[zones.b]\ndomain = "LAB.example."\n',
     "zone b's domain lab.example is zone a's domain lab.example: pick another domain for zone b"),
    ('[zones.a]\nipv6 = "2001:db8:0:1::/64"\n[zones.b]\nipv6 = "2001:db8:0:1::/64"\n',
     "zone b's IPv6 subnet 2001:db8:0:1::/64 overlaps zone a's IPv6 subnet 2001:db8:0:1::/64: pick another ipv6"),
])
def test_zones_that_overlap_are_refused_when_the_settings_load(tmp_path, monkeypatch, text, expected):
    assert expected in refused(tmp_path, monkeypatch, text)


def test_a_bridge_of_another_zone_is_refused(tmp_path, monkeypatch):
    assert "zone web's bridge pz-web is zone prox-net's bridge too" in refused(
        tmp_path, monkeypatch, "[zones.web]\n", bridge="pz-web")
    a, b = colliding_long_names()
    message = refused(tmp_path, monkeypatch, f"[zones.{a}]\n[zones.{b}]\n")
    assert f"zone {b}'s bridge {bridge_name(b)} is zone {a}'s bridge too: rename zone {b}" in message


def test_a_zone_declared_twice_is_refused():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {}), parse_zone("web", {"nat": "off"})))
    with pytest.raises(SettingsError, match="zone web is declared twice"):
        resolve(s, ZoneState(), new_global_id=lambda: GID)


def colliding_long_names():
    """Two long names with one hashed bridge (20 bits: a birthday collision within a few thousand names)."""
    seen = {}
    for i in range(100000):
        name = f"backend-{i:06d}"
        if (bridge := bridge_name(name)) in seen:
            return seen[bridge], name
        seen[bridge] = name
    raise AssertionError("no collision")


def test_zones_may_not_overlap_the_hosts_addresses_and_routes():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {"subnet": "198.51.100.0/25"}),
                                                    parse_zone("db", {"subnet": "10.50.0.0/24"})))
    uplink = host_claims([("vmbr0", ipaddress.IPv4Interface("198.51.100.2/24"))], uplink="vmbr0")
    with pytest.raises(SettingsError) as caught:
        resolve(s, ZoneState(), uplink)
    assert ("zone web's subnet 198.51.100.0/25 overlaps the host's address 198.51.100.2/24 on vmbr0 (the uplink): "
            "pick another subnet for zone web") in str(caught.value)
    routes = host_claims([], [("vmbr0", V4("10.50.0.0/16"), "198.51.100.1"), ("vmbr0", V4("0.0.0.0/0"), "x")])
    s = dataclasses.replace(s, zones=s.zones[1:])
    with pytest.raises(SettingsError, match=r"zone db's subnet 10.50.0.0/24 overlaps the host's route 10.50.0.0/16 "
                                            r"via 198.51.100.1 on vmbr0"):
        resolve(s, ZoneState(), routes)
    with pytest.raises(SettingsError, match="zone prox-net's subnet .* change the gateway setting"):
        resolve(load_settings(), ZoneState(), host_claims([("eth1", ipaddress.IPv4Interface("10.10.0.9/16"))]))


def test_addresses_declared_in_the_interfaces_file_are_claims_too():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {"subnet": "10.20.0.0/24"}),))
    claims = host_claims([], declared=[("vmbr1", "10.20.0.5/16", "/etc/network/interfaces.d/lab")])
    with pytest.raises(SettingsError, match=r"zone web's subnet 10.20.0.0/24 overlaps the host's address 10.20.0.5/16 "
                                            r"declared for vmbr1 in /etc/network/interfaces.d/lab"):
        resolve(s, ZoneState(), claims)


def test_a_zones_own_bridge_addresses_are_not_a_clash():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {"subnet": "10.20.0.0/24"}),))
    live = host_claims([("prox-net", ipaddress.IPv4Interface("10.10.0.1/24")),
                        ("pz-web", ipaddress.IPv4Interface("10.20.0.1/24"))],
                       [("pz-web", V4("10.20.0.0/24"), None)])
    assert [str(z.ipv4.cidr) for z in resolve(s, ZoneState(), live).zones] == ["10.10.0.0/24", "10.20.0.0/24"]


def test_default_routes_link_local_and_multicast_claim_nothing():
    claims = host_claims([("vmbr0", ipaddress.IPv6Interface("fe80::1/64"))],
                         [("vmbr0", V4("0.0.0.0/0"), "198.51.100.1"), ("vmbr0", V6("::/0"), "fe80::1"),
                          ("vmbr0", V6("ff00::/8"), None), ("vmbr0", V6("2001:db8::/64"), None)])
    assert [str(c.network) for c in claims] == ["2001:db8::/64"]


# -- allocation ------------------------------------------------------------------------------------------

def test_allocated_networks_are_kept_when_zones_come_and_go():
    base = load_settings()
    zones = lambda *names: dataclasses.replace(base, zones=tuple(parse_zone(n, {}) for n in names))  # noqa: E731
    first = resolve(zones("web", "db"), ZoneState(), new_global_id=lambda: GID)
    assert [(str(z.ipv4.cidr), str(z.ipv6.cidr)) for z in first.zones[1:]] == [
        ("10.10.1.0/24", "fd4c:1f20:a9b3:1::/64"), ("10.10.2.0/24", "fd4c:1f20:a9b3:2::/64")]
    # A zone declared before them, and web gone from the file: db keeps its networks, and so
    # does web's (kept in the state until released), so the newcomer gets the next free ones.
    second = resolve(zones("app", "db"), parse_state(render_state(first.state)), new_global_id=no_global_id)
    assert str(second.zone("db").ipv4.cidr) == "10.10.2.0/24" and str(second.zone("db").ipv6.cidr).endswith(":2::/64")
    assert str(second.zone("app").ipv4.cidr) == "10.10.3.0/24" and str(second.zone("app").ipv6.cidr).endswith(":3::/64")
    assert resolve(zones("app", "db"), second.state).state == second.state  # a re-run allocates nothing
    third = resolve(zones("new"), second.state.release("web"))
    assert str(third.zone("new").ipv4.cidr) == "10.10.1.0/24"  # released, web's /24 is free again
    given_one = dataclasses.replace(base, zones=(parse_zone("db", {"subnet": "10.99.0.0/24"}),))
    assert resolve(given_one, second.state).state.get("db").ipv4 is None  # a named subnet releases the allocated one


def test_allocation_skips_the_hosts_networks_and_other_pools_when_10_is_full():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {}),))
    claims = host_claims([("vmbr0", ipaddress.IPv4Interface("10.10.1.7/24"))],
                         [("vmbr0", V4("10.10.2.0/23"), "10.10.1.1")], uplink="vmbr0")
    assert str(resolve(s, ZoneState(), claims, new_global_id=lambda: GID).zone("web").ipv4.cidr) == "10.10.4.0/24"
    vpn = host_claims([], [("wg0", V4("10.0.0.0/8"), None)])
    taken = [V4("172.16.0.0/12")]
    assert alloc.allocate_ipv4(taken, vpn) == V4("192.168.0.0/24")
    with pytest.raises(alloc.AllocationError, match="give the zone a subnet"):
        alloc.allocate_ipv4([*taken, V4("192.168.0.0/16")], vpn)


def test_ipv6_allocation_skips_the_hosts_ipv6_routes():
    s = dataclasses.replace(load_settings(), zones=(parse_zone("web", {}),))
    ula = alloc.ula_prefix(GID)
    claims = host_claims([], [("eth1", V6("fd4c:1f20:a9b3::/63"), None), ("eth1", V6("fd4c:1f20:a9b3:2::/64"), None)])
    assert str(resolve(s, ZoneState(), claims, new_global_id=lambda: GID).zone("web").ipv6.cidr) == \
        "fd4c:1f20:a9b3:3::/64"
    with pytest.raises(SettingsError, match=r"zone web's IPv6 subnet fd4c:1f20:a9b3:1::/64 overlaps the host's route"):
        resolve(s, ZoneState(ula, {"web": ZoneAllocation(V4("10.10.1.0/24"), 1)}), claims)  # kept, never moved
    with pytest.raises(alloc.AllocationError, match=r"give the zone an ipv6 prefix, or ipv6 = \"off\""):
        alloc.allocate_subnet_id(ula, [], [], host_claims([], [("eth1", ula, None)]))


@st.composite
def claims_in_10_10(draw):
    nets = draw(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(16, 30)), max_size=12))
    return [V4(((10 << 24 | 10 << 16 | offset) >> (32 - p) << (32 - p), p)) for offset, p in nets]


@given(claims_in_10_10(), claims_in_10_10())
def test_the_allocated_24_is_the_lowest_free_one(taken, routed):
    claims = [Claim(n, f"route {n}", "eth1") for n in routed]
    found = alloc.allocate_ipv4(taken, claims)
    lowest = next((n for n in V4("10.10.0.0/16").subnets(new_prefix=24)
                   if not any(n.overlaps(t) for t in [*taken, *routed])), None)
    if lowest is not None:
        assert found == lowest
    else:
        assert found == V4("10.11.0.0/24")
    assert alloc.allocate_ipv4(taken, claims, bridge="eth1") == alloc.allocate_ipv4(taken, [])  # its own bridge's


@pytest.mark.parametrize(("gateway", "expected"), [
    ("10.10.0.1/24", ("10.10.0.100", "10.10.0.250")), ("10.20.0.1/16", ("10.20.0.100", "10.20.255.250")),
    ("10.20.0.1/25", ("10.20.0.2", "10.20.0.126")), ("10.20.0.1/29", ("10.20.0.2", "10.20.0.6")),
    ("10.20.0.200/24", ("10.20.0.100", "10.20.0.199")), ("10.20.0.3/29", ("10.20.0.4", "10.20.0.6")),
])
def test_default_dhcp_ranges(gateway, expected):
    assert tuple(map(str, default_range(ipaddress.IPv4Interface(gateway)))) == expected


@given(st.integers(8, 29), st.integers(0, 2**32 - 1), st.integers(1, 2**24))
def test_the_default_range_is_always_a_valid_range(prefix, base, offset):
    net = V4((base >> (32 - prefix) << (32 - prefix), prefix))
    gateway = ipaddress.IPv4Interface((net.network_address + 1 + offset % (net.num_addresses - 2), prefix))
    check_range(gateway, *default_range(gateway))  # inside, in order, without the gateway


# -- names -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "bridge"), [
    ("web", "pz-web"), ("a", "pz-a"), ("twelve-chars", "pz-twelve-chars"),
    ("thirteen-char", "pz-thirte_" + bridge_name("thirteen-char")[-5:]),
])
def test_bridge_names(name, bridge):
    assert bridge_name(name) == bridge and len(bridge) <= 15


zone_names = st.from_regex(ZONE_NAME_RE, fullmatch=True).filter(lambda n: n != DEFAULT_ZONE)


@given(zone_names, zone_names)
def test_bridges_fit_ifnamsiz_and_differ_unless_two_long_names_collide_in_hash(a, b):
    assume(a != b)
    for name in (a, b):
        assert check_zone_name(name) == name
        bridge = bridge_name(name)
        assert len(bridge) <= 15 and bridge == bridge_name(name) and bridge.startswith("pz-")
        assert load_settings(bridge=bridge).bridge == bridge  # a usable interface name, by the settings' own check
    if bridge_name(a) == bridge_name(b):  # then both are hashed, and refused by check_distinct
        assert len(a) > 12 and len(b) > 12 and a[:6] == b[:6]


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=40))
def test_zone_names_are_lowercase_labels_of_up_to_32(name):
    ok = 1 <= len(name) <= 32 and name[0] in string.ascii_lowercase and name[-1] != "-" and \
        all(c in string.ascii_lowercase + string.digits + "-" for c in name) and name != DEFAULT_ZONE
    if ok:
        assert check_zone_name(name) == name
    else:
        with pytest.raises(ValueError, match="zone name"):
            check_zone_name(name)


# -- the ULA prefix and the state file -------------------------------------------------------------------

@given(st.integers(0, 2**40 - 1), st.integers(0, 2**16 - 1))
def test_ula_prefixes_are_rfc4193(global_id, subnet_id):
    ula = alloc.ula_prefix(global_id)
    assert ula.prefixlen == 48 and ula.subnet_of(V6("fd00::/8"))
    assert (int(ula.network_address) >> 80) & (2**40 - 1) == global_id
    sub = alloc.ula_subnet(ula, subnet_id)
    assert sub.prefixlen == 64 and sub.subnet_of(ula) and (int(sub.network_address) >> 64) & 0xFFFF == subnet_id


def test_global_ids_are_random_40_bit_numbers():
    ids = {alloc.random_global_id() for _ in range(64)}
    assert len(ids) > 60 and all(0 <= i < 2**40 for i in ids)


allocations = st.builds(ZoneAllocation, st.none() | st.integers(0, 2**24 - 1).map(lambda i: V4((i << 8, 24))),
                        st.none() | st.integers(0, 2**16 - 1))


@given(st.none() | st.integers(0, 2**40 - 1).map(alloc.ula_prefix), st.dictionaries(zone_names, allocations))
def test_the_state_survives_its_file(ula, zones):
    state = ZoneState(ula)
    for name, allocation in zones.items():
        state = state.with_zone(name, allocation)
    assert parse_state(render_state(state)) == state
    assert set(state.zones) == {n for n, a in zones.items() if a != ZoneAllocation()}


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"version": 2}', '{"version": 1, "ula": "fd00::/64"}', '{"version": 1, "ula": "2001:db8::/48"}',
    '{"version": 1, "zones": {"web": {"ipv4": "10.10.1.0/33"}}}', '{"version": 1, "zones": {"web": {"ipv6_id": 70000}}}',
    '{"version": 1, "zones": {"web": {"ipv6_id": true}}}', '{"version": 1, "zones": {"web": {"v4": "x"}}}',
    '{"version": 1, "zones": {"web": 5}}', '{"version": 1, "zones": 5}',
])
def test_a_damaged_state_is_refused_never_replaced(text):
    with pytest.raises(HostError) as caught:
        parse_state(text, "/var/lib/proximity/zones.json")
    assert "/var/lib/proximity/zones.json is damaged" in str(caught.value) and "move it away" in str(caught.value)


def test_the_state_is_written_atomically_through_the_host(tmp_path):
    host, s = Host(), load_settings(state_dir=tmp_path / "state")
    assert load_state(host, s) == ZoneState()
    spec = resolve(dataclasses.replace(s, zones=(parse_zone("web", {}),)), ZoneState(), new_global_id=lambda: GID)
    save_state(host, s, spec.state)
    assert json.loads((tmp_path / "state" / "zones.json").read_text()) == {
        "version": 1, "ula": "fd4c:1f20:a9b3::/48", "zones": {"web": {"ipv4": "10.10.1.0/24", "ipv6_id": 1}}}
    assert load_state(host, s) == spec.state


# -- MACs across zones -----------------------------------------------------------------------------------

def test_macs_are_unique_across_every_zone(tmp_path):
    reservations = Reservations(load_settings(state_dir=tmp_path), Host())
    today = reservations.reserve("web", [], save=False).mac
    assert free_mac("web", {"prox-net": []}) == today  # the default zone alone: today's MAC
    in_db = free_mac("web", {"prox-net": [today]})  # a second "web", in another zone
    assert in_db != today and free_mac("web", {"prox-net": [today.upper()], "db": [in_db]}) not in (today, in_db)


def test_nat_takes_its_words_or_booleans():
    assert [parse_zone("web", {"nat": v}).nat for v in ("masquerade", True, "off", False)] == \
        ["masquerade", "masquerade", "off", "off"]


def test_parse_ipv6_mode_keeps_the_modes():
    assert parse_ipv6_mode("auto") == "auto" and parse_ipv6_mode("off") == "off"
    assert parse_ipv6_mode(" 2001:db8:0:1::/64") == V6("2001:db8:0:1::/64")


@st.composite
def host_and_zones(draw):
    names = draw(st.lists(st.sampled_from(["web", "db", "app", "build", "a-very-long-zone-name", "x"]),
                          unique=True, max_size=5))
    zones = []
    for name in names:
        table = {}
        if draw(st.booleans()):
            table["subnet"] = f"10.10.{draw(st.integers(0, 6))}.0/{draw(st.sampled_from([23, 24, 25]))}"
        table["ipv6"] = draw(st.sampled_from(["auto", "off", "2001:db8:0:1::/64", "fd4c:1f20:a9b3:2::/64"]))
        zones.append(parse_zone(name, table))
    routes = draw(st.lists(st.sampled_from(["10.10.1.0/24", "10.10.2.0/23", "10.10.8.0/21", "fd4c:1f20:a9b3::/62",
                                            "198.51.100.0/24"]), unique=True, max_size=3))
    return tuple(zones), host_claims([], [("vmbr0", ipaddress.ip_network(r), None) for r in routes])


@given(host_and_zones(), st.data())
def test_resolved_zones_are_disjoint_and_stable(case, data):
    zones, claims = case
    s = dataclasses.replace(load_settings(), zones=zones)
    # Refused exactly when networks the settings name clash (with each other or the host's routes):
    # an allocation never causes a refusal, it goes around them.
    named = [s.subnet, *(z.subnet for z in zones if z.subnet), *(z.ipv6 for z in zones if z.ipv6 not in ("auto", "off"))]
    clash = any(a.version == b.version and a.overlaps(b) for i, a in enumerate(named) for b in named[i + 1:]) or \
        any(a.version == c.network.version and a.overlaps(c.network) for a in named for c in claims)
    if clash:
        event("refused")
        with pytest.raises(SettingsError, match="overlaps"):
            resolve(s, ZoneState(), claims, new_global_id=lambda: GID)
        return
    spec = resolve(s, ZoneState(), claims, new_global_id=lambda: GID)
    nets = [(z.name, sub.cidr) for z in spec.zones for sub in z.subnets]
    for i, (name, net) in enumerate(nets):
        assert not any(net.version == c.network.version and net.overlaps(c.network) for c in claims)
        assert not any(net.version == other.version and net.overlaps(other) for _, other in nets[i + 1:])
    assert len({z.bridge for z in spec.zones}) == len(spec.zones)
    again = resolve(s, parse_state(render_state(spec.state)), claims, new_global_id=no_global_id)
    assert again.zones == spec.zones and again.state == spec.state  # a re-run changes nothing
    if zones:  # one zone deleted: every other keeps its networks
        gone = data.draw(st.sampled_from([z.name for z in zones]))
        fewer = resolve(dataclasses.replace(s, zones=tuple(z for z in zones if z.name != gone)), spec.state, claims)
        assert all(z == spec.zone(z.name) for z in fewer.zones)


toml_values = st.recursive(st.text(max_size=20) | st.integers() | st.booleans() | st.floats(allow_nan=False),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=5)
table_values = st.sampled_from(["10.20.0.0/24", "10.20.0.9/29", "10.20.0.100-10.20.0.200", "auto", "off", "local",
                                "vxlan", "masquerade", "2001:db8::/64", "web.lab"]) | toml_values


@given(st.text(max_size=10), st.dictionaries(st.sampled_from(sorted(config.COMMON_KEYS)) | st.text(max_size=8),
                                              table_values, max_size=6))
@example("web", {"domain": ["web.lab"]})  # found by the explore profile: a list where a string belongs
def test_any_table_is_a_zone_or_a_clear_refusal(name, table):
    try:
        zone = parse_zone(name, table)
    except ValueError as exc:  # never another exception: the settings turn this one into their message
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert zone.name == name and set(table) <= config.COMMON_KEYS
