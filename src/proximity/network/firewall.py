"""Proximity's firewall rules as data: rendered from the settings, parsed back from the host.

A :class:`Rule` is written in ``iptables-save``'s own word order, so a live rule read back
from ``iptables-save`` parses into an equal ``Rule`` and the planner compares plain values.
Every rule carries the comment ``proximity:<bridge>``: that is how Proximity knows its own.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from proximity.settings import Settings

# The rule Proxmox documents for masquerading bridges when its firewall is on
# ("Masquerading (NAT) with iptables", Proxmox VE network configuration).
PVE_CONNTRACK_ZONE = ("-i", "fwbr+")


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


def firewall_rules(settings: Settings, uplink: str, pve_firewall: bool) -> list[Rule]:
    """NAT out of the uplink, plus the forwarding rules that keep the outside out.

    MASQUERADE alone lets a LAN host that routes the subnet via this host reach
    containers, so new connections forwarded *into* the bridge are dropped.
    """
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
