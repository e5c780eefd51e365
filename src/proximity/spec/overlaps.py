"""Overlaps: zones against each other, and against what the host already has (pure).

A zone's networks (its IPv4 subnet and its IPv6 /64) must be disjoint from every other zone's,
and from every address and route of the host, the uplink's subnet included. Its bridge and its
domain must be its own; a domain may not sit under another zone's either, because that zone's
dnsmasq answers every name under its domain itself (``local=/DOMAIN/``) and a container there
could even be called like the other zone's domain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proximity.spec.naming import DEFAULT_ZONE

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_NEVER_ZONES = (ipaddress.IPv6Network("fe80::/10"), ipaddress.IPv6Network("ff00::/8"))  # link-local, multicast


class OverlapError(ValueError):
    """Two things claim the same addresses, names or bridge; the message names both and the fix."""


@dataclass(frozen=True)
class Claim:
    """Addresses the host holds already: one address's subnet or one route."""

    network: IPNetwork
    what: str  # "address 198.51.100.2/24 on vmbr0 (the uplink)", "route 10.20.0.0/16 via 198.51.100.1 on vmbr0"
    link: str | None = None


@dataclass(frozen=True)
class Footprint:
    """What a zone claims on the host, whether declared or resolved: enough to check overlaps."""

    zone: str
    bridge: str
    domain: str
    networks: tuple[tuple[IPNetwork, str], ...]  # (network, what it is: "subnet", "IPv6 subnet")

    def fix(self, what: str) -> str:
        if self.zone == DEFAULT_ZONE:
            setting = {"subnet": "the gateway setting (and dhcp_start/dhcp_end)", "IPv6 subnet": "the ipv6 setting",
                       "domain": "the domain setting", "bridge": "the bridge setting"}[what]
            return f"change {setting} of the default zone"
        if what == "bridge":
            return f"rename zone {self.zone} (its bridge comes from its name)"
        key = {"subnet": "subnet", "IPv6 subnet": "ipv6", "domain": "domain"}[what]
        return (f"pick another {key} for zone {self.zone} (zones.{self.zone}.{key} in proximity.toml, or "
                f"`proximity zone create|set {self.zone} --{key} ...` for a zone Proximity keeps in zones.toml)")


def host_claims(addresses: Iterable[tuple[str, IPInterface]],
                routes: Iterable[tuple[str, IPNetwork, str | None]] = (),
                uplink: str | None = None,
                declared: Iterable[tuple[str, str, str]] = ()) -> tuple[Claim, ...]:
    """Claims from an observation's ``addresses`` ``(link, address)`` and ``routes`` ``(link, dst, via)``,
    and from addresses declared but maybe not up: ``declared`` ``(link, cidr, file)``, as
    ``interfaces.declared_addresses`` finds them in the interfaces file and the files it sources.

    Default routes claim nothing (every subnet is "in" them); neither do link-local and multicast
    IPv6 addresses and routes, which every IPv6 link has and no zone can be given.
    """
    claims = []
    for link, address in addresses:
        if not _never_a_zone(address.network):
            label = " (the uplink)" if link == uplink else ""
            claims.append(Claim(address.network, f"address {address} on {link}{label}", link))
    for link, dst, via in routes:
        if dst.prefixlen > 0 and not _never_a_zone(dst):
            claims.append(Claim(dst, f"route {dst}{f' via {via}' if via else ''} on {link}", link))
    for link, cidr, where in declared:
        network = ipaddress.ip_interface(cidr).network
        if not _never_a_zone(network):
            claims.append(Claim(network, f"address {cidr} declared for {link} in {where}", link))
    return tuple(claims)


def check_distinct(zones: Sequence[Footprint]) -> None:
    """Every zone's bridge, domain and networks its own; the later zone is named first, with its fix."""
    for j, later in enumerate(zones):
        for earlier in zones[:j]:
            if later.zone == earlier.zone:
                raise OverlapError(f"zone {later.zone} is declared twice: give each zone one name of its own")
            if later.bridge == earlier.bridge:
                raise OverlapError(f"zone {later.zone}'s bridge {later.bridge} is zone {earlier.zone}'s bridge too: "
                                   f"{later.fix('bridge')}")
            if _nested(later.domain, earlier.domain):
                relation = "is" if later.domain == earlier.domain else "is under or above"
                raise OverlapError(f"zone {later.zone}'s domain {later.domain} {relation} zone {earlier.zone}'s "
                                   f"domain {earlier.domain}: {later.fix('domain')}")
            for net, what in later.networks:
                for other, other_what in earlier.networks:
                    if net.version == other.version and net.overlaps(other):
                        raise OverlapError(f"zone {later.zone}'s {what} {net} overlaps zone {earlier.zone}'s "
                                           f"{other_what} {other}: {later.fix(what)}")


def check_host(zones: Sequence[Footprint], claims: Iterable[Claim]) -> None:
    """No zone's network overlaps a host address or route; claims on any zone's bridge are ours."""
    bridges = {zone.bridge for zone in zones}
    foreign = [claim for claim in claims if claim.link not in bridges]
    for zone in zones:
        for net, what in zone.networks:
            for claim in foreign:
                if net.version == claim.network.version and net.overlaps(claim.network):
                    raise OverlapError(f"zone {zone.zone}'s {what} {net} overlaps the host's {claim.what}: "
                                       f"{zone.fix(what)}")


def is_free(candidate: IPNetwork, taken: Iterable[IPNetwork], claims: Iterable[Claim], bridge: str | None) -> bool:
    """Neither a zone's network nor a host claim (bar those on ``bridge``, the zone's own) overlaps it."""
    return not any(candidate.version == n.version and candidate.overlaps(n) for n in taken) and not any(
        c.link != bridge and candidate.version == c.network.version and candidate.overlaps(c.network) for c in claims)


def _nested(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _never_a_zone(network: IPNetwork) -> bool:
    return network.version == 6 and any(network.subnet_of(n) for n in _NEVER_ZONES)
