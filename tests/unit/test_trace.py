"""Reading `nft monitor` output and `nft -j list ruleset` for other tables' drops (pure functions)."""

from __future__ import annotations

from proximity.network.probe import rules_digest
from proximity.network.trace import PREFIX, describe, is_trace_object, parse, suspects

# Real `nft monitor` output (nftables 1.0.6) of a DHCP DISCOVER dropped by a stand-in's policy, with a
# ruleset event and the trace table's own lines mixed in.
MONITOR = f"""add table inet {PREFIX}7
trace id 4ca9c53c bridge {PREFIX}7 pre packet: iif "pxp7" ether saddr 02:00:00:00:00:05 ip saddr 0.0.0.0 ip daddr 255.255.255.255 ip protocol udp udp sport 68 udp dport 67 udp length 308
trace id 4ca9c53c bridge {PREFIX}7 pre rule iifname "pxp7" meta nftrace set 1 (verdict continue)
trace id 4ca9c53c bridge {PREFIX}7 pre policy accept
trace id 4ca9c53c bridge proxmox-firewall-guests vm-out packet: iif "pxp7" ether saddr 02:00:00:00:00:05 udp sport 68 udp dport 67
trace id 4ca9c53c bridge proxmox-firewall-guests vm-out policy accept
trace id 0d0091cf inet proxmox-firewall input packet: iif "prox-net" ether saddr 02:00:00:00:00:05 ip saddr 0.0.0.0 ip daddr 255.255.255.255 ip protocol udp udp sport 68 udp dport 67 udp length 308
trace id 0d0091cf inet proxmox-firewall input rule iifname "lo" accept (verdict continue)
trace id 0d0091cf inet proxmox-firewall input policy drop
trace id 11111111 inet other input packet: iif "prox-net" ip6 saddr fe80::1 icmpv6 type nd-router-solicit
trace id 11111111 inet other input unknown rule handle 4 (verdict drop)
trace id 22222222 inet other input packet: iif "prox-net" ip saddr 10.10.0.100 udp sport 40000 udp dport 53
trace id 22222222 inet other input rule udp dport 53 drop (verdict drop)
delete table inet {PREFIX}7
"""


def test_drops_are_named_by_table_chain_and_packet():
    drops = parse(MONITOR.splitlines(keepends=True))
    assert [(d.family, d.table, d.chain, d.verdict, d.packet) for d in drops] == [
        ("inet", "proxmox-firewall", "input", "policy drop", "DHCP (udp 67)"),
        ("inet", "other", "input", "handle 4", "a router solicitation"),
        ("inet", "other", "input", "udp dport 53 drop", "DNS (port 53)"),
    ]
    assert drops[0].proxmox and drops[0].where == "table inet proxmox-firewall, chain input"
    assert parse(["garbage\n", "trace id x\n"]) == []


def test_packets_in_words():
    assert describe("udp sport 67 udp dport 68") == "a DHCP reply (udp 67)"
    assert describe("udp sport 546 udp dport 547") == "DHCPv6 (udp 547)"
    assert describe("icmpv6 type nd-neighbor-solicit") == "neighbour discovery"
    assert describe("") == "a packet"


def chain(table, name, hook, policy="accept", family="inet"):
    return {"chain": {"family": family, "table": table, "name": name, "type": "filter", "hook": hook, "prio": 0,
                      "policy": policy}}


def rule(table, name, family="inet"):
    return {"rule": {"family": family, "table": table, "chain": name, "expr": []}}


def test_suspects_are_other_tables_chains_that_can_drop():
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        chain("proximity", "input", "input"), rule("proximity", "input"),  # Proximity's own
        chain(f"{PREFIX}9", "pre", "prerouting"), rule(f"{PREFIX}9", "pre"),  # a trace table
        chain("proxmox-firewall", "input", "input", "drop"),
        chain("proxmox-firewall", "output", "output"),  # accepts, no rule: cannot drop
        chain("proxmox-firewall-guests", "vm-out", "prerouting", family="bridge"), rule("proxmox-firewall-guests", "vm-out", "bridge"),
        chain("filter", "INPUT", "input", "drop", family="ip"),  # iptables-nft
        chain("docker", "fwd", "forward", "drop"),  # not a hook the probe crosses
        {"chain": {"family": "inet", "table": "x", "name": "regular"}},  # not a base chain
    ]}
    found = [(s.family, s.table, s.chain, s.policy, s.rules) for s in suspects(listing)]
    assert found == [("inet", "proxmox-firewall", "input", "drop", 0),
                     ("bridge", "proxmox-firewall-guests", "vm-out", "accept", 1),
                     ("ip", "filter", "INPUT", "drop", 0)]
    forward = {"inet": {"forward", "input"}, "ip": {"input"}}
    assert [(s.table, s.chain) for s in suspects(listing, forward, with_iptables=False)] == [
        ("proxmox-firewall", "input"), ("docker", "fwd")]
    assert suspects({}) == [] and suspects({"nftables": ["junk", {"chain": "junk"}]}) == []


def test_a_trace_table_is_no_rule_of_the_host():
    base = [chain("proximity", "input", "input")]
    traced = [*base, {"table": {"family": "inet", "name": f"{PREFIX}9"}}, chain(f"{PREFIX}9", "pre", "prerouting")]
    assert is_trace_object(traced[1]) and is_trace_object(traced[2]) and not is_trace_object(base[0])
    assert rules_digest("", {"nftables": base}) == rules_digest("", {"nftables": traced})


def test_the_fix_names_the_chain_and_works_in_its_family():
    from proximity.network.probe import _nft_blocker
    from proximity.network.trace import Drop
    from proximity.settings import load_settings

    s = load_settings()
    pve = Drop("inet", "proxmox-firewall", "input", "policy drop", "DHCP (udp 67)")
    cause, reason, fix = _nft_blocker(s, pve, "DHCP (udp 67)", [pve, Drop("inet", "proxmox-firewall", "input",
                                                                          "policy drop", "a router solicitation")])
    assert cause == "pve_firewall_drop" and "Proxmox API token" in fix
    assert reason.endswith("(its policy drop); it also drops a router solicitation"), reason
    other = Drop("bridge", "guard", "in", 'udp dport 67 drop', "DHCP (udp 67)")
    cause, reason, fix = _nft_blocker(s, other, "DHCP (udp 67)", [other])
    assert cause == "firewall_drop" and "table bridge guard, chain in" in reason and "rule `udp dport 67 drop`" in reason
    assert "nft insert rule bridge guard in ip daddr '{ 10.10.0.1, 255.255.255.255 }'" in fix, fix
    inet = Drop("ip", "guard", "in", "policy drop", "a packet")
    assert "nft insert rule ip guard in iifname \"prox-net\"" in _nft_blocker(s, inet, "DNS (port 53)", [inet])[2]
