"""Choosing a zone's networks when the admin named none (pure: the host comes in as claims).

IPv4: the first /24 free of every zone's subnet and every host claim, searched upward from
10.10.0.0 to 10.255.255.0, then through 172.16.0.0/12 and 192.168.0.0/16 (RFC 1918). The
default zone sits at 10.10.0.0/24, so the first further zone gets 10.10.1.0/24.

IPv6: one RFC 4193 ULA /48 per install, ``fd`` + a random 40-bit Global ID (RFC 4193 §3.2);
a zone's /64 is the /48 with a 16-bit subnet ID, the lowest one from 1 up that no zone holds
and no host claim overlaps. Both choices are recorded (:mod:`proximity.spec.state`) and a
recorded choice is kept, so a zone keeps its networks when others are added or deleted.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from proximity.spec.overlaps import Claim, IPNetwork

IPV4_POOLS = (
    (ipaddress.IPv4Address("10.10.0.0"), ipaddress.IPv4Address("10.255.255.255")),
    (ipaddress.IPv4Address("172.16.0.0"), ipaddress.IPv4Address("172.31.255.255")),
    (ipaddress.IPv4Address("192.168.0.0"), ipaddress.IPv4Address("192.168.255.255")),
)
ZONE_IPV4_PREFIX = 24
ULA_PREFIX = ipaddress.IPv6Network("fd00::/8")


class AllocationError(ValueError):
    """No free network is left; the message says what was searched and what to give instead."""


def allocate_ipv4(taken: Iterable[IPNetwork], claims: Iterable[Claim], bridge: str | None = None
                  ) -> ipaddress.IPv4Network:
    """The first free /24 of :data:`IPV4_POOLS`.

    ``taken``: the other zones' networks; ``claims``: the host's (those on ``bridge``, the zone's
    own bridge, do not count: a re-run must find the zone's own address free).
    """
    blockers = _blockers(4, taken, claims, bridge)
    for first, last in IPV4_POOLS:
        found = _first_free(int(first), int(last), 32 - ZONE_IPV4_PREFIX, blockers)
        if found is not None:
            return ipaddress.IPv4Network((found, ZONE_IPV4_PREFIX))
    raise AllocationError("no free /24 is left in 10.10.0.0-10.255.255.255, 172.16.0.0/12 or 192.168.0.0/16 "
                          "(other zones, the host's addresses and routes hold them all): give the zone a subnet")


def random_global_id() -> int:
    """A fresh 40-bit RFC 4193 Global ID, from the system's secure random source."""
    return secrets.randbits(40)


def ula_prefix(global_id: int) -> ipaddress.IPv6Network:
    """The /48 ``fdXX:XXXX:XXXX::/48`` of a 40-bit Global ID."""
    if not 0 <= global_id < 1 << 40:
        raise ValueError(f"{global_id!r} is not a 40-bit Global ID")
    return ipaddress.IPv6Network(((0xFD << 120) | (global_id << 80), 48))


def ula_subnet(ula: ipaddress.IPv6Network, subnet_id: int) -> ipaddress.IPv6Network:
    """The /64 of ``ula`` (a /48) with the 16-bit ``subnet_id``."""
    if not 0 <= subnet_id < 1 << 16:
        raise ValueError(f"{subnet_id!r} is not a 16-bit subnet ID")
    return ipaddress.IPv6Network((int(ula.network_address) | (subnet_id << 64), 64))


def allocate_subnet_id(ula: ipaddress.IPv6Network, used: Iterable[int], taken: Iterable[IPNetwork],
                       claims: Iterable[Claim], bridge: str | None = None) -> int:
    """The lowest subnet ID from 1 whose /64 is free: not ``used`` by a zone, not overlapping ``taken``
    (the zones' routed prefixes) nor a host claim (bar those on ``bridge``).

    ID 0 is left alone: ``fdXX:XXXX:XXXX::/64`` is the one /64 people type by hand.
    """
    base = int(ula.network_address)
    blockers = _blockers(6, [*taken, *(ula_subnet(ula, i) for i in used)], claims, bridge)
    found = _first_free(base | (1 << 64), base | ((1 << 80) - 1), 64, blockers)
    if found is None:
        raise AllocationError(f"no free /64 is left in {ula} (zones, the host's addresses and routes hold "
                              "them all): give the zone an ipv6 prefix, or ipv6 = \"off\"")
    return (found - base) >> 64


def _blockers(version: int, taken: Iterable[IPNetwork], claims: Iterable[Claim], bridge: str | None
              ) -> list[tuple[int, int]]:
    nets = [n for n in taken if n.version == version]
    nets += [c.network for c in claims if c.network.version == version and c.link != bridge]
    return sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)


def _first_free(first: int, last: int, bits: int, blockers: list[tuple[int, int]]) -> int | None:
    """The first aligned block of 2**bits addresses in [first, last] that no blocker overlaps."""
    size = 1 << bits
    candidate = first
    while candidate + size - 1 <= last:
        end = candidate + size - 1
        hit = max((b_end for b_start, b_end in blockers if b_start <= end and b_end >= candidate), default=None)
        if hit is None:
            return candidate
        candidate = ((hit >> bits) + 1) << bits  # past the blocker, aligned
    return None
