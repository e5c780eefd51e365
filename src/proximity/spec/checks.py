"""Checks shared by the settings (the default zone, and what every zone takes from them) and the ``[zones.NAME]`` tables.

Each raises ``ValueError`` with the reason and the fix; the caller adds where the value was set.
"""

from __future__ import annotations

import ipaddress
import re

from proximity.names import is_dns_name

IPv4Range = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


def check_domain(value: str) -> str:
    """A zone's DNS domain: a name of two labels or more, not under localhost; returned lowercase."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a domain name: write it in quotes, for example 'prox.local'")
    labels = value.removesuffix(".").split(".")
    if not is_dns_name(value.removesuffix(".")):
        raise ValueError(
            f"{value!r} is not a valid DNS name: use dot-separated labels of letters, digits "
            "and hyphens (for example 'prox.local')"
        )
    if labels[-1].lower() == "localhost":
        raise ValueError(
            f"{value!r} is localhost or under it, which every resolver answers itself (RFC 6761): "
            "use a domain of your own, for example 'prox.local'"
        )
    if len(labels) < 2:
        raise ValueError(
            f"{value!r} is a single label: dnsmasq would claim the whole top-level domain and "
            f"answer for every name under it; use at least two labels, for example 'prox.{value.lower()}' "
            "or 'prox.local'"
        )
    return value.removesuffix(".").lower()


def check_gateway(value: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    """An IPv4 gateway with its prefix: room for containers, not the network or broadcast address."""
    net = value.network
    if net.prefixlen > 29:
        raise ValueError(f"{value} leaves no room for containers: use a prefix of /29 or shorter, e.g. 10.10.0.1/24")
    if value.ip in (net.network_address, net.broadcast_address):
        raise ValueError(
            f"{value.ip} is the network or broadcast address of {net}: "
            f"use a host address such as {net.network_address + 1}/{net.prefixlen}"
        )
    return value


def check_range(gateway: ipaddress.IPv4Interface, start: ipaddress.IPv4Address, end: ipaddress.IPv4Address,
                fields: tuple[str, str, str] = ("dhcp_start", "dhcp_end", "dhcp_start/dhcp_end")) -> None:
    """A DHCP range inside the gateway's subnet, in order, host addresses only, not holding the gateway.

    ``fields`` name the start, the end and the two together in the messages.
    """
    net = gateway.network
    first, last = net.network_address + 1, net.broadcast_address - 1
    hint = f"pick addresses between {first} and {last} other than the gateway {gateway.ip}"
    for field, address in zip(fields[:2], (start, end)):
        if address not in net:
            raise ValueError(f"{field}: {address} is outside the subnet {net}; {hint}")
        if address in (net.network_address, net.broadcast_address):
            raise ValueError(f"{field}: {address} is the network or broadcast address of {net}; {hint}")
    if start > end:
        raise ValueError(f"{fields[0]}: {start} comes after {fields[1]} {end}; swap them")
    if start <= gateway.ip <= end:
        raise ValueError(f"{fields[2]}: the range {start}-{end} contains the gateway {gateway.ip}; {hint}")


def default_range(gateway: ipaddress.IPv4Interface) -> IPv4Range:
    """The DHCP range a zone gets when it names none.

    A /24 or a larger subnet: from the 100th address to the 5th from the end (a /24: .100-.250,
    the default zone's), leaving the bottom for the gateway and static addresses. A smaller one
    (/25 to /29) has no room to spare: every host address. Either way the gateway is left out, by
    keeping the longer side of the range when it falls inside.
    """
    net = gateway.network
    if net.prefixlen <= 24:
        start, end = net.network_address + 100, net.broadcast_address - 5
    else:
        start, end = net.network_address + 1, net.broadcast_address - 1
    if start <= gateway.ip <= end:
        below, above = int(gateway.ip) - int(start), int(end) - int(gateway.ip)
        start, end = (start, gateway.ip - 1) if below >= above else (gateway.ip + 1, end)
    return start, end


def check_upstream_dns(value: object) -> list:
    """The DNS servers every zone's dnsmasq asks: a list of addresses (a string: split on commas and spaces)."""
    if isinstance(value, str):  # one address, or a list written as in the environment
        value = [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list of addresses: write it as [\"1.1.1.1\", \"8.8.8.8\"]")
    addresses = []
    for item in value:
        try:
            if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
                addresses.append(item)
                continue
            if not isinstance(item, str):  # ip_address(5) would be 0.0.0.5
                raise ValueError(item)
            addresses.append(ipaddress.ip_address(item.strip()))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IPv4 or IPv6 address: give the addresses of DNS servers, "
                "for example 1.1.1.1,8.8.8.8 (no names, ports or prefixes)"
            ) from None
    return addresses
