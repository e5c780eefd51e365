"""Observe: read the whole live state of the host into one typed, immutable observation.

Everything the planner and ``health()`` decide on is here, read once: links and their ports,
addresses, routes, the firewall (Proximity's nftables table as data, its iptables rules parsed
into the same ``Rule`` the renderer makes, the filter chains' policies), the sysctls, the files
Proximity writes, the dnsmasq process and what it was started with, the
reservations, the leases and the containers' ports. Nothing here changes the host.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from proximity.errors import HostError
from proximity.host import Host
from proximity.network import render
from proximity.network.dnsmasq import DnsProcess, DnsService, PortHolder, port_holders
from proximity.network import nft
from proximity.network.firewall import Rule, filter_chains, parse_own_rules
from proximity.network.intent import Intent
from proximity.network.intent import read as read_intent
from proximity.network.leases import Lease, parse_leases
from proximity.network.probe import ProbeResult
from proximity.network.probe import load as load_probe
from proximity.network.probe import list_ruleset, probe_name, rules_digest
from proximity.network.reservations import Reservation, Reservations
from proximity.network.stanzas import SourcedFile, source_patterns, sourced_files
from proximity.settings import Settings

SYSCTLS = ("net.ipv4.ip_forward",)
# A container's port on a bridge: veth<vmid>i<n> (LXC and Proxmox), tap<vmid>i<n> (a VM), and
# fwpr<vmid>p<n> when the Proxmox firewall puts the veth on its own fwbr<vmid>i<n> bridge.
PORT_RE = re.compile(r"(?:(?:veth|tap)(?P<vmid>\d+)i|fwpr(?P<fwvmid>\d+)p)(?P<net>\d+)")


def vmid_of_port(name: str) -> int | None:
    match = PORT_RE.fullmatch(name)
    return int(match.group("vmid") or match.group("fwvmid")) if match else None


def container_port_names(vmid: int) -> tuple[str, ...]:
    """Where a container's net0 meets the bridge, in order of preference."""
    return (f"fwpr{vmid}p0", f"veth{vmid}i0")


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    up: bool
    kind: str | None
    master: str | None  # the bridge it is a port of


@dataclass(frozen=True)
class Attachment:
    """A managed container's port: it belongs on the bridge while it exists."""

    vmid: int
    hostname: str
    port: str
    master: str | None


@dataclass(frozen=True)
class Probes:
    """What only asking tells: does dnsmasq answer, and who holds ports 53 and 67 on the gateway."""

    dns_answering: bool
    port_holders: tuple[PortHolder, ...]


@dataclass(frozen=True)
class Firewall:
    """The host's packet filter as Proximity reads it (one ``iptables-save``, one ``nft -j list ruleset``)."""

    rules: tuple[Rule, ...]  # Proximity's live iptables rules, in order, duplicates kept
    chains: Mapping[str, str]  # iptables' filter chains: name -> policy ("-" for a user chain)
    table: str | None  # digest of Proximity's nft table as listed, normalised (None: no table)
    applied: Mapping[str, str] | None  # the digests stored when Proximity last applied the table
    error: str = ""  # why nft could not be read (not installed...)
    digest: str | None = None  # of every firewall rule of the host (read with probe=True)


@dataclass(frozen=True)
class Observation:
    links: tuple[Link, ...]
    addresses: tuple[tuple[str, ipaddress.IPv4Interface], ...]  # (link name, address)
    routes: tuple[tuple[str, ipaddress.IPv4Network, str | None], ...]  # (link name, destination, gateway)
    firewall: Firewall
    sysctls: Mapping[str, str | None]
    files: Mapping[Path, str | None]  # the files Proximity writes (None: absent)
    dns: DnsProcess | None
    reservations: tuple[Reservation, ...]
    attachments: tuple[Attachment, ...]
    pve_firewall: bool
    systemd: bool  # dnsmasq runs as a systemd unit (a real host), not as a supervised daemon
    pve_rules: tuple[Mapping[str, Any], ...] | None = None  # the node's host firewall rules (firewall on)
    pve_error: str | None = None  # why they could not be read (no token, API unreachable)
    leases: tuple[Lease, ...] = ()  # read with probe=True
    lease_warnings: tuple[str, ...] = ()
    probes: Probes | None = None  # read with probe=True
    last_probe: ProbeResult | None = None  # the last end-to-end probe (read with probe=True)
    sourced: tuple[SourcedFile, ...] = ()  # the files the interfaces file sources, as ifupdown2 reads them
    intent: Intent | None = None  # the admin's last `up` or `down` (network.intent)
    full_disks: tuple[tuple[str, int], ...] = ()  # (directory, bytes free): Proximity's state with no room left
    sources: tuple[tuple[str, str], ...] = ()  # the host's interfaces file's source lines, as this host sees them
    addresses6: tuple[tuple[str, ipaddress.IPv6Interface], ...] = ()  # (link name, global or ULA address)
    routes6: tuple[tuple[str, ipaddress.IPv6Network, str | None], ...] = ()

    @property
    def ipv6_default_route(self) -> bool:
        """The host routes IPv6 to the world: a zone's advertisements may offer a default route."""
        return any(dst.prefixlen == 0 for _, dst, _ in self.routes6)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.firewall.rules

    @property
    def rules_digest(self) -> str | None:
        """Of the host's firewall rules now (read with probe=True)."""
        return self.firewall.digest

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def default_route_link(self) -> str | None:
        return next((name for name, dst, _ in self.routes if dst.prefixlen == 0), None)

    def file(self, path: Path) -> str | None:
        return self.files.get(path)


@dataclass(frozen=True)
class Addressing:
    """The host's links, addresses and routes alone: what resolving the zones needs (an observation
    without the firewall, files and processes, for the container commands)."""

    links: tuple[Link, ...]
    addresses: tuple[tuple[str, ipaddress.IPv4Interface], ...]
    addresses6: tuple[tuple[str, ipaddress.IPv6Interface], ...]
    routes: tuple[tuple[str, ipaddress.IPv4Network, str | None], ...]
    routes6: tuple[tuple[str, ipaddress.IPv6Network, str | None], ...]

    default_route_link = Observation.default_route_link


def read_addressing(host: Host) -> Addressing:
    links, addresses, addresses6 = [], [], []
    for item in host.ip_json("-details", "address", "show"):
        links.append(Link(item["ifname"], item["ifindex"], "UP" in item.get("flags", []),
                          item.get("linkinfo", {}).get("info_kind"), item.get("master")))
        addresses += [(item["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
                      for a in item.get("addr_info", []) if a.get("family") == "inet"]
        addresses6 += [(item["ifname"], ipaddress.IPv6Interface(f"{a['local']}/{a['prefixlen']}"))
                       for a in item.get("addr_info", []) if a.get("family") == "inet6" and a.get("scope") == "global"]
    routes = tuple(
        (r.get("dev", "(no device)"),  # blackhole, unreachable and prohibit routes have none
         ipaddress.IPv4Network("0.0.0.0/0" if r["dst"] == "default" else r["dst"], strict=False), r.get("gateway"))
        for r in host.ip_json("-4", "route", "show", "table", "main"))
    routes6 = tuple(
        (r.get("dev", "(no device)"), ipaddress.IPv6Network("::/0" if r["dst"] == "default" else r["dst"], strict=False),
         r.get("gateway"))
        for r in host.ip_json("-6", "route", "show", "table", "main") if not r["dst"].startswith(("fe80", "ff")))
    return Addressing(tuple(links), tuple(addresses), tuple(addresses6), routes, routes6)


def watched_files(settings: Settings, systemd: bool) -> tuple[Path, ...]:
    s = settings
    zone_own = (s.dns_log_file, s.probe_file) if getattr(s, "is_default", True) is False else ()
    return (s.interfaces_file, s.pending_interfaces_file, s.dnsmasq_conf, s.ruleset_file, s.ruleset_state_file,
            s.dhcp_hosts_file, s.addn_hosts_file, s.reservations_db,
            s.reservations_db.with_name(s.reservations_db.name + ".bak"), s.leases_file, *zone_own,
            *render.dns_unit_files(s, systemd))


def _read(host: Host, settings: Settings, path: Path) -> str | None:
    """A watched file; dnsmasq's lease cache is read even with a bad byte (its bad lines are skipped)."""
    if path in (settings.leases_file, settings.reservations_db.with_name(settings.reservations_db.name + ".bak")):
        return host.read_text(path, errors="replace")
    return host.read_text(path)


# What one observation of the host holds for every zone (the rest is the zone's own).
HOST_FIELDS = ("links", "addresses", "routes", "firewall", "sysctls", "pve_firewall", "systemd", "pve_rules",
               "pve_error", "sourced", "intent", "full_disks", "sources", "addresses6", "routes6")


def observe(host: Host, settings: Settings, dns: DnsService, *, probe: bool = False,
            firewall: Firewall | None = None, probes: Probes | None = None,
            base: Observation | None = None) -> Observation:
    """Read the host. ``probe`` adds the leases and the probes that status needs (a DNS query, ``ss``);
    ``firewall`` and ``probes`` reuse earlier readings (the snapshot's quick refresh). ``base``, an
    observation of another zone of this host, gives the host's part: only the zone's own is read."""
    if base is not None:
        return _zone_observation(host, settings, dns, base, probe, probes)
    net = read_addressing(host)
    links, addresses, addresses6, routes, routes6 = net.links, net.addresses, net.addresses6, net.routes, net.routes6
    if firewall is None:
        firewall = read_firewall(host, settings, probe)
    reservations = tuple(Reservations(settings, host).all())
    dns_process = dns.process()
    files = {path: _read(host, settings, path) for path in watched_files(settings, host.has_systemd)}
    pve_on = pve_firewall_on(host, settings)
    pve_rules, pve_error = _pve_rules(settings) if pve_on else (None, None)
    obs = Observation(
        links=tuple(links), addresses=tuple(addresses), routes=routes, firewall=firewall,
        sysctls=MappingProxyType({key: host.read_sysctl(key) for key in SYSCTLS}),
        files=MappingProxyType(files),
        dns=dns_process, reservations=reservations, attachments=_attachments(reservations, links),
        pve_firewall=pve_on, systemd=host.has_systemd, pve_rules=pve_rules, pve_error=pve_error,
        sourced=read_sourced(host, settings.interfaces_file, files.get(settings.interfaces_file)),
        intent=read_intent(host, settings),
        full_disks=full_disks(host, settings),
        sources=source_patterns(settings.interfaces_file, files.get(settings.interfaces_file), host.as_seen),
        addresses6=tuple(addresses6), routes6=routes6,
    )
    return _with_probes(host, settings, obs, probes) if probe else obs


def _zone_observation(host: Host, settings: Settings, dns: DnsService, base: Observation, probe: bool,
                      probes: Probes | None) -> Observation:
    """The zone's files, dnsmasq, reservations and ports, with the host's part of ``base``."""
    reservations = tuple(Reservations(settings, host).all())
    obs = Observation(**{name: getattr(base, name) for name in HOST_FIELDS},
                      files=MappingProxyType({p: _read(host, settings, p) for p in watched_files(settings, host.has_systemd)}),
                      dns=dns.process(), reservations=reservations,
                      attachments=_attachments(reservations, base.links))
    return _with_probes(host, settings, obs, probes) if probe else obs


def _attachments(reservations: tuple[Reservation, ...], links) -> tuple[Attachment, ...]:
    """The managed containers' ports that exist now, wherever they are attached."""
    by_name = {link.name: link for link in links}
    found = []
    for r in reservations:
        port = next((by_name[n] for n in container_port_names(r.vmid) if n in by_name), None) if r.vmid else None
        if port is not None:
            found.append(Attachment(r.vmid, r.hostname, port.name, port.master))
    return tuple(found)


def _with_probes(host: Host, settings: Settings, obs: Observation, probes: Probes | None) -> Observation:
    dns_process, addresses = obs.dns, obs.addresses
    leases, warnings = parse_leases(obs.file(settings.leases_file) or "", str(settings.leases_file))
    if probes is None:
        link = obs.link(settings.bridge)
        answering = (dns_process is not None and link is not None and (settings.bridge, settings.gateway) in addresses
                     and host.resolve(probe_name(settings), str(settings.gateway.ip)) is not None)
        probes = Probes(answering, tuple(port_holders(host, settings)) if link is not None else ())
    return Observation(**{**obs.__dict__, "leases": tuple(leases), "lease_warnings": tuple(warnings),
                          "probes": probes, "last_probe": load_probe(host, settings)})


def read_firewall(host: Host, settings: Settings, digest: bool = False) -> Firewall:
    """iptables' side (Proximity's rules, the filter chains) and nftables' (Proximity's table, normalised)."""
    saved = host.query(["iptables-save"]).stdout
    listing, error = list_ruleset(host)
    objects = nft.own_objects(listing)
    table = nft.digest(json.dumps(objects, sort_keys=True)) if objects else None
    try:
        applied = json.loads(host.read_text(settings.ruleset_state_file, errors="replace") or "null")
    except ValueError:  # damaged: as if never applied, so the next `up` applies it again
        applied = None
    return Firewall(parse_own_rules(saved, settings), MappingProxyType(filter_chains(saved)), table,
                    MappingProxyType(applied) if isinstance(applied, dict) else None, error,
                    rules_digest(saved, listing) if digest else None)


def read_sourced(host: Host, path: Path, text: str | None) -> tuple[SourcedFile, ...]:
    """The files ifupdown2 reads because ``path`` sources them (an unreadable one has no text)."""
    def read(file: Path) -> str | None:
        try:
            return host.read_text(file)
        except HostError:  # a directory, not UTF-8, no permission: ifupdown2 skips it with a warning
            return None

    return tuple(sourced_files(path, text, read, host.glob)) if text else ()


def full_disks(host: Host, settings: Settings) -> tuple[tuple[str, int], ...]:
    """The directories of Proximity's state and dnsmasq's leases whose file system has no room to spare."""
    found = []
    for directory in dict.fromkeys((settings.leases_file.parent, settings.state_dir, settings.run_dir)):
        free = host.free_space(directory)
        if free is not None and free < host.write_spare:
            found.append((str(directory), free))
    return tuple(found)


def _pve_rules(settings: Settings) -> tuple[tuple[Mapping[str, Any], ...] | None, str | None]:
    if not (settings.proxmox_token_id and settings.proxmox_token_secret):
        return None, "no Proxmox API token is set (proxmox_token_id, proxmox_token_secret)"
    from proximity.errors import ProxmoxError
    from proximity.network.pvefirewall import PveFirewallApi

    try:
        return tuple(MappingProxyType(rule) for rule in PveFirewallApi(settings).rules()), None
    except ProxmoxError as exc:
        return None, str(exc)


def pve_firewall_on(host: Host, settings: Settings) -> bool:
    """The Proxmox firewall: as set, or (auto) whether the datacenter firewall is enabled."""
    mode = settings.proxmox_firewall
    if mode != "auto":
        return mode == "on"
    text = host.read_text(settings.pve_cluster_firewall)
    return any(line.replace(" ", "").lower() == "enable:1" for line in (text or "").splitlines())
