"""What the admin declared for the further zones: ``[zones.NAME]`` tables of proximity.toml, checked.

A table may leave anything out: without ``subnet`` the zone gets a free /24 when it is resolved
against the host (:mod:`proximity.spec.zones`), without ``domain`` it is ``NAME.internal``
(``.internal`` is reserved for private use by ICANN, 2024), without ``ipv6`` it gets its own /64
of the install's ULA prefix. Everything here is pure: checks against the host come at resolution.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from proximity.spec.checks import IPv4Range, check_domain, check_gateway, check_range
from proximity.spec.naming import check_zone_name

ZoneType = Literal["local"]  # "vxlan" joins when zones span a Proxmox cluster's nodes
NatMode = Literal["masquerade", "off"]
Ipv6Mode = Literal["auto", "off"] | ipaddress.IPv6Network  # a network: a routed prefix, never NATed
DEFAULT_DOMAIN_SUFFIX = "internal"


@dataclass(frozen=True)
class LocalOptions:
    """The fields only a ``local`` zone has (a bridge on this host): none yet.

    Each zone type has such a class: its ``KEYS`` are the table keys only that type takes, its
    ``parse`` reads them. A ``vxlan`` type would add ``VxlanOptions(vni=...)`` here and to
    :data:`ZONE_TYPES`, and leave every other key and check alone.
    """

    KEYS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> LocalOptions:
        return cls()


ZoneOptions = LocalOptions  # the union of every type's options class
ZONE_TYPES: dict[str, type[LocalOptions]] = {"local": LocalOptions}
PLANNED_TYPES = {"vxlan": "a zone that spans the nodes of a Proxmox cluster"}
COMMON_KEYS = frozenset({"type", "subnet", "dhcp_range", "domain", "ipv6", "nat", "host_services"})


@dataclass(frozen=True)
class ZoneConfig:
    """One ``[zones.NAME]`` table, checked; None where the table left the choice to Proximity."""

    name: str
    type: ZoneType = "local"
    subnet: ipaddress.IPv4Network | None = None  # None: a free /24, allocated once and kept
    gateway: ipaddress.IPv4Address | None = None  # None with a subnet: its first host address
    dhcp_range: IPv4Range | None = None  # None: the default range of the subnet (checks.default_range)
    domain: str | None = None  # None: NAME.internal
    ipv6: Ipv6Mode = "auto"
    nat: NatMode = "masquerade"
    host_services: bool = False  # may the zone's containers reach the host's own services?
    options: ZoneOptions = LocalOptions()

    @property
    def default_domain(self) -> str:
        return f"{self.name}.{DEFAULT_DOMAIN_SUFFIX}"


def parse_ipv6_mode(value: object) -> Ipv6Mode:
    """``auto``, ``off``, or a routed /64 such as ``2001:db8:0:1::/64``; ValueError saying why not."""
    if isinstance(value, ipaddress.IPv6Network) or value in ("auto", "off"):
        return value  # type: ignore[return-value]
    try:
        if not isinstance(value, str):
            raise ValueError
        prefix = ipaddress.IPv6Network(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is not 'auto' (a /64 of this install's ULA prefix), 'off', or an IPv6 /64 "
            "routed to this host (for example '2001:db8:0:1::/64', host bits zero)"
        ) from None
    if prefix.prefixlen != 64:
        raise ValueError(
            f"{value!r} is a /{prefix.prefixlen}: a zone's IPv6 subnet is a /64 (SLAAC needs one); "
            f"give one /64 of it, for example '{next(prefix.subnets(new_prefix=64)) if prefix.prefixlen < 64 else prefix.supernet(new_prefix=64)}'"
        )
    if prefix.is_link_local or prefix.is_multicast or prefix.is_loopback or prefix.is_unspecified \
            or prefix.is_site_local or prefix.network_address.ipv4_mapped is not None:
        raise ValueError(f"{value!r} is not a unicast prefix a zone can route: give a global or ULA /64")
    return prefix


def parse_nat(value: object) -> NatMode:
    if value is True or value == "masquerade":  # `is`: 1 == True, and nat = 1 is no answer
        return "masquerade"
    if value is False or value == "off":
        return "off"
    raise ValueError(f"{value!r} is not 'masquerade' (the default: out of the uplink's address) or 'off' (routed)")


def parse_zone(name: str, table: object) -> ZoneConfig:
    """One zone's table; ValueError listing every wrong key, each naming the zone, the key and the fix."""
    check_zone_name(name)
    # Messages name keys by their dotted TOML path (zones.web.subnet), never in brackets: the
    # CLI prints errors as Rich markup, which takes "[zones.web]" for a style tag and drops it.
    where = f"zones.{name}"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} is {table!r}, not a table of the zone's settings ({', '.join(sorted(COMMON_KEYS))})")
    errors: list[str] = []
    kind = table.get("type", "local")
    options_class = ZONE_TYPES.get(kind) if isinstance(kind, str) else None
    if options_class is None:
        planned = PLANNED_TYPES.get(kind) if isinstance(kind, str) else None
        raise ValueError(
            f"{where}.type: {kind!r} " + (f"({planned}) is not supported yet" if planned else "is not a zone type")
            + f"; use {', '.join(map(repr, ZONE_TYPES))}"
        )
    known = COMMON_KEYS | options_class.KEYS
    for key in table:
        if key not in known:
            errors.append(f"{where}: {key!r} is not a setting of a {kind} zone (misspelt?); "
                          f"the settings are {', '.join(sorted(known))}")
    values: dict[str, Any] = {"name": name, "type": kind}

    def read(key: str, parse) -> None:
        if key in table:
            try:
                values[key] = parse(table[key])
            except ValueError as exc:
                errors.append(f"{where}.{key}: {exc}")

    read("subnet", _parse_subnet)
    if "subnet" in values:
        values["subnet"], values["gateway"] = values["subnet"].network, values["subnet"].ip
    read("dhcp_range", _parse_range)
    read("domain", check_domain)
    read("ipv6", parse_ipv6_mode)
    read("nat", parse_nat)
    read("host_services", _parse_bool)
    try:
        values["options"] = options_class.parse(table)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
    if "dhcp_range" in values and not errors:
        if "subnet" not in values:
            errors.append(f"{where}.dhcp_range: a range needs the subnet it is in; add subnet = \"...\" "
                          "or leave both out for a free /24 with its default range")
        else:
            try:
                check_range(ipaddress.IPv4Interface((values["gateway"], values["subnet"].prefixlen)),
                            *values["dhcp_range"], fields=("dhcp_range", "dhcp_range", "dhcp_range"))
            except ValueError as exc:
                errors.append(f"{where}.{exc}")
    if errors:
        raise ValueError("\n  ".join(errors))
    return ZoneConfig(**values)


def parse_zones(tables: object) -> tuple[ZoneConfig, ...]:
    """The ``zones`` table of proximity.toml (``[zones.NAME]`` sections), in the file's order."""
    if isinstance(tables, tuple) and all(isinstance(z, ZoneConfig) for z in tables):
        return tables  # already parsed (dataclasses.replace, a caller's own list)
    if not isinstance(tables, Mapping):
        raise ValueError(
            f"{tables!r} is not a set of zones: declare each zone as a table zones.NAME in proximity.toml "
            "(see docs/zones.md)"
        )
    zones, errors = [], []
    for name, table in tables.items():
        try:
            zones.append(parse_zone(name, table))
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("\n  ".join(errors))
    return tuple(zones)


def _parse_subnet(value: object) -> ipaddress.IPv4Interface:
    """``10.10.1.0/24`` (the gateway is .1) or ``10.10.1.254/24`` (the gateway is that address)."""
    try:
        if not isinstance(value, str):
            raise ValueError
        interface = ipaddress.IPv4Interface(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 subnet such as '10.10.1.0/24' (the gateway is then .1) or "
            "'10.10.1.254/24' (the gateway is that address); IPv6 goes in ipv6 = \"...\""
        ) from None
    if interface.ip == interface.network.network_address and interface.network.prefixlen <= 30:
        interface = ipaddress.IPv4Interface((interface.ip + 1, interface.network.prefixlen))
    return check_gateway(interface)


def _parse_range(value: object) -> IPv4Range:
    try:
        if not isinstance(value, str) or value.count("-") != 1:
            raise ValueError
        start, end = (ipaddress.IPv4Address(part.strip()) for part in value.split("-"))
    except ValueError:
        raise ValueError(f"{value!r} is not a range of IPv4 addresses such as '10.10.1.100-10.10.1.250'") from None
    return start, end


def _parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false (without quotes)")
    return value


def parse_peers(value: object) -> tuple[tuple[str, str], ...]:
    """``peers = [["web", "db"], ...]``: pairs of zones whose containers may reach each other."""
    if isinstance(value, tuple) and all(isinstance(pair, tuple) for pair in value):
        value = [list(pair) for pair in value]
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list of pairs of zones: write it as peers = [[\"web\", \"db\"]]")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(z, str) for z in pair)) \
                or pair[0] == pair[1]:
            raise ValueError(f"{pair!r} is not a pair of two different zone names, such as [\"web\", \"db\"]")
        pairs.append(tuple(sorted(pair)))
    return tuple(sorted(set(pairs)))

