"""Proximity's packet filter as one nftables table, ``table inet proximity``: pure rendering.

The input is small and Proximity's own (:class:`FirewallSpec`, a list of :class:`FirewallZone`),
so the table does not depend on how zones are declared; :func:`from_settings` builds it from
today's settings (one zone). A packet's cost does not grow with the number of zones: the base
chains dispatch with one lookup in a verdict map (bridge -> the zone's chain) and test named sets
(``bridges``, ``peers``, the gateways and the masqueraded subnets per family), as Incus' ``inet incus`` table and
kube-proxy's nftables mode do. Zone chains are named ``zone.<name>.<kind>`` (Incus: ``<kind>.<net>``).

What the table does, for IPv4 and IPv6 alike:

forward
    Established and related traffic is accepted. A zone reaches the uplink (and anything that is
    not a zone). New connections into a zone from outside it (the LAN, the uplink, another zone)
    are dropped; zone to zone is dropped both ways unless the pair is in ``peers``. Traffic inside
    a bridge is accepted (it reaches these hooks when br_netfilter is on, as pve-firewall forces).
input (what a zone may ask of the host)
    From a zone's bridge the host answers DHCP (udp 67), DHCPv6 (udp 547), DNS (udp and tcp 53,
    on the zone's own gateway address only) and ICMP/ICMPv6 (echo, neighbour discovery, router
    solicitation). Another zone's gateway address is dropped outright, services or not. Everything
    else the host runs (ssh 22, pveproxy 8006, spiceproxy 3128, VNC 5900-5999, Proximity's API...)
    is dropped from a zone unless its ``host_services`` is true: a container is not an admin.
nat
    Traffic from a "masquerade" zone's subnets out of the uplink is masqueraded (IPv4 and IPv6);
    "routed" zones keep their addresses.
raw (with the Proxmox firewall)
    ``iifname "fwbr*" ct zone set 1``: Proxmox's documented conntrack-zone rule for masquerading
    behind its firewall bridges (``iptables -t raw -I PREROUTING -i fwbr+ -j CT --zone 1``).

An accept here ends only this table's chain: another table's drop (Docker's iptables FORWARD
policy, pve-firewall) still drops; see ``firewall.docker_rules`` for what Proximity does about it.

The file is one transaction: ``add table``, ``delete table``, then the whole table, so ``nft -f``
replaces it atomically (a kill -9 leaves the old table or the new one, never a mix).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from proximity.settings import Settings
from proximity.spec.view import ZoneSettings, default_view

TABLE = "proximity"
FAMILY = "inet"
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,30}")
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class FirewallZone:
    """One zone as the firewall sees it: a bridge, its gateway addresses (each with its subnet)."""

    name: str
    bridge: str
    addresses: tuple[Address, ...]  # the gateway's addresses on the bridge, with their prefix
    nat: Literal["masquerade", "routed"] = "masquerade"
    host_services: bool = False  # the host's own services (ssh, pveproxy...) reachable from the zone
    routed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # subnets routed, never masqueraded

    def __post_init__(self) -> None:
        if not ZONE_NAME.fullmatch(self.name):
            raise ValueError(f"zone name {self.name!r}: use 1 to 31 letters, digits, '-' or '_', starting with a "
                             "letter (it names nftables chains)")
        if self.nat not in ("masquerade", "routed"):
            raise ValueError(f"zone {self.name}: nat must be 'masquerade' or 'routed', not {self.nat!r}")

    @property
    def subnets(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(address.network for address in self.addresses)

    def gateways(self, version: int) -> list[str]:
        return [str(a.ip) for a in self.addresses if a.version == version]

    def chain(self, kind: str) -> str:
        return f"zone.{self.name}.{kind}"


@dataclass(frozen=True)
class FirewallSpec:
    """Everything the table is rendered from."""

    zones: tuple[FirewallZone, ...]
    uplink: str
    peers: frozenset[frozenset[str]] = field(default_factory=frozenset)  # pairs of zone names, either way
    pve_firewall: bool = False

    def __post_init__(self) -> None:
        names = [zone.name for zone in self.zones]
        if len(set(names)) != len(names) or len({zone.bridge for zone in self.zones}) != len(names):
            raise ValueError(f"zones {names}: each zone needs a name and a bridge of its own")
        for pair in self.peers:
            unknown = set(pair) - set(names)
            if len(pair) != 2 or unknown:
                raise ValueError(f"peers {sorted(pair)}: a pair of two zones of {names}")


def from_views(views: Iterable[ZoneSettings], uplink: str, pve_firewall: bool,
               peers: Iterable[Iterable[str]] = ()) -> FirewallSpec:
    """The zones (as :mod:`proximity.spec.view` sees them) as a spec; ``peers``: pairs of zone names.

    The default zone keeps reaching the host's own services, as it always could: moving its rules to
    this table is the one change an existing host sees. New zones are closed to them by default."""
    zones = []
    for v in views:
        addresses = (v.gateway, v.ipv6_gateway) if v.ipv6_gateway else (v.gateway,)
        routed = (v.ipv6_gateway.network,) if v.ipv6_gateway and not v.ipv6_nat else ()
        zones.append(FirewallZone(v.zone, v.bridge, addresses, "masquerade" if v.nat else "routed",
                                  v.host_services, routed))
    return FirewallSpec(tuple(zones), uplink, frozenset(frozenset(pair) for pair in peers), pve_firewall)


def from_settings(settings: Settings, uplink: str, pve_firewall: bool) -> FirewallSpec:
    """The default zone alone, from the settings."""
    return from_views((default_view(settings),), uplink, pve_firewall)


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _set(name: str, kind: str, elements: Iterable[str], interval: bool = False) -> str:
    items = ", ".join(elements)
    flags = " flags interval;" if interval else ""
    return f"\tset {name} {{ type {kind};{flags}" + (f" elements = {{ {items} }}" if items else "") + " }"


def _zone_chains(zone: FirewallZone) -> list[str]:
    br, gw4, gw6 = _q(zone.bridge), zone.gateways(4), zone.gateways(6)
    others4 = f"ip daddr != {{ {', '.join(gw4)} }} " if gw4 else ""
    others6 = f"ip6 daddr != {{ {', '.join(gw6)} }} " if gw6 else ""
    dns = []
    if gw4:
        dns.append(f"\t\tip daddr {{ {', '.join(gw4)} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    if gw6:
        own6 = ", ".join([*gw6, "fe80::/10"])  # its link-local address too
        dns.append(f"\t\tip6 daddr {{ {own6} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    return [
        f"\tchain {zone.chain('fwd')} {{",
        f"\t\toifname {br} accept",  # inside the bridge (br_netfilter on)
        "\t\tiifname . oifname @peers accept",
        "\t\toifname @bridges drop",  # another zone, not peered
        "\t\taccept",  # out: the uplink
        "\t}",
        f"\tchain {zone.chain('in')} {{",
        "\t\tct state established,related accept",
        f"\t\t{others4}ip daddr @gateways4 drop",  # another zone's gateway
        f"\t\t{others6}ip6 daddr @gateways6 drop",
        "\t\tudp dport { 67, 547 } accept",  # DHCP, DHCPv6 (broadcast and multicast)
        *dns,
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",  # echo, ND, RS
        "\t\taccept" if zone.host_services else "\t\tdrop",
        "\t}",
    ]


def render_table(spec: FirewallSpec) -> str:
    """The whole table as one transaction: ``add table``, ``delete table``, then the table."""
    zones = spec.zones
    by_name = {zone.name: zone for zone in zones}
    peers = sorted(f"{_q(by_name[a].bridge)} . {_q(by_name[b].bridge)}"
                   for pair in spec.peers for a in pair for b in pair if a != b)

    def masqueraded(version: int) -> list[str]:
        return [str(net) for zone in zones if zone.nat == "masquerade"
                for net in zone.subnets if net.version == version and net not in zone.routed]

    lines = [
        "# Managed by Proximity: 'proximity up' rewrites this file; nft -f loads it as one transaction.",
        f"add table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        _set("bridges", "ifname", (_q(zone.bridge) for zone in zones)),
        _set("peers", "ifname . ifname", peers),
        _set("gateways4", "ipv4_addr", (gw for zone in zones for gw in zone.gateways(4))),
        _set("gateways6", "ipv6_addr", (gw for zone in zones for gw in zone.gateways(6))),
        _set("masquerade4", "ipv4_addr", masqueraded(4), interval=True),
        _set("masquerade6", "ipv6_addr", masqueraded(6), interval=True),
    ]
    for kind in ("fwd", "in"):
        elements = ", ".join(f"{_q(zone.bridge)} : jump {zone.chain(kind)}" for zone in zones)
        items = f" elements = {{ {elements} }}" if elements else ""
        lines.append(f"\tmap zone_{kind} {{ type ifname : verdict;{items} }}")
    for zone in zones:
        lines += _zone_chains(zone)
    uplink = _q(spec.uplink)
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct state established,related accept",
        "\t\tiifname vmap @zone_fwd",
        "\t\toifname @bridges drop",  # new connections into a zone from outside
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        "\t\tiifname vmap @zone_in",
        # From outside every zone (the LAN routing to a zone's subnet): no zone's gateway, so no dnsmasq.
        '\t\tiifname != "lo" ip daddr @gateways4 drop',
        '\t\tiifname != "lo" ip6 daddr @gateways6 drop',
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\toifname {uplink} ip saddr @masquerade4 masquerade",
        f"\t\toifname {uplink} ip6 saddr @masquerade6 masquerade",
        "\t}",
    ]
    if spec.pve_firewall:
        lines += [
            "\tchain prerouting {",
            "\t\ttype filter hook prerouting priority raw; policy accept;",
            '\t\tiifname "fwbr*" ct zone set 1',
            "\t}",
        ]
    return "\n".join([*lines, "}", ""])


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# What changes in a listing without the table changing: handles, counters, the listing's own header.
VOLATILE_KEYS = frozenset({"handle", "packets", "bytes", "expires", "metainfo"})


def normalise(value):
    """A JSON listing without handles, counters and metainfo (nft renumbers handles on every load)."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [normalise(v) for v in value if not (isinstance(v, dict) and "metainfo" in v)]
    return value


def own_objects(listing: dict) -> list:
    """Proximity's table in a ``nft -j list ruleset`` listing, normalised (empty: no table)."""
    found = []
    for item in listing.get("nftables", []):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        kind, body = next(iter(item.items()))
        if isinstance(body, dict) and body.get("family") == FAMILY \
                and body.get("name" if kind == "table" else "table") == TABLE:
            found.append(normalise(item))
    return found
