"""Which nftables table and chain drops the end-to-end probe's packets.

An accept in Proximity's table cannot cancel another table's drop (proxmox-firewall's
``inet proxmox-firewall``, ``bridge proxmox-firewall-guests``, ufw, a hand-written table), and
those tables keep no counters. So while the probe runs, a short-lived table of its own,
``inet proximity-trace-<pid>`` (and ``bridge proximity-trace-<pid>``, for the bridge family's
chains), sets ``meta nftrace`` at the earliest priority on the probe client's frames and on the
host's DHCP/DNS replies onto the bridge; ``nft monitor`` then reports every chain's verdict
(IPv4 and IPv6 alike: the client's router solicitations and neighbour discovery are traced too). The tables are deleted at the end; tables of a probe that was killed (its pid is dead)
are deleted by the next one. The monitor runs under ``timeout`` and gets SIGTERM when its
parent dies (``setpriv --pdeathsig``), so it does not outlive a killed probe.

:func:`suspects` reads the ruleset instead (no packet needed): the other tables' base chains on
the hooks the probe's packets cross that can drop. It says whether tracing is needed at all
(a host with Proximity's table alone traces nothing) and what doctor lists.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass

from proximity.host import Host
from proximity.host.processes import wait_for
from proximity.network import nft

PREFIX = "proximity-trace-"
PRIORITY = -1000  # before raw (-300), conntrack (-200) and every filter chain a firewall tool uses
MONITOR_LIMIT = 60  # seconds: the monitor's own lifetime, even if nothing stops it
TRACE_LINE = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (.*)$")
# Hooks the probe's packets cross: its frames in, the host's replies out.
HOOKS = {"bridge": {"prerouting", "input", "output", "forward", "postrouting"},
         "inet": {"prerouting", "input", "output"}, "ip": {"prerouting", "input", "output"},
         "ip6": {"prerouting", "input", "output"}}
IPTABLES_NFT = {"filter", "nat", "mangle", "raw", "security"}  # iptables-nft's tables: read by their counters


@dataclass(frozen=True)
class Drop:
    """A verdict of drop that a traced packet got."""

    family: str
    table: str
    chain: str
    verdict: str  # "policy drop" or the rule that dropped it
    packet: str  # what was dropped, in words

    @property
    def where(self) -> str:
        return f"table {self.family} {self.table}, chain {self.chain}"

    @property
    def proxmox(self) -> bool:
        return self.table.startswith("proxmox-firewall")


@dataclass(frozen=True)
class Suspect:
    """Another table's base chain on a hook the zone's traffic to the host crosses, that can drop."""

    family: str
    table: str
    chain: str
    hook: str
    policy: str
    rules: int

    @property
    def where(self) -> str:
        return f"table {self.family} {self.table}, chain {self.chain}"


def _own(table: str) -> bool:
    return table == nft.TABLE or table.startswith(PREFIX)


def is_trace_object(item) -> bool:
    """An object of a trace table in a ``nft -j list ruleset`` listing."""
    body = next(iter(item.values()), None) if isinstance(item, dict) and len(item) == 1 else None
    name = body.get("name" if "table" in item else "table") if isinstance(body, dict) else None
    return isinstance(name, str) and name.startswith(PREFIX)


def suspects(listing: dict, hooks: dict[str, set[str]] = HOOKS, with_iptables: bool = True) -> list[Suspect]:
    """Other tables' base chains on ``hooks`` with a drop policy or rules (an empty accepting chain cannot drop)."""
    rules: dict[tuple[str, str, str], int] = {}
    chains = []
    for item in listing.get("nftables", []):
        if not isinstance(item, dict):
            continue
        if isinstance(rule := item.get("rule"), dict):
            key = (rule.get("family"), rule.get("table"), rule.get("chain"))
            rules[key] = rules.get(key, 0) + 1
        elif isinstance(chain := item.get("chain"), dict) and chain.get("hook"):
            chains.append(chain)
    found = []
    for c in chains:
        family, table, name = str(c.get("family")), str(c.get("table")), str(c.get("name"))
        if _own(table) or c.get("hook") not in hooks.get(family, ()):
            continue
        if not with_iptables and family in ("ip", "ip6") and table in IPTABLES_NFT:
            continue
        count, policy = rules.get((family, table, name), 0), str(c.get("policy", "accept"))
        if policy == "drop" or count:
            found.append(Suspect(family, table, name, str(c["hook"]), policy, count))
    return found


def describe(packet: str) -> str:
    """A traced packet (nft's ``packet:`` line) in words."""
    kinds = (("udp dport 67", "DHCP (udp 67)"), ("udp sport 67", "a DHCP reply (udp 67)"),
             ("udp dport 547", "DHCPv6 (udp 547)"), ("udp sport 547", "a DHCPv6 reply (udp 547)"),
             ("dport 53", "DNS (port 53)"), ("sport 53", "a DNS answer (port 53)"),
             ("nd-router-solicit", "a router solicitation"), ("nd-router-advert", "a router advertisement"),
             ("nd-neighbor", "neighbour discovery"), ("arp ", "ARP"), ("icmpv6", "ICMPv6"), ("icmp ", "ICMP"))
    return next((words for key, words in kinds if key in packet), "a packet")


def parse(lines: list[str]) -> list[Drop]:
    """The drop verdicts in ``nft monitor trace`` output, each with the packet it dropped (first seen first)."""
    packets: dict[str, str] = {}
    drops: list[Drop] = []
    for line in lines:
        m = TRACE_LINE.match(line.strip())
        if not m:
            continue
        trace_id, family, table, chain, rest = m.groups()
        if rest.startswith("packet:"):
            packets[trace_id] = rest
            continue
        if rest.rstrip() == "policy drop":
            verdict = "policy drop"
        elif rest.rstrip().endswith("(verdict drop)"):  # "rule ...", or "unknown rule handle N" (added later)
            verdict = rest.removeprefix("unknown ").removeprefix("rule ").rstrip().removesuffix("(verdict drop)")
            verdict = verdict.strip()
        else:
            continue
        drop = Drop(family, table, chain, verdict, describe(packets.get(trace_id, "")))
        if not _own(table) and drop not in drops:
            drops.append(drop)
    return drops


def remove_stale(host: Host) -> None:
    """Delete trace tables whose probe is gone (killed midway)."""
    for family, name in _trace_tables(host):
        pid = name.removeprefix(PREFIX)
        if not pid.isdigit() or not host.alive(int(pid)):
            host.query(["nft", "delete", "table", family, name])


def _trace_tables(host: Host) -> list[tuple[str, str]]:
    found = []
    for line in host.query(["nft", "list", "tables"]).stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[2].startswith(PREFIX):
            found.append((words[1], words[2]))
    return found


def _ruleset(name: str, bridge: str, port: str, mac: str, with_bridge: bool) -> str:
    """The trace tables as one transaction. Each is flushed and filled (no ``delete``: the only
    ``delete table`` the monitor prints is the end's); inet's ``out`` rule is the last command."""
    br = f'"{bridge}"'
    lines = []
    if with_bridge:
        lines += [f"add table bridge {name}", f"flush table bridge {name}", f"table bridge {name} {{", "\tchain pre {",
                  f"\t\ttype filter hook prerouting priority {PRIORITY}; policy accept;",
                  f'\t\tiifname "{port}" meta nftrace set 1', "\t}", "}"]
    lines += [
        f"add table inet {name}", f"flush table inet {name}", f"table inet {name} {{",
        "\tchain pre {",
        f"\t\ttype filter hook prerouting priority {PRIORITY}; policy accept;",
        f"\t\tiifname {br} ether saddr {mac} meta nftrace set 1",
        "\t}",
        "\tchain out {",
        f"\t\ttype filter hook output priority {PRIORITY}; policy accept;",
        f"\t\toifname {br} meta l4proto {{ tcp, udp }} th sport {{ 53, 67, 547 }} meta nftrace set 1",
        "\t}",
        "}",
    ]
    return "\n".join([*lines, ""])


class Trace:
    """``with Trace(host, bridge, port, mac) as trace:`` traces the probe's packets; ``trace.drops``
    afterwards. ``trace.error`` says why nothing was traced (then ``drops`` is empty).

    ``nft monitor`` prints ruleset events and traces in one ordered stream, so the monitor is
    known to listen once it prints the trace table's last rule, and everything traced has been
    read once it prints its ``delete table``: no marker packet, no sleep."""

    def __init__(self, host: Host, bridge: str, port: str, mac: str):
        self.host, self.bridge, self.port, self.mac = host, bridge, port, mac
        self.name = f"{PREFIX}{os.getpid()}"
        self.lines: list[str] = []
        self.drops: list[Drop] = []
        self.error = ""
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._families: list[str] = []  # of the tables it added

    def launch(self) -> Trace:
        """Start the monitor now, so that its start overlaps the caller's own set-up (optional)."""
        try:
            self._launch()
        except Exception as exc:  # tracing is a diagnosis: the probe runs without it
            self.error = f"cannot trace: {exc}"
        return self

    def __enter__(self) -> Trace:
        if self._proc is None and not self.error:
            self.launch()
        try:
            if not self.error:
                self._start()
        except Exception as exc:
            self.error = f"cannot trace: {exc}"
            self._stop()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop()
        self.drops = parse(self.lines)

    def close(self) -> None:
        """Stop a monitor that was launched but never entered (the caller failed in between); idempotent."""
        self._stop()

    def _launch(self) -> None:
        # setpriv (util-linux) makes it die with this process (a kill -9 included); timeout bounds it anyway.
        argv = self.host.describe(["setpriv", "--pdeathsig", "TERM", "timeout", str(MONITOR_LIMIT), "nft", "monitor"])
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()

    def _start(self) -> None:
        # A trace table left by a killed probe: the probe deletes it before it starts (remove_stale); this
        # pid's own is flushed and filled again.
        # The monitor subscribes within milliseconds; rules added before that go unseen, so the tables
        # are filled again (one transaction) until the monitor reports the last rule.
        def listening() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(f"`nft monitor` exited at once (status {self._proc.returncode})")
            for with_bridge in (True, False):  # no bridge family in this kernel: the inet table alone
                text = _ruleset(self.name, self.bridge, self.port, self.mac, with_bridge)
                result = self.host.query(["nft", "-f", "-"], input=text)
                if result.ok:
                    self._families = ["bridge", "inet"] if with_bridge else ["inet"]  # inet last: the barrier
                    break
            else:
                raise RuntimeError(f"`nft -f` refused the trace table: {result.stderr.strip()}")
            return wait_for(self._filled, 0.05)

        if not wait_for(listening, 3.0, interval=0.01):
            raise RuntimeError("`nft monitor` did not report the trace table within 3 s")

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def _filled(self) -> bool:
        return any(line.startswith(f"add rule inet {self.name} out ") for line in list(self.lines))

    def _deleted(self) -> bool:
        return f"delete table inet {self.name}\n" in list(self.lines)

    def _delete_tables(self) -> None:
        if self._families:
            self.host.query(["nft", "-f", "-"], input="".join(f"delete table {family} {self.name}\n"
                                                             for family in self._families))
            self._families = []

    def _stop(self) -> None:
        self._delete_tables()
        if self._proc is not None:
            wait_for(lambda: self._deleted() or self._proc.poll() is not None, 3.0)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=2)
            self._proc = None
