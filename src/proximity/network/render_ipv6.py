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

from proximity.network.reservations import Reservation
from proximity.spec.zones import SubnetSpec

RA_INTERVAL = 60  # seconds between unsolicited advertisements (a soliciting guest is answered at once)
ROUTER_LIFETIME = 1800  # seconds, RFC 4861's default for a router with a route out


def reserved_ipv6(reservation_ip: str, ipv4: SubnetSpec, ipv6: SubnetSpec) -> ipaddress.IPv6Address:
    """A reserved container's stable IPv6 address: the IPv6 prefix plus its IPv4 address' offset."""
    offset = int(ipaddress.IPv4Address(reservation_ip)) - int(ipv4.cidr.network_address)
    if not 0 < offset < int(ipv4.cidr.num_addresses):
        raise ValueError(f"{reservation_ip} is not an address of {ipv4.cidr}")
    return ipaddress.IPv6Address(int(ipv6.cidr.network_address) + offset)


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


def render_dhcp_hosts_dual(reservations: list[Reservation], ipv4: SubnetSpec, ipv6: SubnetSpec) -> str:
    """dnsmasq's dhcp-hostsfile with both families: MAC, IPv4, [IPv6], hostname (one line each)."""
    return "".join(f"{r.mac},{r.ip},[{reserved_ipv6(r.ip, ipv4, ipv6)}],{r.hostname}\n" for r in reservations)


def render_addn_hosts_dual(reservations: list[Reservation], domain: str, ipv4: SubnetSpec,
                           ipv6: SubnetSpec) -> str:
    """The names before first boot: an A and an AAAA record for every reserved container."""
    return "".join(f"{r.ip} {r.hostname}.{domain} {r.hostname}\n"
                   f"{reserved_ipv6(r.ip, ipv4, ipv6)} {r.hostname}.{domain} {r.hostname}\n" for r in reservations)
