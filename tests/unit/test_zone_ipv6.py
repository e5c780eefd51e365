"""A zone with IPv6, rendered: dnsmasq's config (checked by dnsmasq), the bridge's inet6 stanza
(through Proxmox's own writer), the reservations' files and the v6 lease lines. A zone without
IPv6 renders exactly as before."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proximity.host import Host
from proximity.network import render
from proximity.network.interfaces import (IPV6_TAG, InterfacesFileError, compare_bridge, merge_block, merge_inet6,
                                          parse_stanzas, remove_block, remove_stanzas)
from proximity.network.leases import parse_leases, server_duid
from proximity.network.reservations import Reservation, Reservations, render_addn_hosts, render_dhcp_hosts
from proximity.settings import Settings, load_settings
from proximity.spec.state import ZoneState
from proximity.spec.view import default_view
from proximity.spec.zones import resolve
from tests.unit.pve_rewrite import PveRewrite

PREFIX = "fd12:3456:789a:1::/64"
FIXTURES = Path(__file__).with_name("fixtures") / "interfaces"
FILES = {path.stem: path.read_bytes().decode() for path in sorted(FIXTURES.glob("*.interfaces"))}
WEB = Reservation("web-01", "02:00:00:00:01:01", "10.10.0.100")


def view(**settings):
    """The default zone's view, as the zones resolve it (IPv6 on unless ``ipv6="off"``)."""
    return resolve(load_settings(**{"ipv6": PREFIX, **settings}), ZoneState()).views()[0]


@pytest.fixture
def paths(tmp_path: Path) -> dict:
    return {"state_dir": str(tmp_path / "state"), "dnsmasq_conf": str(tmp_path / "dnsmasq.conf"),
            "leases_file": str(tmp_path / "leases"), "run_dir": str(tmp_path / "run")}


# --------------------------------------------------------------------------- dnsmasq


def test_a_zone_without_ipv6_renders_as_before(paths):
    plain = load_settings(**paths)
    assert view(ipv6="off", **paths).ipv6_gateway is None
    for v in (view(ipv6="off", **paths), default_view(plain)):
        assert render.dnsmasq_conf(v) == render.dnsmasq_conf(plain)
        assert render.dnsmasq_conf(v, ipv6_default_route=True) == render.dnsmasq_conf(plain)
        assert render.bridge_stanza(v) == render.bridge_stanza(plain) and render.bridge_stanza6(v) == []
        assert render.bridge_options(v) == render.bridge_options(plain) and render.bridge_options6(v) == {}
    assert "enable-ra" not in render.dnsmasq_conf(plain) and "dhcp-lease-max=151\n" in render.dnsmasq_conf(plain)


def test_a_zone_with_ipv6_advertises_and_serves_dhcpv6(paths):
    v = view(**paths)
    conf = render.dnsmasq_conf(v)
    v4_only = render.dnsmasq_conf(view(ipv6="off", **paths))
    for line in ("enable-ra", "dhcp-range=fd12:3456:789a:1::1000,fd12:3456:789a:1::ffff,slaac,64,12h",
                 "dhcp-option=option6:dns-server,[fd12:3456:789a:1::1]", "dhcp-option=option6:domain-search,prox.local",
                 "ra-param=prox-net,60,0", "dhcp-lease-max=302"):  # one v4 and one v6 lease per container
        assert f"\n{line}\n" in conf, line
    assert "ra-param=prox-net,60,1800\n" in render.dnsmasq_conf(v, ipv6_default_route=True)
    # Only the IPv6 lines and the lease limit differ from the IPv4 config.
    added = [line for line in conf.splitlines() if line not in v4_only.splitlines()]
    assert all("6" in line or line.startswith(("enable-ra", "dhcp-lease-max", "#", "ra-param")) for line in added)
    assert [line for line in v4_only.splitlines() if line not in conf.splitlines()] == ["dhcp-lease-max=151"]


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is installed by make test's bootstrap")
@pytest.mark.parametrize("default_route", [False, True])
def test_dnsmasq_accepts_the_rendered_config_and_hosts_file(paths, default_route):
    v = view(**paths)
    v.zone_dir.mkdir(parents=True)
    v.dhcp_hosts_file.write_text(render_dhcp_hosts([WEB], v.subnet, v.ipv6_gateway))
    v.addn_hosts_file.write_text(render_addn_hosts([WEB], v.domain, v.subnet, v.ipv6_gateway))
    Path(paths["dnsmasq_conf"]).write_text(render.dnsmasq_conf(v, ipv6_default_route=default_route))
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={paths['dnsmasq_conf']}"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "syntax check OK" in checked.stderr, checked.stderr
    # And it can fail: dnsmasq refuses a range outside any family it knows.
    Path(paths["dnsmasq_conf"]).write_text(render.dnsmasq_conf(v).replace(",slaac,64,", ",slaac,bogus,"))
    refused = subprocess.run(["dnsmasq", "--test", f"--conf-file={paths['dnsmasq_conf']}"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0


# --------------------------------------------------------------------------- reservations


def test_reservations_get_their_stable_ipv6_address_and_aaaa_name(paths):
    v = view(**paths)
    assert render_dhcp_hosts([WEB]) == "02:00:00:00:01:01,10.10.0.100,web-01\n"  # the old call, unchanged
    assert render_addn_hosts([WEB], "prox.local") == "10.10.0.100 web-01.prox.local web-01\n"
    assert render_dhcp_hosts([WEB], v.subnet, None) == render_dhcp_hosts([WEB])
    assert render_dhcp_hosts([WEB], v.subnet, v.ipv6_gateway) == (
        "02:00:00:00:01:01,10.10.0.100,[fd12:3456:789a:1::64],web-01\n")
    assert render_addn_hosts([WEB], "prox.local", v.subnet, v.ipv6_gateway) == (
        "10.10.0.100 web-01.prox.local web-01\nfd12:3456:789a:1::64 web-01.prox.local web-01\n")
    with pytest.raises(ValueError, match="needs the zone's IPv4 subnet"):
        render_dhcp_hosts([WEB], None, v.ipv6_gateway)


def test_a_reservation_in_an_ipv6_zone_writes_both_families(paths):
    v = view(**paths, dhcp_start="10.10.0.100", dhcp_end="10.10.0.102")
    store = Reservations(v, Host())
    with store.locked():
        r = store.reserve("web-01", [])
    assert v.dhcp_hosts_file.read_text() == f"{r.mac},10.10.0.100,[fd12:3456:789a:1::64],web-01\n"
    assert v.addn_hosts_file.read_text().splitlines()[1] == "fd12:3456:789a:1::64 web-01.prox.local web-01"
    plain = Reservations(load_settings(**paths, dhcp_start="10.10.0.100", dhcp_end="10.10.0.102"), Host())
    assert plain._rendered(store.all()) == {v.dhcp_hosts_file: f"{r.mac},10.10.0.100,web-01\n",
                                            v.addn_hosts_file: "10.10.0.100 web-01.prox.local web-01\n"}


# --------------------------------------------------------------------------- leases

DUID = "00:01:00:01:2c:5e:1a:2b:52:54:00:12:34:56"
DUAL_FILE = f"""\
1764200000 52:54:00:12:34:56 10.10.0.105 nginx-01 01:52:54:00:12:34:56
duid 00:01:00:01:2e:aa:bb:cc:02:dd:18:4d:15:9a
1764200999 1234567 fd12:3456:789a:1::69 nginx-01 {DUID}
1764201000 T89 fd12:3456:789a:1:0::1a2b * {DUID.upper()}
1764201000 12 fd12:3456:789a:1::1a2c * not-a-duid
"""


def test_dhcpv6_lines_parse_with_iaid_and_duid():
    leases, warnings = parse_leases(DUAL_FILE, "leases")
    assert warnings == ["leases line 5: skipped malformed lease '1764201000 12 fd12:3456:789a:1::1a2c * not-a-duid'"]
    v4, v6, temporary = leases
    assert (v4.version, v4.iaid, v4.duid, v4.client_text()) == (4, None, None, "52:54:00:12:34:56")
    assert (v6.version, v6.ip, v6.hostname, v6.iaid, v6.duid) == (6, "fd12:3456:789a:1::69", "nginx-01", "1234567", DUID)
    assert v6.client_text() == "IAID 1234567" and v6.mac == "1234567" and v6.client_id == DUID
    assert (temporary.ip, temporary.iaid, temporary.duid, temporary.hostname) == (
        "fd12:3456:789a:1::1a2b", "T89", DUID, None)
    assert set(v6.as_dict()) == {"expiry", "mac", "ip", "hostname", "client_id"}  # the API's shape, unchanged
    assert server_duid(DUAL_FILE) == "00:01:00:01:2e:aa:bb:cc:02:dd:18:4d:15:9a"
    ipv4_only = DUAL_FILE.splitlines()[0] + "\n"
    assert server_duid(ipv4_only) is None and parse_leases(ipv4_only) == ([v4], [])


# --------------------------------------------------------------------------- the inet6 stanza


@pytest.fixture(scope="module")
def rewrite() -> Iterator[PveRewrite]:
    oracle = PveRewrite()
    yield oracle
    oracle.close()


def written_by_up(original: str, v) -> str:
    return merge_inet6(merge_block(original, render.bridge_stanza(v)), v.bridge, render.bridge_stanza6(v))


def options(text: str, name: str) -> dict:
    return {(st.family, st.managed): st.options for st in parse_stanzas(text) if st.name == name}


def test_the_inet6_stanza_sets_no_dad_before_its_address():
    v = view()
    six = render.bridge_stanza6(v)
    assert six == ["iface prox-net inet6 static", "\taddress fd12:3456:789a:1::1/64",
                   f"\tpre-up [ -d /proc/sys/net/ipv6/conf/prox-net ] || ip link add prox-net type bridge {IPV6_TAG}",
                   f"\tpre-up echo 0 > /proc/sys/net/ipv6/conf/prox-net/accept_dad {IPV6_TAG}",
                   f"\tpre-up echo 0 > /proc/sys/net/ipv6/conf/prox-net/accept_ra {IPV6_TAG}"]
    assert render.bridge_stanza(v) == render.bridge_stanza(Settings())  # the inet stanza is today's


@pytest.mark.parametrize("name", sorted(FILES))
def test_proxmox_keeps_both_stanzas_and_up_then_down_gives_the_file_back(rewrite, name):
    original, v = FILES[name], view()
    merged = written_by_up(original, v)
    written = rewrite(merged)
    for lines in (render.bridge_stanza(v), render.bridge_stanza6(v)):
        assert "".join(line + "\n" for line in lines) in written.replace("\r\n", "\n")
    assert options(written, "prox-net") == options(merged, "prox-net")
    assert set(options(written, "prox-net")) == {("inet", True), ("inet6", False)}
    assert written_by_up(written, v) == written  # up after a GUI edit: nothing to change
    again = rewrite(written)  # a second GUI edit (Proxmox may still move VLAN stanzas, as without IPv6)
    assert options(again, "prox-net") == options(written, "prox-net") and written_by_up(again, v) == again
    down = remove_stanzas(remove_block(written), v.bridge)  # what down writes
    assert down == rewrite(original) and rewrite(down) == rewrite(original)
    # IPv6 turned off: only Proximity's inet6 stanza goes, the inet one stays.
    off = merge_inet6(written, v.bridge, [])
    assert options(off, "prox-net") == {("inet", True): options(written, "prox-net")[("inet", True)]}
    assert merge_inet6(off, v.bridge, render.bridge_stanza6(v)) == written


def test_the_inet6_stanza_follows_a_prefix_change_and_is_compared_when_hand_written(rewrite):
    v, other = view(), view(ipv6="fd12:3456:789a:2::/64")
    text = rewrite(written_by_up(FILES["proxmox_default"], v))
    moved = merge_inet6(text, v.bridge, render.bridge_stanza6(other))
    assert "fd12:3456:789a:1::1/64" not in moved and moved.count("inet6 static") == text.count("inet6 static")
    six = next(st for st in parse_stanzas(text) if st.name == v.bridge and st.family == "inet6")
    assert compare_bridge(six, render.bridge_options6(v)) == []
    assert compare_bridge(six, render.bridge_options6(other)) == [
        f"address is 'fd12:3456:789a:1::1/64' in /etc/network/interfaces line {six.first_line + 1}, "
        "Proximity needs 'fd12:3456:789a:2::1/64'"]
    # The admin's own inet6 stanza (Proxmox's GUI) is refused, never doubled or overwritten.
    by_hand = merge_block(FILES["proxmox_default"], render.bridge_stanza(v)) + (
        "\niface prox-net inet6 static\n\taddress fd00:1::1/64\n")
    with pytest.raises(InterfacesFileError, match="iface prox-net inet6 is written by hand"):
        merge_inet6(by_hand, v.bridge, render.bridge_stanza6(v))
    assert merge_inet6(by_hand, v.bridge, []) == by_hand
