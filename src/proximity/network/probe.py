"""The end-to-end probe: a throwaway client on the bridge must get a lease and resolve a name.

Only this sees what the host's other layers do to containers (a firewall dropping DHCP or DNS,
another process on port 67). The client lives in a network namespace of its own, with a fixed MAC
(so it reuses one lease, released afterwards), and is removed at the end whatever happens. When
it fails, the packet counters of the host's iptables, read before and after, name the rule that
dropped it; other nftables tables keep no counters, so when one could drop (proximity.network.trace),
the probe's packets are traced and the table and chain that dropped them are named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

from proximity.errors import HostError, ProximityError
from proximity.host import Host
from proximity.network import nft, trace
from proximity.network.dnsmasq import port_holders
from proximity.network.render import stable_mac
from proximity.network.trace import Drop, Trace, suspects
from proximity.settings import Settings

PROBE_HOSTNAME = "proximity-probe"
LEASE_RE = re.compile(r"lease of (\d+\.\d+\.\d+\.\d+) obtained")
COUNTED = re.compile(r"^\[(\d+):\d+\] (-A (\S+) .*-j (?:DROP|REJECT).*)$")
POLICY = re.compile(r"^:(\S+) (DROP|REJECT) \[(\d+):\d+\]$")
# What changes in an iptables-save listing without a rule changing: counters.
VOLATILE = re.compile(r"\[\d+:\d+\]")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    time: float
    lease: str | None  # the address the probe client got
    resolved: bool  # the gateway answered its DNS query
    reason: str = ""  # what blocks it, naming the layer
    fix: str = ""
    cause: str = ""  # a stable id of what blocked it: dnsmasq_down, firewall_drop, pool_full, ...
    rules_digest: str = ""  # the host's firewall rules it was taken under (see rules_digest())
    blocked_by: str = ""  # the nftables table and chain that dropped it ("inet proxmox-firewall input")

    def as_dict(self) -> dict:
        return asdict(self)


def probe(host: Host, settings: Settings, timeout: float = 6.0) -> ProbeResult:
    """Attach a client to the bridge, ask for a lease and a name, and say what blocked it if it failed."""
    s = settings
    ns, veth = f"pxprobe-{os.getpid()}", f"pxp{os.getpid()}"
    root, client = host.sibling(None), host.sibling(ns)
    listing = list_ruleset(host)[0]
    if any(trace.is_trace_object(item) for item in listing.get("nftables", [])):
        trace.remove_stale(host)  # of a probe that was killed while it traced
        listing = list_ruleset(host)[0]
    digest = host_rules_digest(host, listing)
    before = _drop_counters(host)
    remove_stale_probes(root)
    # Only another table's chain that can drop is worth a trace (a host with Proximity's table alone has none);
    # its monitor starts while the client is set up.
    suspected = suspects(listing)
    tracing = Trace(host, s.bridge, veth, client_mac(s)).launch() if suspected else nullcontext()
    lease, resolved, drops, untraced = None, False, [], ""
    try:
        root.run(["ip", "netns", "add", ns])
        host.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        host.run(["ip", "link", "set", "dev", veth, "master", s.bridge, "up"])
        client.run(["ip", "link", "set", "dev", "lo", "up"])
        with tracing:
            client.run(["ip", "link", "set", "dev", "eth0", "address", client_mac(s), "up"])
            tries = max(1, int(timeout // 2))
            result = client.query(["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", str(tries), "-T", "1",
                                   "-A", "1", "-x", f"hostname:{PROBE_HOSTNAME}", "-s", "/bin/true"],
                                  timeout=timeout + 5)
            found = LEASE_RE.search(result.stdout + result.stderr)
            if found:
                lease = found.group(1)
                client.run(["ip", "address", "add", f"{lease}/{s.subnet.prefixlen}", "dev", "eth0"])
                resolved = client.resolve(probe_name(s), str(s.gateway.ip),
                                          timeout=1.0, attempts=2) is not None
        drops = tracing.drops if isinstance(tracing, Trace) else []
        untraced = tracing.error if isinstance(tracing, Trace) else ""
    finally:
        if isinstance(tracing, Trace):
            tracing.close()
        # The namespace's deletion takes the veth with it, but later (asynchronously): deleting it first frees
        # its name for the next probe of this process at once.
        host.ip("link", "delete", "dev", veth, check=False)
        root.query(["ip", "netns", "delete", ns])
        if lease:
            host.query(["dhcp_release", s.bridge, lease, client_mac(s)])
    if lease and resolved:
        return ProbeResult(True, time.time(), lease, True, rules_digest=digest)
    what = "DHCP (udp 67)" if not lease else "DNS (port 53)"
    drop = _dropped(drops, "udp 67" if not lease else "port 53")
    cause, reason, fix = _blocker(host, s, before, what, bool(lease), drop, drops)
    policies = [c for c in suspected if c.policy == "drop"]
    if cause == "no_answer" and untraced and policies:  # the trace could not run: name the likely ones
        cause, fix = "firewall_drop", f"let DHCP and DNS from {s.bridge} through there; {fix}"
        reason += (f"; {', '.join(c.where for c in policies)}: policy drop (what its rules do not accept), and the "
                   f"probe could not trace its packets to tell which ({untraced})")
    named = drop is not None and drop.where in reason  # not when the iptables counters named the rule
    return ProbeResult(False, time.time(), lease, resolved, reason, fix, cause, digest,
                       f"{drop.family} {drop.table} {drop.chain}" if named else "")


def rules_digest(iptables_save: str, listing: dict) -> str:
    """A digest of every firewall rule of the host (``iptables-save`` and ``nft -j list ruleset``), without
    counters or handles: a probe taken under other rules says nothing about these. A trace table (of a
    probe running now, or killed) is no rule of the host's."""
    listing = {"nftables": [item for item in listing.get("nftables", []) if not trace.is_trace_object(item)]}
    lines = [VOLATILE.sub("", line).rstrip() for line in iptables_save.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join([*lines, json.dumps(nft.normalise(listing), sort_keys=True)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def host_rules_digest(host: Host, listing: dict | None = None) -> str:
    saved = host.query(["iptables-save"])
    return rules_digest(saved.stdout if saved.ok else "", list_ruleset(host)[0] if listing is None else listing)


def list_ruleset(host: Host) -> tuple[dict, str]:
    """``nft -j list ruleset``, parsed (empty, with the reason, when nft is missing or fails)."""
    try:
        result = host.query(["nft", "-j", "list", "ruleset"])
    except HostError as exc:  # no nft on this host
        return {}, str(exc)
    if not result.ok:
        return {}, f"`nft -j list ruleset` failed: {result.stderr.strip()}"
    try:
        listing = json.loads(result.stdout or "{}")
    except ValueError:
        return {}, "`nft -j list ruleset` printed no JSON"
    return (listing, "") if isinstance(listing, dict) else ({}, "`nft -j list ruleset` printed no JSON object")


def is_stale(result: ProbeResult | None, digest: str | None) -> bool:
    """A probe that passed under other firewall rules than the host's now (None digest: not read)."""
    return result is not None and digest is not None and result.rules_digest != digest


def remove_stale_probes(root: Host) -> None:
    """A probe killed midway (kill -9) leaves its namespace: the next one removes it."""
    for line in root.query(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name.removeprefix("pxprobe-")
        if name.startswith("pxprobe-") and pid.isdigit() and not root.alive(int(pid)):
            root.query(["ip", "netns", "delete", name])


def probe_name(settings: Settings) -> str:
    """The name the probe asks for (any answer, NXDOMAIN too, shows dnsmasq answers): one per zone."""
    return f"{settings.service_name.replace('@', '-')}-probe.{settings.domain}"


def client_mac(settings: Settings) -> str:
    """The probe client's fixed MAC (it reuses one lease)."""
    return stable_mac(f"probe:{settings.bridge}")


def _drop_counters(host: Host) -> dict[str, int]:
    """Packets counted so far by each DROP/REJECT rule and DROP policy of the filter table."""
    counters = {}
    for line in host.query(["iptables-save", "-c", "-t", "filter"]).stdout.splitlines():
        if m := COUNTED.match(line):
            counters[m.group(2)] = int(m.group(1))
        elif m := POLICY.match(line):
            counters[f"policy of {m.group(1)}: {m.group(2)}"] = int(m.group(3))
    return counters


def _dropped(drops: list[Drop], kind: str) -> Drop | None:
    """The traced drop that explains the failure: one of the stage that failed ("udp 67", "port 53") first."""
    return next((d for d in drops if kind in d.packet), drops[0] if drops else None)


def _pve_fix(s: Settings) -> str:
    return (f"set the Proxmox API token and run `{s.command('up')}` (it adds host firewall rules for DHCP "
            f"and DNS, see the README), or add them by hand with the pvesh commands `up` prints")


def _nft_blocker(s: Settings, drop: Drop, what: str, drops: list[Drop]) -> tuple[str, str, str]:
    seen = f"{drop.packet} from the containers" if drop.packet != "a packet" else f"{what} from the containers"
    verdict = "its policy drop" if drop.verdict == "policy drop" else f"rule `{drop.verdict}`"
    reason = f"nftables {drop.where} drops {seen} ({verdict})"
    # What else of the probe's it dropped (IPv6's router solicitations and neighbour discovery, ...).
    also = list(dict.fromkeys(d.packet if d.where == drop.where else f"{d.packet} in {d.where}"
                              for d in drops if d.packet != drop.packet))[:4]
    if also:
        reason += f"; it also drops {', '.join(also)}"
    if drop.proxmox:
        return "pve_firewall_drop", f"the Proxmox firewall (proxmox-firewall): {reason}", _pve_fix(s)
    if drop.family == "bridge":  # the bridge family sees the ports, not the bridge (and ibrname is not everywhere)
        match = f"ip daddr '{{ {s.gateway.ip}, 255.255.255.255 }}' meta l4proto '{{ tcp, udp }}' th dport '{{ 53, 67 }}'"
    else:
        match = f"iifname \"{s.bridge}\" meta l4proto '{{ tcp, udp }}' th dport '{{ 53, 67, 547 }}'"
    allow = s.host_command(f"nft insert rule {drop.family} {drop.table} {drop.chain} {match} accept")
    return ("firewall_drop", f"another firewall drops what containers need: {reason}",
            f"let DHCP and DNS from {s.bridge} through in the tool that owns table {drop.family} {drop.table}, "
            f"or: `{allow}`")


def _blocker(host: Host, s: Settings, before: dict[str, int], what: str, leased: bool,
             drop: Drop | None = None, drops: list[Drop] = ()) -> tuple[str, str, str]:
    """Name the layer that blocked the probe (a stable cause id, what was seen) and the fix."""
    from proximity.network.dnsmasq import dns_service
    from proximity.network.leases import parse_leases
    from proximity.network.pool import pool_usage
    from proximity.network.reservations import Reservations

    if dns_service(host, s).running_pid() is None:
        return "dnsmasq_down", f"dnsmasq is not running, so nothing answers {what}", f"run `{s.command('up')}`"
    grown = [key for key, count in _drop_counters(host).items() if count > before.get(key, 0)]
    if grown:
        rule = grown[0]
        if "PVEFW-" in rule:
            return ("pve_firewall_drop", f"the Proxmox firewall drops {what} from the containers: rule `{rule}`",
                    _pve_fix(s))
        allow = s.host_command(f"iptables -I INPUT -i {s.bridge} -p udp -m multiport --dports 53,67 -j ACCEPT",
                               f"iptables -I INPUT -i {s.bridge} -p tcp --dport 53 -j ACCEPT")
        return ("firewall_drop", f"the host firewall drops {what} from the containers: rule `{rule}`",
                f"allow DHCP and DNS from the containers: `{allow}` (with ufw: "
                f"`{s.host_command(f'ufw allow in on {s.bridge} to any port 67,53 proto udp')}`)")
    if drop is not None:
        return _nft_blocker(s, drop, what, list(drops))
    others = [h for h in port_holders(host, s) if h.process != "dnsmasq"]
    if others:
        return "port_taken", f"another process holds the port: {others[0]}", "stop it, or make it bind elsewhere"
    if not leased:
        try:
            usage = pool_usage(s, Reservations(s, host).all(),
                               parse_leases(host.read_text(s.leases_file) or "")[0], client_mac=client_mac(s))
        except ProximityError:  # a damaged record: say what the probe saw
            usage = None
        if usage is not None and usage.free == 0:
            return ("pool_full", f"the probe's client (it has no reservation) got no address: "
                    f"{usage.full_message(s)}", usage.fix(s))
    logs = f"`journalctl -u {s.service_name} -n 50`" if host.has_systemd else f"`tail -n 50 {s.dns_log_file}`"
    return ("no_answer", f"dnsmasq (running) did not answer {what} from {s.gateway.ip}, and no firewall rule "
            f"counted a drop", f"read the dnsmasq log: {logs}")


def save(host: Host, settings: Settings, result: ProbeResult) -> None:
    host.write_text(settings.probe_file, json.dumps(result.as_dict()) + "\n")


def load(host: Host, settings: Settings) -> ProbeResult | None:
    try:
        return ProbeResult(**json.loads(host.read_text(settings.probe_file, errors="replace") or "null"))  # damaged: none
    except (TypeError, ValueError, RecursionError):
        return None
