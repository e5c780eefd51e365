"""Zones, resolved: every network chosen, every name and path derived, every overlap checked.

A zone is one isolated network: a bridge, its subnets (IPv4, and IPv6 unless off), one dnsmasq
with a domain of its own. The zone and its subnets are apart, as in Proxmox SDN, so dual stack is
two :class:`SubnetSpec` rather than a second set of fields.

The default zone, ``prox-net``, is today's network built from today's settings, paths included
(IPv6 only if the ``ipv6`` setting asks). The further zones come from ``[zones.NAME]`` tables
(:mod:`proximity.spec.config`). :func:`resolve` is pure: the host's addresses and routes come in
as claims (:func:`proximity.spec.overlaps.host_claims`), what it chose comes out in the state.

Typical use::

    state = load_state(host, settings)
    spec = resolve(settings, state, host_claims(obs.addresses, obs.routes, uplink))
    if spec.state != state:
        save_state(host, settings, spec.state)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from proximity.errors import NotFoundError, SettingsError
from proximity.settings import Settings
from proximity.spec.alloc import (AllocationError, allocate_ipv4, allocate_subnet_id, random_global_id, ula_prefix,
                                  ula_subnet)
from proximity.spec.checks import default_range
from proximity.spec.config import Ipv6Mode, LocalOptions, NatMode, ZoneConfig, ZoneOptions, ZoneType, parse_ipv6_mode
from proximity.spec.naming import DEFAULT_ZONE, ZonePaths, bridge_name, default_zone_paths, zone_paths
from proximity.spec.overlaps import Claim, Footprint, IPNetwork, OverlapError, check_distinct, check_host
from proximity.spec.state import ZoneState

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPV6_GATEWAY_ID = 1  # a zone's IPv6 gateway is PREFIX::1
IPV6_RANGE = (0x1000, 0xFFFF)  # and its stateful DHCPv6 range PREFIX::1000-PREFIX::ffff


@dataclass(frozen=True)
class SubnetSpec:
    """One subnet of a zone, IPv4 or IPv6: its network, the bridge's address in it, its DHCP range."""

    cidr: IPNetwork
    gateway: IPAddress
    dhcp_range: tuple[IPAddress, IPAddress] | None  # None: no DHCP on this subnet
    nat: bool  # masqueraded out of the uplink (False: routed, the prefix is the host's to route)

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The bridge's address with its prefix, as ``ip addr`` and the interfaces file write it."""
        return ipaddress.ip_interface(f"{self.gateway}/{self.cidr.prefixlen}")

    @property
    def pool_size(self) -> int:
        return 0 if self.dhcp_range is None else int(self.dhcp_range[1]) - int(self.dhcp_range[0]) + 1


@dataclass(frozen=True)
class ZoneSpec:
    """One zone, fully specified: what the renderer and the planner need, nothing to look up."""

    name: str
    type: ZoneType
    bridge: str
    subnets: tuple[SubnetSpec, ...]  # IPv4 first, then IPv6 if the zone has it
    domain: str
    lease_time: str
    nat: NatMode
    host_services: bool  # False: the zone reaches only its gateway's DHCP and DNS on the host
    upstream_dns: tuple[IPAddress, ...]
    paths: ZonePaths
    options: ZoneOptions = LocalOptions()  # the type's own fields (a VNI for vxlan, later)

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ZONE

    @property
    def ipv4(self) -> SubnetSpec:
        return next(s for s in self.subnets if s.version == 4)

    @property
    def ipv6(self) -> SubnetSpec | None:
        return next((s for s in self.subnets if s.version == 6), None)

    def footprint(self) -> Footprint:
        return Footprint(self.name, self.bridge, self.domain,
                         tuple((s.cidr, "subnet" if s.version == 4 else "IPv6 subnet") for s in self.subnets))


@dataclass(frozen=True)
class HostSpec:
    """The settings and every zone on this host (the default first), with the state they were resolved from."""

    settings: Settings
    zones: tuple[ZoneSpec, ...]
    state: ZoneState  # the allocations, those made by this resolution included: save it if it changed

    @property
    def default(self) -> ZoneSpec:
        return self.zones[0]

    def views(self):
        """Every zone as settings (:mod:`proximity.spec.view`), the default first."""
        from proximity.spec.view import zone_view

        return tuple(zone_view(self.settings, zone, tuple(o for o in self.zones if o is not zone))
                     for zone in self.zones)

    def zone(self, name: str) -> ZoneSpec:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise NotFoundError(f"there is no zone {name!r}: the zones are {', '.join(z.name for z in self.zones)}")


def resolve(settings: Settings, state: ZoneState, claims: Iterable[Claim] = (), *,
            new_global_id: Callable[[], int] = random_global_id) -> HostSpec:
    """Every zone of ``settings``, with networks chosen where none was given, and every overlap refused.

    ``state`` holds earlier choices, which are kept; ``claims`` are the host's addresses and routes;
    ``new_global_id`` is called once, only if the install has no ULA prefix yet and a zone needs one.
    Raises :class:`SettingsError` naming the zones (or the host's address or route) and the fix.
    """
    claims = tuple(claims)
    configs = settings.zones
    # Networks no allocation may take: every one named in the settings, and every one kept in the state.
    named_v4 = [settings.subnet, *(c.subnet for c in configs if c.subnet is not None)]
    named_v6 = [m for m in (_default_ipv6(settings), *(c.ipv6 for c in configs)) if isinstance(m, ipaddress.IPv6Network)]
    for config in configs:  # a zone now given a subnet no longer holds the one allocated for it
        if config.subnet is not None and state.get(config.name).ipv4 is not None:
            state = state.with_zone(config.name, replace(state.get(config.name), ipv4=None))
    try:
        specs = []
        for config in (None, *configs):  # None: the default zone
            zone, state = _zone(settings, config, state, claims, named_v4, named_v6, new_global_id)
            specs.append(zone)
        footprints = [z.footprint() for z in specs]
        check_distinct(footprints)
        check_host(footprints, claims)
    except (OverlapError, AllocationError) as exc:
        raise SettingsError(f"zones: {exc}") from None
    return HostSpec(settings, tuple(specs), state)


def check_declared(settings: Settings) -> None:
    """The checks that need no host and no state: names, bridges, domains and the networks the settings name.

    Run when the settings load, so a wrong ``[zones.NAME]`` table is refused by every command.
    """
    default_v6 = _default_ipv6(settings)
    prints = [Footprint(DEFAULT_ZONE, settings.bridge, settings.domain,
                        ((settings.subnet, "subnet"),) + _named_v6(default_v6))]
    for c in settings.zones:
        named = ((c.subnet, "subnet"),) if c.subnet is not None else ()
        prints.append(Footprint(c.name, bridge_name(c.name), c.domain or c.default_domain, named + _named_v6(c.ipv6)))
    try:
        check_distinct(prints)
    except OverlapError as exc:
        raise SettingsError(f"zones: {exc}") from None


def _zone(settings: Settings, config: ZoneConfig | None, state: ZoneState, claims: tuple[Claim, ...],
          named_v4: list, named_v6: list, new_global_id: Callable[[], int]) -> tuple[ZoneSpec, ZoneState]:
    """One zone (``config`` None: the default zone) and the state with its allocations."""
    s = settings
    if config is None:
        name, bridge, gateway, dhcp = DEFAULT_ZONE, s.bridge, s.gateway, (s.dhcp_start, s.dhcp_end)
        ipv6, nat, host_services, domain, options = _default_ipv6(s), "masquerade", True, s.domain, LocalOptions()
        kind, paths = "local", default_zone_paths(s)
    else:
        name, bridge, ipv6, nat = config.name, bridge_name(config.name), config.ipv6, config.nat
        host_services, domain, options = config.host_services, config.domain or config.default_domain, config.options
        kind, paths = config.type, zone_paths(s, config.name)
        mine = state.get(name)
        if config.subnet is not None:
            gateway = ipaddress.IPv4Interface((config.gateway, config.subnet.prefixlen))
        else:
            subnet = mine.ipv4
            if subnet is None:
                taken = [*named_v4, *(a.ipv4 for z, a in state.zones.items() if a.ipv4 and z != name)]
                subnet = allocate_ipv4(taken, claims, bridge)
                state = state.with_zone(name, replace(mine, ipv4=subnet))
            gateway = ipaddress.IPv4Interface((subnet.network_address + 1, subnet.prefixlen))
        dhcp = config.dhcp_range or default_range(gateway)
    subnets = [SubnetSpec(gateway.network, gateway.ip, dhcp, nat == "masquerade")]
    if ipv6 != "off":
        prefix, state = _ipv6_prefix(name, bridge, ipv6, state, claims, named_v6, new_global_id)
        first = prefix.network_address
        subnets.append(SubnetSpec(prefix, first + IPV6_GATEWAY_ID, (first + IPV6_RANGE[0], first + IPV6_RANGE[1]),
                                  nat == "masquerade" and ipv6 == "auto"))
    zone = ZoneSpec(name, kind, bridge, tuple(subnets), domain, s.lease_time, nat, host_services,
                    tuple(s.upstream_dns), paths, options)
    return zone, state


def _ipv6_prefix(name: str, bridge: str, mode: Ipv6Mode, state: ZoneState, claims: tuple[Claim, ...],
                 named_v6: list, new_global_id: Callable[[], int]) -> tuple[ipaddress.IPv6Network, ZoneState]:
    if isinstance(mode, ipaddress.IPv6Network):
        return mode, state
    if state.ula is None:
        state = ZoneState(ula_prefix(new_global_id()), state.zones)
    mine = state.get(name)
    if mine.ipv6_id is None:
        used = [a.ipv6_id for z, a in state.zones.items() if a.ipv6_id is not None and z != name]
        mine = replace(mine, ipv6_id=allocate_subnet_id(state.ula, used, named_v6, claims, bridge))
        state = state.with_zone(name, mine)
    return ula_subnet(state.ula, mine.ipv6_id), state


def _default_ipv6(settings: Settings) -> Ipv6Mode:
    return parse_ipv6_mode(settings.ipv6)


def _named_v6(mode: Ipv6Mode) -> tuple[tuple[IPNetwork, str], ...]:
    return ((mode, "IPv6 subnet"),) if isinstance(mode, ipaddress.IPv6Network) else ()
