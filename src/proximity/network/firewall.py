"""Proximity's iptables rules as data: rendered from the settings, parsed back from the host.

The packet filter itself is the nftables table (``network.nft``). iptables keeps two jobs: the
accepts a FORWARD policy of DROP needs (Docker's), and the rules of releases before the table,
which ``up`` finds by their comment and removes.

A :class:`Rule` is written in ``iptables-save``'s own word order, so a live rule read back
from ``iptables-save`` parses into an equal ``Rule`` and the planner compares plain values.
Every rule carries the comment ``proximity:<bridge>``: that is how Proximity knows its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from proximity.network.nft import FirewallSpec
from proximity.settings import Settings

# The rule Proxmox documents for masquerading bridges when its firewall is on
# ("Masquerading (NAT) with iptables", Proxmox VE network configuration).
PVE_CONNTRACK_ZONE = ("-i", "fwbr+")
DOCKER_USER = "DOCKER-USER"


@dataclass(frozen=True)
class Rule:
    """One iptables rule Proximity owns."""

    table: str
    chain: str
    spec: tuple[str, ...]
    insert: bool = field(default=False, compare=False)  # at the top of the chain (drops must win)

    def argv(self, op: str) -> list[str]:
        return ["iptables", "-w", "5", "-t", self.table, op, self.chain, *self.spec]

    @property
    def add_op(self) -> str:
        return "-I" if self.insert else "-A"

    def saved(self) -> str:
        """The line ``iptables-save`` prints for this rule (quotes removed)."""
        return " ".join(["-A", self.chain, *self.spec])

    def ensure_shell(self) -> str:
        """A post-up command: add the rule unless it is there (re-running never duplicates)."""
        return f"{shlex.join(self.argv('-C'))} 2>/dev/null || {shlex.join(self.argv(self.add_op))}"

    def remove_shell(self) -> str:
        return f"{shlex.join(self.argv('-D'))} 2>/dev/null || true"


def comment(settings: Settings) -> str:
    return f"proximity:{settings.bridge}"


def legacy_rules(settings: Settings, uplink: str, pve_firewall: bool) -> list[Rule]:
    """The iptables rules releases before the nftables table installed (NAT, the forwarding rules that
    kept the outside out, Proxmox's conntrack zone). ``up`` removes them once the table is live; they
    are kept here for the upgrade test and the benchmark that compares the two."""
    br, net, tag = settings.bridge, str(settings.subnet), ("-m", "comment", "--comment", comment(settings))
    rules = [
        Rule("nat", "POSTROUTING", ("-s", net, "-o", uplink, *tag, "-j", "MASQUERADE")),
        Rule(
            "filter",
            "FORWARD",
            ("!", "-i", br, "-o", br, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "DROP"),
            insert=True,
        ),
        Rule("filter", "FORWARD", ("-i", br, "!", "-o", br, *tag, "-j", "ACCEPT")),
        Rule(
            "filter",
            "FORWARD",
            ("!", "-i", br, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"),
        ),
    ]
    if pve_firewall:
        rules.append(Rule("raw", "PREROUTING", (*PVE_CONNTRACK_ZONE, *tag, "-j", "CT", "--zone", "1"), insert=True))
    return rules


def accept_chain(chains: Mapping[str, str]) -> str | None:
    """Where iptables needs Proximity's accepts: nowhere unless the filter FORWARD policy is DROP (Docker
    sets it); then in ``DOCKER-USER`` (Docker's chain for its users' rules) if it exists, else FORWARD.

    An accept in Proximity's nft table cannot override that drop (every base chain at a hook runs)."""
    if chains.get("FORWARD") != "DROP":
        return None
    return DOCKER_USER if DOCKER_USER in chains else "FORWARD"


def docker_rules(settings: Settings, spec: FirewallSpec, chain: str | None) -> list[Rule]:
    """The iptables accepts that let zones out where the FORWARD policy drops: each zone inside its
    bridge and out of the uplink, peered zones to each other, and the replies back (IPv4)."""
    if chain is None:
        return []
    tag = ("-m", "comment", "--comment", comment(settings))
    bridges = {zone.name: zone.bridge for zone in spec.zones}
    pairs = [(bridges[a], bridges[b]) for pair in spec.peers for a in pair for b in pair if a != b]
    rules = []
    for zone in spec.zones:
        br = zone.bridge
        rules += [Rule("filter", chain, ("-i", br, "-o", spec.uplink, *tag, "-j", "ACCEPT"), insert=True),
                  Rule("filter", chain, ("-i", spec.uplink, "-o", br, "-m", "conntrack", "--ctstate",
                                         "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"), insert=True),
                  Rule("filter", chain, ("-i", br, "-o", br, *tag, "-j", "ACCEPT"), insert=True)]
    rules += [Rule("filter", chain, ("-i", a, "-o", b, *tag, "-j", "ACCEPT"), insert=True) for a, b in sorted(pairs)]
    return rules


def filter_chains(saved: str) -> dict[str, str]:
    """The filter table's chains in an ``iptables-save`` dump: name -> policy (``-`` for a user chain)."""
    chains, table = {}, ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "filter" and line.startswith(":"):
            name, policy, *_ = line[1:].split()
            chains[name] = policy
    return chains


def parse_own_rules(saved: str, settings: Settings) -> tuple[Rule, ...]:
    """Proximity's rules in an ``iptables-save`` dump (every table), in order, duplicates kept."""
    tag = f"--comment {comment(settings)} "
    found, table = [], ""
    for line in saved.splitlines():
        line = line.replace('"', "")  # iptables-nft quotes every comment, legacy does not
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and tag in line:
            words = shlex.split(line)
            found.append(Rule(table, words[1], tuple(words[2:])))
    return tuple(found)
