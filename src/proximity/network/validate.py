"""Checks of the settings against the observed host and its interfaces file (pure)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from proximity.network import interfaces
from proximity.settings import Settings, SettingsError

if TYPE_CHECKING:
    from proximity.network.observe import Observation


def resolve_uplink(settings: Settings, net: Observation) -> str:
    """The configured uplink, or the interface of the default route."""
    uplink = settings.uplink or net.default_route_link()
    if uplink is None:
        raise SettingsError(
            "setting 'uplink': there is no default route to find the uplink from; "
            "name it with --uplink IFACE or PROXIMITY_UPLINK (on Proxmox usually vmbr0)"
        )
    if uplink == settings.bridge:
        raise SettingsError(f"setting 'uplink': {uplink!r} is the managed bridge itself; name the host's uplink")
    if net.link(uplink) is None:
        raise SettingsError(
            f"setting 'uplink': interface {uplink!r} does not exist on this host; "
            "pick an existing interface with --uplink (see `ip -br link`)"
        )
    return uplink


def check_subnet_free(settings: Settings, net: Observation, interfaces_text: str) -> None:
    """The subnet must not collide with anything the host has or declares, bar our own bridge."""
    subnet = settings.subnet
    clashes = []
    for link, address in net.addresses:
        if link != settings.bridge and address.network.overlaps(subnet):
            clashes.append(f"address {address} on {link}")
    for link, dst, gateway in net.routes:
        if link != settings.bridge and dst.prefixlen > 0 and dst.overlaps(subnet):
            via = f" via {gateway}" if gateway else ""
            clashes.append(f"route {dst}{via} on {link}")
    for link, cidr in interfaces.declared_addresses(interfaces_text):
        if link != settings.bridge and ipaddress.IPv4Interface(cidr).network.overlaps(subnet):
            clashes.append(f"address {cidr} declared for {link} in {settings.interfaces_file}")
    for sourced in net.sourced:  # what ifupdown2 reads besides the file: interfaces.d and the like
        for link, cidr in interfaces.declared_addresses(sourced.text or "", marked=False):
            if link != settings.bridge and ipaddress.IPv4Interface(cidr).network.overlaps(subnet):
                clashes.append(f"address {cidr} declared for {link} in {sourced.path}")
    if clashes:
        raise SettingsError(
            f"setting 'gateway': the subnet {subnet} overlaps "
            + "; ".join(dict.fromkeys(clashes))
            + ". Pick a free private subnet with PROXIMITY_GATEWAY (and the DHCP range inside it), "
            "e.g. 10.77.0.1/24"
        )
