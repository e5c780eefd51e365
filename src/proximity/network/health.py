"""Health: a pure function of the settings and one observation.

``proximity status``, the service's status snapshot, ``doctor`` and the metrics all read
their verdict here, so they always agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from proximity.network import render
from proximity.network.dnsmasq import content_hash
from proximity.network.firewall import firewall_rules
from proximity.network.observe import Observation
from proximity.settings import Settings


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

    def as_dict(self) -> dict:
        return asdict(self)


def health(settings: Settings, obs: Observation) -> NetworkStatus:
    """The verdict and its reasons; probes that were not taken (``obs.probes`` None) count as passed."""
    s = settings
    uplink = s.uplink or obs.default_route_link()
    link = obs.link(s.bridge)
    gateway_assigned = (s.bridge, s.gateway) in obs.addresses
    wanted = firewall_rules(s, uplink, obs.pve_firewall) if uplink else []
    present = {rule: rule in obs.rules for rule in wanted}
    nat = bool(wanted) and present[wanted[0]]
    isolation = bool(wanted) and all(present.values())
    forward = obs.sysctls.get("net.ipv4.ip_forward") == "1"
    dns = obs.dns
    current = dns is not None and dns.config == content_hash(render.dnsmasq_conf(s)) and (
        link is not None and dns.bridge_index == link.index)
    answering = dns is not None and (obs.probes.dns_answering if obs.probes else True)
    served = dns is not None and (
        any(h.pid == dns.pid and h.local.endswith(":67") for h in obs.probes.port_holders) if obs.probes else True)
    detached = [a.port for a in obs.attachments if a.master != s.bridge]

    problems: list[tuple[bool, str]] = []  # (fatal, reason)
    if link is None:
        problems.append((True, f"bridge {s.bridge} does not exist: run `proximity up`"))
    elif not link.up:
        problems.append((True, f"bridge {s.bridge} is down: run `ifup {s.bridge}` or `proximity up`"))
    if link is not None and not gateway_assigned:
        problems.append((True, f"{s.gateway} is not assigned to {s.bridge}: run `proximity up`"))
    if dns is None:
        problems.append((True, "dnsmasq is not running: run `proximity up`"))
    elif link is not None and dns.bridge_index not in (None, link.index):
        problems.append((True, f"dnsmasq is bound to a {s.bridge} that was deleted since: run `proximity up`"))
    elif not current:
        problems.append((False, "dnsmasq runs with an old config (it changed since dnsmasq started): "
                                "run `proximity up`"))
    if detached:
        problems.append((True, f"{len(detached)} container port(s) are not on {s.bridge} "
                               f"({', '.join(detached)}), so those containers are cut off: run `proximity up`"))
    if not uplink:
        problems.append((False, "no uplink: there is no default route and no uplink setting"))
    elif not nat:
        problems.append((False, f"NAT rule for {s.subnet} out of {uplink} is missing: run `proximity up`"))
    elif not isolation:
        missing = [r.saved() for r, ok in present.items() if not ok]
        problems.append((False, f"firewall rules missing ({'; '.join(missing)}): run `proximity up`"))
    if not forward:
        problems.append((False, "net.ipv4.ip_forward is 0: run `sysctl -w net.ipv4.ip_forward=1`"))
    if dns is not None and not answering:
        problems.append((False, f"dnsmasq does not answer DNS on {s.gateway.ip}:53"))
    if dns is not None and not served:
        problems.append((False, f"dnsmasq does not serve DHCP on {s.bridge} (udp port 67)"))
    for directory, free in obs.full_disks:
        problems.append((False, f"the file system of {directory} is full ({free // 1024} KiB free): dnsmasq cannot "
                                "record its leases and Proximity refuses to write there; free some space (`df -h "
                                f"{directory}`)"))
    if obs.last_probe is not None and not obs.last_probe.ok:
        problems.append((False, f"containers cannot get a lease or a name: {obs.last_probe.reason}; fix: "
                                f"{obs.last_probe.fix} (the end-to-end probe; `proximity doctor` runs it again)"))
    verdict = "healthy"
    if problems:
        verdict = "unhealthy" if any(fatal for fatal, _ in problems) else "degraded"
    return NetworkStatus(
        bridge_name=s.bridge, bridge_ip=str(s.gateway.ip), subnet=str(s.subnet),
        dhcp_range=f"{s.dhcp_start}-{s.dhcp_end}", dns_domain=s.domain, bridge_up=bool(link and link.up),
        nat_configured=nat, dhcp_service_running=dns is not None, health_status=verdict,
        reasons=[reason for _, reason in problems], uplink=uplink, bridge_exists=link is not None,
        gateway_assigned=gateway_assigned, isolation_configured=isolation, ip_forward=forward,
        dns_answering=answering, dhcp_served=served, dns_pid=dns.pid if dns else None, dns_config_current=current,
        pool_size=s.pool_size, leases_in_use=sum(1 for lease in obs.leases if ":" not in lease.ip),
        container_ports=len(obs.attachments), detached_ports=detached,
    )


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
    )
