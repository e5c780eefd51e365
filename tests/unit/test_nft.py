"""The nftables renderer (pure) and the parsing of what nft lists back; ``nft -c`` checks the text."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest

from proximity.network import nft
from proximity.network.firewall import DOCKER_USER, accept_chain, docker_rules, filter_chains
from proximity.settings import load_settings

SETTINGS = load_settings()
ADDR = ipaddress.ip_interface


def zones(n: int = 2, **lab) -> tuple[nft.FirewallZone, ...]:
    first = nft.from_settings(SETTINGS, "vmbr0", False).zones[0]
    rest = [nft.FirewallZone(f"z{i}", f"prox-z{i}", (ADDR(f"10.{20 + i}.0.1/24"), ADDR(f"fd00:{20 + i}::1/64")),
                             **lab) for i in range(1, n)]
    return (first, *rest)


def nft_check(text: str) -> subprocess.CompletedProcess:
    """``nft -c`` against the kernel, in a fresh network namespace of its own (it needs CAP_NET_ADMIN)."""
    return subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=text, capture_output=True, text=True,
                          timeout=30)


needs_nft = pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="no nft")


def test_todays_settings_are_one_masqueraded_ipv4_zone_that_keeps_the_host_services():
    spec = nft.from_settings(SETTINGS, "vmbr0", pve_firewall=True)
    (zone,) = spec.zones
    assert (zone.name, zone.bridge, zone.subnets, zone.nat, zone.host_services) == (
        "prox-net", "prox-net", (ipaddress.ip_network("10.10.0.0/24"),), "masquerade", True)
    assert spec.uplink == "vmbr0" and spec.pve_firewall and not spec.peers


def test_the_file_is_one_transaction_that_replaces_the_table():
    text = nft.render_table(nft.from_settings(SETTINGS, "vmbr0", False))
    commands = [line for line in text.splitlines() if line and not line.startswith(("#", "\t", "}"))]
    assert commands == ["add table inet proximity", "delete table inet proximity", "table inet proximity {"]


def test_dispatch_is_by_verdict_map_and_sets_so_a_packet_costs_the_same_at_any_zone_count():
    one, ten = (nft.render_table(nft.FirewallSpec(zones(n), "vmbr0")) for n in (1, 10))
    for text in (one, ten):
        base = text[text.index("\tchain forward {"):]
        assert "iifname vmap @zone_fwd" in base and "iifname vmap @zone_in" in base
        assert "prox-z" not in base  # the base chains name no zone: their length is fixed
    assert ten.count("chain zone.") == 20 and '"prox-z9" : jump zone.z9.fwd' in ten


def test_each_zone_chain_keeps_other_zones_out_unless_peered():
    text = nft.render_table(nft.FirewallSpec(zones(2), "vmbr0", frozenset({frozenset({"prox-net", "z1"})})))
    fwd = text[text.index("chain zone.z1.fwd {"):]
    fwd = fwd[:fwd.index("}")]
    assert fwd.split("\n")[1:5] == ['\t\toifname "prox-z1" accept', "\t\tiifname . oifname @peers accept",
                                    "\t\toifname @bridges drop", "\t\taccept"]
    assert 'elements = { "prox-net" . "prox-z1", "prox-z1" . "prox-net" }' in text  # both ways


def test_input_answers_dhcp_dns_icmp_on_the_own_gateway_and_drops_the_rest_unless_host_services():
    closed, open_ = (nft.render_table(nft.FirewallSpec(zones(2, host_services=hs), "vmbr0")) for hs in (False, True))
    chain = closed[closed.index("chain zone.z1.in {"):]
    chain = chain[:chain.index("\t}")]
    assert "ip daddr != { 10.21.0.1 } ip daddr @gateways4 drop" in chain  # another zone's gateway
    assert "ip6 daddr != { fd00:21::1 } ip6 daddr @gateways6 drop" in chain
    assert "udp dport { 67, 547 } accept" in chain
    assert "ip daddr { 10.21.0.1 } meta l4proto { tcp, udp } th dport 53 accept" in chain
    assert "ip6 daddr { fd00:21::1, fe80::/10 } meta l4proto { tcp, udp } th dport 53 accept" in chain
    assert "meta l4proto { icmp, ipv6-icmp } accept" in chain
    assert chain.rstrip().endswith("drop")
    other = open_[open_.index("chain zone.z1.in {"):]
    assert other[:other.index("\t}")].rstrip().endswith("accept")


def test_nat_masquerades_only_masquerade_zones_both_families():
    spec = nft.FirewallSpec((*zones(2), nft.FirewallZone("routed", "prox-r", (ADDR("10.99.0.1/24"),), "routed")),
                            "eno1")
    text = nft.render_table(spec)
    assert "set masquerade4 { type ipv4_addr; flags interval; elements = { 10.10.0.0/24, 10.21.0.0/24 } }" in text
    assert "set masquerade6 { type ipv6_addr; flags interval; elements = { fd00:21::/64 } }" in text
    assert 'oifname "eno1" ip saddr @masquerade4 masquerade' in text
    assert 'oifname "eno1" ip6 saddr @masquerade6 masquerade' in text and "10.99.0.0" not in text


def test_proxmox_firewall_adds_the_conntrack_zone_at_raw_priority():
    off, on = (nft.render_table(nft.from_settings(SETTINGS, "vmbr0", pve)) for pve in (False, True))
    assert "ct zone" not in off
    assert "type filter hook prerouting priority raw; policy accept;\n\t\tiifname \"fwbr*\" ct zone set 1" in on


@pytest.mark.parametrize("bad, field", [
    (lambda: nft.FirewallZone("bad name", "br0", ()), "zone name"),
    (lambda: nft.FirewallZone("a", "br0", (), nat="nat66"), "nat"),
    (lambda: nft.FirewallSpec(zones(1) * 2, "vmbr0"), "zones"),
    (lambda: nft.FirewallSpec(zones(1), "vmbr0", frozenset({frozenset({"prox-net", "nope"})})), "peers"),
])
def test_bad_zones_are_refused_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        bad()


@needs_nft
@pytest.mark.parametrize("n, pve", [(1, False), (1, True), (10, True)])
def test_nft_accepts_the_rendered_table(n, pve):
    peers = frozenset({frozenset({"z1", "z2"})}) if n > 2 else frozenset()
    result = nft_check(nft.render_table(nft.FirewallSpec(zones(n), "vmbr0", peers, pve)))
    assert result.returncode == 0, result.stderr


@needs_nft
def test_nft_check_catches_a_broken_table():
    text = nft.render_table(nft.from_settings(SETTINGS, "vmbr0", False)).replace("masquerade\n", "masqeurade\n", 1)
    assert nft_check(text).returncode != 0


# -- reading back ---------------------------------------------------------------------------------
LISTING = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "proximity", "handle": 7}},
    {"table": {"family": "ip", "name": "proximity", "handle": 8}},  # another family: not ours
    {"set": {"family": "inet", "name": "bridges", "table": "proximity", "type": "ifname", "handle": 2,
             "elem": ["prox-net"]}},
    {"rule": {"family": "inet", "table": "proximity", "chain": "forward", "handle": 9,
              "expr": [{"counter": {"packets": 5, "bytes": 300}}, {"drop": None}]}},
    {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 3, "expr": [{"accept": None}]}},
]}


def test_own_objects_are_the_inet_proximity_table_without_handles_or_counters():
    objects = nft.own_objects(LISTING)
    assert [next(iter(o)) for o in objects] == ["table", "set", "rule"]
    assert "handle" not in json.dumps(objects) and "packets" not in json.dumps(objects)
    renumbered = json.loads(json.dumps(LISTING).replace('"handle": 9', '"handle": 99')
                            .replace('"packets": 5', '"packets": 6'))
    assert nft.own_objects(renumbered) == objects
    assert nft.own_objects({"nftables": []}) == [] and nft.own_objects({}) == []


def test_docker_accepts_go_where_the_forward_policy_drops():
    saved = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n"
             "-A FORWARD -j DOCKER-USER\nCOMMIT\n")
    chains = filter_chains(saved)
    assert chains == {"INPUT": "ACCEPT", "FORWARD": "DROP", DOCKER_USER: "-"}
    assert accept_chain(chains) == DOCKER_USER
    assert accept_chain({"FORWARD": "DROP"}) == "FORWARD"
    assert accept_chain({"FORWARD": "ACCEPT", DOCKER_USER: "-"}) is None
    spec = nft.FirewallSpec(zones(2), "vmbr0", frozenset({frozenset({"prox-net", "z1"})}))
    saved_rules = [rule.saved() for rule in docker_rules(SETTINGS, spec, DOCKER_USER)]
    assert "-A DOCKER-USER -i prox-net -o vmbr0 -m comment --comment proximity:prox-net -j ACCEPT" in saved_rules
    assert ("-A DOCKER-USER -i vmbr0 -o prox-z1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "
            "proximity:prox-net -j ACCEPT") in saved_rules
    assert "-A DOCKER-USER -i prox-z1 -o prox-net -m comment --comment proximity:prox-net -j ACCEPT" in saved_rules
    assert docker_rules(SETTINGS, spec, None) == []


# -- applying: one transaction, nothing when converged ------------------------------------------------
def test_up_applies_the_table_with_one_nft_invocation_and_a_converged_host_runs_none():
    from proximity.network.reconciler import NetworkManager
    from tests.unit.test_plan import SETTINGS as FAKE, fresh_host, plan_of

    host = fresh_host()
    NetworkManager(FAKE, host=host).up()
    assert [argv for argv in host.commands if argv[0] == "nft"] == [["nft", "-f", str(FAKE.ruleset_file)]]
    assert host.table is not None and not plan_of(host)
    host.commands.clear()
    NetworkManager(FAKE, host=host).up()
    assert host.commands == []
    host.table = host.table.replace("\t\toifname @bridges drop\n", "", 1)  # a rule deleted by hand
    assert [c.describe() for c in plan_of(host).changes] == [
        f"apply the nftables table inet proximity from {FAKE.ruleset_file} (nft -f, one transaction)"]
    NetworkManager(FAKE, host=host).up()
    assert [argv for argv in host.commands if argv[0] == "nft"] == [["nft", "-f", str(FAKE.ruleset_file)]]
    assert not plan_of(host)


def test_down_deletes_the_table_and_its_file_and_a_table_already_gone_is_converged():
    from proximity.network.plan import plan_down
    from proximity.network.reconciler import NetworkManager
    from tests.unit.test_plan import SETTINGS as FAKE, converged_host

    host = converged_host()
    host.table = None  # deleted by someone else
    NetworkManager(FAKE, host=host).down(force=True)
    assert host.table is None and str(FAKE.ruleset_file) not in host.files
    assert str(FAKE.ruleset_state_file) not in host.files
    assert not plan_down(FAKE, NetworkManager(FAKE, host=host).observe())
