"""Checks of the settings against the live host and its interfaces file."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proximity.host import Host
from proximity.network import interfaces
from proximity.settings import Settings, SettingsError


@dataclass(frozen=True)
class HostNetwork:
    """What netlink says: links by index, IPv4 addresses and main-table routes."""

    links: dict[int, dict]  # index -> {"name", "up", "kind"}
    addresses: list[tuple[str, ipaddress.IPv4Interface]]  # (link name, address)
    routes: list[tuple[str, ipaddress.IPv4Network, str | None]]  # (link name, destination, gateway)

    def link(self, name: str) -> dict | None:
        return next((link for link in self.links.values() if link["name"] == name), None)

    def default_route_link(self) -> str | None:
        return next((name for name, dst, _ in self.routes if dst.prefixlen == 0), None)


def read_host_network(host: Host) -> HostNetwork:
    """Links, IPv4 addresses and main-table routes, from two ``ip -json`` dumps."""
    links, addresses = {}, []
    for link in host.ip_json("-details", "address", "show"):
        links[link["ifindex"]] = {
            "name": link["ifname"],
            "up": "UP" in link.get("flags", []),
            "kind": link.get("linkinfo", {}).get("info_kind"),
        }
        addresses += [
            (link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]
    routes = [
        (
            r.get("dev", "(no device)"),  # blackhole, unreachable and prohibit routes have none
            ipaddress.IPv4Network("0.0.0.0/0" if r["dst"] == "default" else r["dst"], strict=False),
            r.get("gateway"),
        )
        for r in host.ip_json("-4", "route", "show", "table", "main")
    ]
    return HostNetwork(links, addresses, routes)


def resolve_uplink(settings: Settings, net: HostNetwork) -> str:
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


def check_subnet_free(settings: Settings, net: HostNetwork, interfaces_text: str) -> None:
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
    if clashes:
        raise SettingsError(
            f"setting 'gateway': the subnet {subnet} overlaps "
            + "; ".join(dict.fromkeys(clashes))
            + ". Pick a free private subnet with PROXIMITY_GATEWAY (and the DHCP range inside it), "
            "e.g. 10.77.0.1/24"
        )
