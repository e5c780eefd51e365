"""The sandbox's stand-in for pve-firewall: an enabled Proxmox host firewall, rewritten every few seconds.

Built from what pve-firewall does on a real node with the datacenter firewall on: its
``PVEFW-HOST-IN`` chain accepts lo, established traffic, IGMP and, from the management network
only, the management ports (8006, 22, 3128, 5900-5999, 60000-60050); then the node's host rules
(host.fw, or ``/nodes/{node}/firewall/rules``), compiled; then ``policy_in`` (DROP). Like
pve-firewall, every sync compares the live chain with what it made last time and rewrites it
when they differ, so a rule that someone added inside it does not last (and the counters of an
untouched chain keep counting).
"""

from __future__ import annotations

import threading
from typing import Any

from proximity.host import Host

CHAIN = "PVEFW-HOST-IN"
MANAGEMENT_PORTS = "8006,22,3128,5900:5999,60000:60050"
MACROS = {  # the two macros Proximity's rules may use, as pve-firewall expands them
    "DNS": [("udp", "53", None), ("tcp", "53", None)],
    "DHCPfwd": [("udp", "67:68", "67:68")],
}


def compile_rules(rules: list[dict[str, Any]], management: str) -> list[str]:
    """The chain's lines, in ``iptables-restore`` syntax."""
    lines = [f"-A {CHAIN} -i lo -j ACCEPT",
             f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             f"-A {CHAIN} -p igmp -j ACCEPT",
             f"-A {CHAIN} -s {management} -p tcp -m multiport --dports {MANAGEMENT_PORTS} -j ACCEPT"]
    for rule in rules:
        if rule.get("type") != "in" or str(rule.get("enable", 1)) != "1":
            continue
        action = rule.get("action", "ACCEPT")
        matches = [(rule.get("proto"), rule.get("dport"), rule.get("sport"))]
        if rule.get("macro"):
            matches = MACROS[rule["macro"]]
        for proto, dport, sport in matches:
            words = [f"-A {CHAIN}"]
            if rule.get("source"):
                words.append(f"-s {rule['source']}")
            if rule.get("dest"):
                words.append(f"-d {rule['dest']}")
            if proto:
                words.append(f"-p {proto}")
            if sport:
                words.append(f"--sport {sport}")
            if dport:
                words.append(f"--dport {dport}")
            words.append(f"-j {action}")
            lines.append(" ".join(words))
    lines.append(f"-A {CHAIN} -j DROP")  # policy_in
    return lines


class PveFirewall:
    """An enabled Proxmox host firewall in a sandbox host: ``set_rules`` compiles, a thread re-syncs."""

    def __init__(self, netns: str, management: str = "198.51.100.0/24", sync_every: float = 1.0):
        self.host = Host(netns)
        self.management, self.sync_every = management, sync_every
        self.rules: list[dict[str, Any]] = []
        self.syncs = 0
        self._applied: str | None = None  # `iptables -S CHAIN` right after the last rewrite
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        with self._lock:
            self.rules = list(rules)
            self._applied = None
        self.sync()

    def sync(self) -> None:
        """What pve-firewall does every few seconds: rewrite the chain if it is not as it made it."""
        with self._lock:
            self.syncs += 1
            if self._applied is not None and self.host.query(["iptables", "-S", CHAIN]).stdout == self._applied:
                return
            text = "\n".join(["*filter", f":{CHAIN} - [0:0]", *compile_rules(self.rules, self.management),
                              "COMMIT", ""])
            self.host.run(["iptables-restore", "--noflush"], input=text)
            self._applied = self.host.query(["iptables", "-S", CHAIN]).stdout
            if not self.host.query(["iptables", "-C", "INPUT", "-j", CHAIN]).ok:
                self.host.run(["iptables", "-I", "INPUT", "1", "-j", CHAIN])

    def start(self) -> PveFirewall:
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="pve-firewall", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.sync_every):
            self.sync()

    def stop(self) -> None:
        """Stop syncing and remove the chain (the firewall is off again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.host.query(["iptables", "-D", "INPUT", "-j", CHAIN])
        self.host.query(["iptables", "-F", CHAIN])
        self.host.query(["iptables", "-X", CHAIN])
