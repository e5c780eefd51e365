"""Health: a pure function of the settings and one observation.

``proximity status``, the service's status snapshot, ``doctor`` and the metrics all read
their verdict here, so they always agree. The verdict comes with structured checks (a stable
``id``, ``ok``, ``severity``, what was ``observed``, the whole ``fix`` for this host); the
``reasons`` are the failing checks in words.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from proximity.network import nft, render, safety
from proximity.network.dnsmasq import content_hash
from proximity.network.intent import Intent
from proximity.network.intent import reason as intent_reason
from proximity.network.nft_changes import spec_of, table_state, wanted_rules
from proximity.network.observe import Observation
from proximity.network.pool import pool_usage
from proximity.network.probe import client_mac as probe_mac
from proximity.network.probe import is_stale
from proximity.settings import Settings
from proximity.spec.view import default_view

# A failing check of these means containers are cut off: unhealthy. Any other failing check: degraded.
FATAL = frozenset({"bridge_not_ours", "bridge", "gateway_address", "dnsmasq_running", "dnsmasq_bridge", "container_ports"})


@dataclass(frozen=True)
class Check:
    """One finding, as status, doctor, the API and the dashboard show it."""

    id: str  # stable snake_case: scripts and the dashboard key on it, never on the words
    name: str  # for people
    ok: bool
    observed: str  # what was seen, in plain words
    fix: str = ""  # the whole fix, for this host (a sandbox by name); empty when ok
    severity: str = "error"  # "error": something is broken; "warning": it does not break the network by itself
    zone: str = "prox-net"  # the zone it is about (the host's own checks say the default zone)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def reason(self) -> str:
        return f"{self.observed}; fix: {self.fix}" if self.fix else self.observed


@dataclass(frozen=True)
class NetworkStatus:
    bridge_name: str
    bridge_ip: str
    subnet: str
    dhcp_range: str
    dns_domain: str
    bridge_up: bool
    nat_configured: bool
    dhcp_service_running: bool
    health_status: str  # healthy, degraded or unhealthy
    reasons: list[str]
    uplink: str | None
    bridge_exists: bool
    gateway_assigned: bool
    isolation_configured: bool
    ip_forward: bool
    dns_answering: bool
    dhcp_served: bool
    dns_pid: int | None
    dns_config_current: bool  # dnsmasq runs with the config and bridge of now
    pool_size: int
    leases_in_use: int
    container_ports: int  # managed containers' ports that exist
    detached_ports: list[str]  # ... and are not on the bridge
    intent: str = "up"  # the admin's last word: up or down (a damaged record reads as down)
    intent_source: str = "record"  # record, legacy (no record: read from the stanza) or damaged
    checks: list[Check] = field(default_factory=list)  # every check, passing ones too

    def as_dict(self) -> dict:
        return asdict(self)


def health(settings: Settings, obs: Observation, firewall: nft.FirewallSpec | None = None,
           pending: list[str] | None = None) -> NetworkStatus:
    """The verdict, its checks and reasons; probes that were not taken (``obs.probes`` None) count as passed.
    ``firewall``: the host's whole table (every zone); None: the default zone's alone. ``pending``: what the
    plan would change in this zone now (None: not planned); healthy needs it empty, and the probes passing.

    While the admin's intent is down, the verdict is ``down`` (a damaged record: ``unhealthy``, named)."""
    intent = obs.intent
    s = intent.settings(settings) if intent is not None else settings  # the uplink `up` was given
    up = f"run `{s.command('up')}`"
    logs = (f"read the dnsmasq log: `journalctl -u {s.service_name} -n 50`" if obs.systemd
            else f"read the dnsmasq log: `tail -n 50 {s.dns_log_file}`")
    uplink = s.uplink or obs.default_route_link()
    link = obs.link(s.bridge)
    gateway_assigned = (s.bridge, s.gateway) in obs.addresses
    spec = (firewall or spec_of([default_view(s)], uplink, obs)) if uplink else None
    table = table_state(s, obs, nft.render_table(spec)) if spec else "missing"
    accepts = [rule for rule in wanted_rules(s, spec, obs) if rule not in obs.rules] if spec else []
    nat = table == "current"
    isolation = nat and not accepts
    forward = obs.sysctls.get("net.ipv4.ip_forward") == "1"
    dns = obs.dns
    current = dns is not None and dns.config == content_hash(
        render.dnsmasq_conf(s, ipv6_default_route=obs.ipv6_default_route)) and (
        link is not None and dns.bridge_index == link.index)
    answering = dns is not None and (obs.probes.dns_answering if obs.probes else True)
    served = dns is not None and (
        any(h.pid == dns.pid and h.local.endswith(":67") for h in obs.probes.port_holders) if obs.probes else True)
    detached = [a.port for a in obs.attachments if a.master != s.bridge]

    checks: list[Check] = []

    def check(id: str, name: str, ok: bool, good: str, bad: str, fix: str = up, severity: str = "error") -> None:
        checks.append(Check(id, name, ok, good if ok else bad, "" if ok else fix, severity))

    for refusal in safety.refusals(s, obs):  # the fix is in the words: which file and line, which port
        checks.append(Check("bridge_not_ours", "bridge is Proximity's alone", False, refusal, up))
    check("bridge", "bridge", bool(link and link.up), f"{s.bridge} exists and is up",
          f"bridge {s.bridge} does not exist" if link is None else f"bridge {s.bridge} exists but is down")
    if link is not None:
        check("gateway_address", "gateway address", gateway_assigned, f"{s.gateway} is assigned to {s.bridge}",
              f"{s.gateway} is not assigned to {s.bridge}")
    check("dnsmasq_running", "dnsmasq running", dns is not None, f"dnsmasq runs (pid {dns.pid})" if dns else "",
          "dnsmasq is not running")
    if dns is not None and link is not None and dns.bridge_index not in (None, link.index):
        check("dnsmasq_bridge", "dnsmasq config current", False, "",
              f"dnsmasq (pid {dns.pid}) is bound to a {s.bridge} that was deleted since")
    elif dns is not None:
        check("dnsmasq_config_current", "dnsmasq config current", current,
              "dnsmasq runs with the config on disk and the bridge of now",
              "dnsmasq runs with an old config (it changed since dnsmasq started)")
    check("container_ports", "container ports", not detached,
          f"{len(obs.attachments)} managed container port(s), all on {s.bridge}",
          f"{len(detached)} container port(s) are not on {s.bridge} ({', '.join(detached)}), "
          f"so those containers are cut off")
    check("uplink", "uplink", bool(uplink), f"uplink {uplink}",
          "no uplink: there is no default route and no uplink setting",
          f"give the host a default route, or set `uplink` in the settings; then {up}")
    if uplink:
        name = f"nftables table {nft.FAMILY} {nft.TABLE}"
        bad = (f"the {name} is missing" + (f" ({obs.firewall.error})" if obs.firewall.error else "")
               if table == "missing" else
               f"the {name} differs from the one Proximity applied (a rule changed or deleted by hand?)")
        check("nat_rule", "NAT rule", nat, f"the {name} masquerades {s.subnet} out of {uplink}",
              f"NAT of {s.subnet} out of {uplink} is not in place as Proximity applied it: {bad}")
        check("isolation_rules", "isolation rules", isolation,
              f"the {name} is in place; new connections from outside into {s.bridge} are dropped",
              f"the isolation of {s.bridge} is not in place as Proximity applied it: {bad}" if not nat else
              "the iptables FORWARD policy drops, and Proximity's accepts are missing "
              f"({'; '.join(r.saved() for r in accepts)})")
    check("ip_forward", "ip_forward", forward, "net.ipv4.ip_forward is 1",
          "net.ipv4.ip_forward is 0, so the host does not route the containers' traffic")
    if dns is not None:
        check("dns_answering", "DNS answering", answering, f"dnsmasq answers DNS on {s.gateway.ip}:53",
              f"dnsmasq does not answer DNS on {s.gateway.ip}:53", logs)
        check("dhcp_served", "DHCP served", served, f"dnsmasq serves DHCP on {s.bridge} (udp port 67)",
              f"dnsmasq does not serve DHCP on {s.bridge} (nothing of it holds udp port 67)", logs)
    usage = None
    if obs.probes is not None:
        usage = pool_usage(s, obs.reservations, obs.leases, client_mac=probe_mac(s))
        check("dhcp_pool", "DHCP pool", usage.free > 0, usage.describe(s), usage.full_message(s), usage.fix(s),
              "warning")
    for directory, free in obs.full_disks:
        check("disk_space", "disk space", False, "", f"the file system of {directory} is full ({free // 1024} KiB "
              "free): dnsmasq cannot record its leases and Proximity refuses to write there",
              f"free some space (`df -h {directory}`), then {up}", "warning")
    if not obs.full_disks:
        check("disk_space", "disk space", True, "Proximity's state directories have room to spare", "")
    checks += _probe_checks(s, obs, usage)
    if pending is not None:  # the planner's word: the checks above say why, this one that nothing is left
        check("converged", "converged", not pending, "`up` would change nothing",
              f"`up` would change {len(pending)} thing(s): {'; '.join(pending[:4])}"
              + ("; ..." if len(pending) > 4 else ""))

    failing = [c for c in checks if not c.ok]
    verdict = "healthy"
    if failing:
        verdict = "unhealthy" if any(c.id in FATAL for c in failing) else "degraded"
    if intent is not None and not intent.up:
        refused = [c for c in checks if c.id == "bridge_not_ours"]  # the admin's bridge by that name: never "fine"
        verdict, checks = _down(s, intent, link is not None, dns is not None,
                                bool(obs.rules) or obs.firewall.table is not None)
        if refused:
            verdict, checks = "unhealthy", [*refused, *checks]
    return NetworkStatus(
        bridge_name=s.bridge, bridge_ip=str(s.gateway.ip), subnet=str(s.subnet),
        dhcp_range=f"{s.dhcp_start}-{s.dhcp_end}", dns_domain=s.domain, bridge_up=bool(link and link.up),
        nat_configured=nat, dhcp_service_running=dns is not None, health_status=verdict,
        reasons=[c.reason for c in checks if not c.ok or c.id == "intent"], uplink=uplink, bridge_exists=link is not None,
        gateway_assigned=gateway_assigned, isolation_configured=isolation, ip_forward=forward,
        dns_answering=answering, dhcp_served=served, dns_pid=dns.pid if dns else None, dns_config_current=current,
        pool_size=s.pool_size, leases_in_use=sum(1 for lease in obs.leases if ":" not in lease.ip),
        container_ports=len(obs.attachments), detached_ports=detached, checks=checks,
        intent=intent.state if intent else "up", intent_source=intent.source if intent else "record",
    )


def _down(s: Settings, intent: Intent, bridge: bool, dns: bool, rules: bool) -> tuple[str, list[Check]]:
    """The verdict while the intent is down: ``down``, or ``unhealthy`` for a damaged record."""
    damaged = intent.source == "damaged"
    checks = [Check("intent", "the admin's intent", not damaged, intent_reason(intent) or "",
                    f"run `{s.command('up')}` or `{s.command('down')}`: either writes a new record" if damaged else "")]
    left = [what for what, there in ((f"bridge {s.bridge}", bridge), ("dnsmasq", dns), ("Proximity's rules", rules))
            if there]
    if left:
        checks.append(Check("left_behind", "left behind by down", False, f"{', '.join(left)} still there",
                            f"`{s.command('down')}` removes them, `{s.command('up')}` brings the network up",
                            "warning"))
    return ("unhealthy" if damaged else "down"), checks


def _probe_checks(s: Settings, obs: Observation, usage) -> list[Check]:
    """The last end-to-end probe: trusted only under the firewall rules it was taken under."""
    last = obs.last_probe
    name = "end-to-end probe"
    if last is None:
        return [Check("end_to_end_probe", name, True, "no end-to-end probe has run yet")]
    when = time.strftime("%H:%M:%S", time.localtime(last.time))
    again = (f"run `{s.command('status')}` or `{s.command('doctor')}` (each probes again); "
             f"the service probes again by itself")
    if is_stale(last, obs.rules_digest):
        seen = "passed" if last.ok else f"failed ({last.reason})"
        return [Check("end_to_end_probe", name, False,
                      f"unverified: the host's firewall rules changed since the last end-to-end probe {seen} at "
                      f"{when}, so it says nothing about them", again, "warning")]
    if last.ok:
        return [Check("end_to_end_probe", name, True,
                      f"a client got {last.lease} and a DNS answer from {s.gateway.ip} (at {when})")]
    if last.cause == "pool_full" and usage is not None and usage.free == 0:
        return [Check("end_to_end_probe", name, False,
                      "unverified: the probe's client has no reservation and the DHCP pool is full, so it got no "
                      "address (reserved containers are not affected)", usage.fix(s), "warning")]
    return [Check("end_to_end_probe", name, False,
                  f"containers cannot get a lease or a name: {last.reason} (the end-to-end probe at {when})",
                  last.fix or again)]


def unknown_status(settings: Settings, reason: str) -> NetworkStatus:
    """An ``unhealthy`` status for when the host could not be read at all."""
    s = settings
    return NetworkStatus(
        bridge_name=s.bridge, bridge_ip=str(s.gateway.ip), subnet=str(s.subnet),
        dhcp_range=f"{s.dhcp_start}-{s.dhcp_end}", dns_domain=s.domain, bridge_up=False, nat_configured=False,
        dhcp_service_running=False, health_status="unhealthy", reasons=[reason], uplink=s.uplink,
        bridge_exists=False, gateway_assigned=False, isolation_configured=False, ip_forward=False,
        dns_answering=False, dhcp_served=False, dns_pid=None, dns_config_current=False, pool_size=s.pool_size,
        leases_in_use=0, container_ports=0, detached_ports=[],
        checks=[Check("status_unknown", "status", False, reason, "see the service's log")],
    )
