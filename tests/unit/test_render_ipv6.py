"""The IPv6 lines of a zone's dnsmasq config: pure text, checked by dnsmasq's own parser."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.network.render_ipv6 import dnsmasq_ipv6_conf, reserved_ipv6
from proximity.network.reservations import Reservation, render_addn_hosts, render_dhcp_hosts
from proximity.spec.zones import SubnetSpec

V4 = SubnetSpec(ipaddress.ip_network("10.10.0.0/24"), ipaddress.ip_address("10.10.0.1"),
                (ipaddress.ip_address("10.10.0.100"), ipaddress.ip_address("10.10.0.250")), True)
V6 = SubnetSpec(ipaddress.ip_network("fd12:3456:789a:1::/64"), ipaddress.ip_address("fd12:3456:789a:1::1"),
                (ipaddress.ip_address("fd12:3456:789a:1::1000"), ipaddress.ip_address("fd12:3456:789a:1::ffff")),
                True)


def test_a_reserved_address_is_the_prefix_plus_the_ipv4_offset():
    assert reserved_ipv6("10.10.0.100", V4, V6) == ipaddress.ip_address("fd12:3456:789a:1::64")
    with pytest.raises(ValueError, match="not an address of 10.10.0.0/24"):
        reserved_ipv6("10.10.1.5", V4, V6)


@given(st.integers(min_value=20, max_value=30), st.data())
def test_reserved_addresses_never_meet_the_dynamic_range_and_never_collide(prefixlen, data):
    net = ipaddress.ip_network(f"10.0.0.0/{prefixlen}")
    v4 = SubnetSpec(net, net.network_address + 1, None, True)
    hosts = data.draw(st.sets(st.integers(min_value=1, max_value=net.num_addresses - 2), max_size=20))
    addresses = {reserved_ipv6(str(net.network_address + h), v4, V6) for h in hosts}
    assert len(addresses) == len(hosts)
    assert all(a in V6.cidr and a < V6.dhcp_range[0] for a in addresses)


def test_the_advertisement_offers_a_route_only_when_the_uplink_has_one():
    routed = dnsmasq_ipv6_conf("prox-net", V6, "prox.local", "12h", default_route=True)
    assert "enable-ra\n" in routed
    assert "dhcp-range=fd12:3456:789a:1::1000,fd12:3456:789a:1::ffff,slaac,64,12h\n" in routed
    assert "dhcp-option=option6:dns-server,[fd12:3456:789a:1::1]\n" in routed
    assert "ra-param=prox-net,60,1800\n" in routed
    alone = dnsmasq_ipv6_conf("prox-net", V6, "prox.local", "12h", default_route=False)
    assert "ra-param=prox-net,60,0\n" in alone and "not a route via this host" in alone
    with pytest.raises(ValueError, match="not an IPv6 subnet"):
        dnsmasq_ipv6_conf("prox-net", V4, "prox.local", "12h", default_route=True)


def test_reservations_carry_both_families_and_both_names():
    web = Reservation("web-01", "02:00:00:00:01:01", "10.10.0.100")
    gateway = V6.gateway_interface
    assert render_dhcp_hosts([web], V4.cidr, gateway) == "02:00:00:00:01:01,10.10.0.100,[fd12:3456:789a:1::64],web-01\n"
    assert render_addn_hosts([web], "prox.local", V4.cidr, gateway) == (
        "10.10.0.100 web-01.prox.local web-01\nfd12:3456:789a:1::64 web-01.prox.local web-01\n")


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is installed by make test's bootstrap")
def test_dnsmasq_parses_the_lines_and_the_hosts_file(tmp_path):
    hosts = tmp_path / "dhcp-hosts"
    hosts.write_text(render_dhcp_hosts([Reservation("web-01", "02:00:00:00:01:01", "10.10.0.100")], V4.cidr,
                                       V6.gateway_interface))
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("interface=prox-net\nbind-interfaces\nno-resolv\nno-hosts\n"
                    "dhcp-range=10.10.0.100,10.10.0.250,255.255.255.0,12h\n"
                    + dnsmasq_ipv6_conf("prox-net", V6, "prox.local", "12h", default_route=False)
                    + f"dhcp-hostsfile={hosts}\n")
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "syntax check OK" in checked.stderr, checked.stderr
