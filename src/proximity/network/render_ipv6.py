"""IPv6 for a zone's dnsmasq: router advertisements, stateful DHCPv6, reserved addresses and AAAA names.

Pure text from a zone's IPv6 :class:`~proximity.spec.zones.SubnetSpec`, as ``render.dnsmasq_conf`` is
for IPv4. The choices, after dnsmasq's manual and the peers (Incus, Proxmox SDN):

- ``enable-ra`` with a ``slaac`` stateful range: the advertisement sets both the managed (M) and the
  autonomous (A) flags, so a guest gets a SLAAC address from the kernel and a DHCPv6 one. Names come
  from DHCPv6, never from ``ra-names``, which derives the address from the MAC and fails on guests that
  use stable-privacy addresses.
- A reserved container's IPv6 address is fixed: the zone's prefix plus the offset of its IPv4 address
  in the IPv4 subnet (10.10.0.100 -> PREFIX::64). For any IPv4 subnet of /20 or smaller that offset is
  below the dynamic range (PREFIX::1000-PREFIX::ffff), so a reserved address is never handed out to
  another client. Its AAAA record is in the hosts file before the container first boots.
- Without an IPv6 default route on the uplink, the advertisement has a router lifetime of 0: the
  prefix is on-link, but containers get no IPv6 default route that leads nowhere (they keep IPv4).
"""

from __future__ import annotations

import ipaddress

from proximity.spec.zones import SubnetSpec

RA_INTERVAL = 60  # seconds between unsolicited advertisements (a soliciting guest is answered at once)
ROUTER_LIFETIME = 1800  # seconds, RFC 4861's default for a router with a route out


def reserved_ipv6(reservation_ip: str, ipv4: SubnetSpec, ipv6: SubnetSpec) -> ipaddress.IPv6Address:
    """A reserved container's stable IPv6 address: the IPv6 prefix plus its IPv4 address' offset."""
    return stable_ipv6(reservation_ip, ipv4.cidr, ipv6.cidr)


def stable_ipv6(ip: str, subnet: ipaddress.IPv4Network, prefix: ipaddress.IPv6Network) -> ipaddress.IPv6Address:
    """:func:`reserved_ipv6` on the two networks alone (what a zone's view carries)."""
    offset = int(ipaddress.IPv4Address(ip)) - int(subnet.network_address)
    if not 0 < offset < int(subnet.num_addresses):
        raise ValueError(f"{ip} is not an address of {subnet}")
    return ipaddress.IPv6Address(int(prefix.network_address) + offset)


def view_subnet(view) -> SubnetSpec | None:
    """A zone view's IPv6 subnet (``ipv6_gateway``, ``ipv6_range``, ``ipv6_nat``); None when IPv6 is off."""
    gateway = getattr(view, "ipv6_gateway", None)
    if gateway is None:
        return None
    return SubnetSpec(gateway.network, gateway.ip, view.ipv6_range, view.ipv6_nat)


def dnsmasq_ipv6_conf(bridge: str, subnet: SubnetSpec, domain: str, lease_time: str, default_route: bool) -> str:
    """The IPv6 lines of a zone's dnsmasq.conf (appended to its IPv4 ones)."""
    if subnet.version != 6 or subnet.dhcp_range is None:
        raise ValueError(f"{subnet.cidr} is not an IPv6 subnet with a DHCPv6 range")
    start, end = subnet.dhcp_range
    lifetime = ROUTER_LIFETIME if default_route else 0
    route = ("" if default_route else
             "# The uplink has no IPv6 default route: advertise the prefix, not a route via this host.\n")
    return f"""\
# IPv6: router advertisements (SLAAC) and stateful DHCPv6, whose names are the AAAA records.
enable-ra
dhcp-range={start},{end},slaac,{subnet.cidr.prefixlen},{lease_time}
dhcp-option=option6:dns-server,[{subnet.gateway}]
dhcp-option=option6:domain-search,{domain}
{route}ra-param={bridge},{RA_INTERVAL},{lifetime}
"""
