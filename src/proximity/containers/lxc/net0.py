"""net0 for the local LXC backend: the Proxmox property string checked for what this backend can do."""

from __future__ import annotations

import ipaddress
import random
import re

from proximity.containers.base import BackendError, Net0

_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_NET0_KEYS = {"name", "bridge", "hwaddr", "ip", "gw", "ip6", "gw6", "mtu", "firewall", "rate", "tag",
              "trunks", "type", "link_down"}


def random_mac() -> str:
    """A random unicast, locally administered MAC (as Proxmox generates for a new net0)."""
    octets = [random.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{o:02X}" for o in octets)


def parse_net0(value: str) -> Net0:
    """Parse and check a Proxmox ``net0`` string for this backend; BackendError names the bad part."""
    net = Net0.parse(value)
    opts = net.options
    unknown = sorted(set(opts) - _NET0_KEYS)
    if unknown:
        raise BackendError(f"net0 {value!r}: unknown option(s) {', '.join(unknown)}; "
                           f"known are {', '.join(sorted(_NET0_KEYS))}")
    if not opts.get("bridge"):
        raise BackendError(f"net0 {value!r} names no bridge: add bridge=NAME (Proximity's bridge, or vmbr0)")
    for key in ("bridge", "name"):
        if key in opts and not _IFNAME_RE.fullmatch(opts[key]):
            raise BackendError(f"net0 {key}={opts[key]!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
    if opts.get("type", "veth") != "veth":
        raise BackendError(f"net0 type={opts['type']!r}: LXC containers only have type=veth")
    mac = opts.get("hwaddr")
    if mac is not None and (not _MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1 or mac.replace(":", "") == "0" * 12):
        raise BackendError(f"net0 hwaddr={mac!r} is not a unicast MAC address; use e.g. {random_mac()}")
    ip = opts.get("ip")
    if ip is not None and ip not in ("dhcp", "manual"):
        if "/" not in ip:
            raise BackendError(f"net0 ip={ip!r} needs a prefix length (ip=198.51.100.50/24), or use ip=dhcp")
        try:
            iface = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise BackendError(f"net0 ip={ip!r} is not an IPv4 address with prefix: {exc}") from None
        gw = opts.get("gw")
        if gw is not None:
            try:
                ipaddress.IPv4Address(gw)
            except ValueError:
                raise BackendError(f"net0 gw={gw!r} is not an IPv4 address") from None
            if ipaddress.IPv4Address(gw) == iface.ip:
                raise BackendError(f"net0 gw={gw} is the container's own address")
    elif "gw" in opts:
        raise BackendError(f"net0 gw={opts['gw']} only goes with a static ip=CIDR (not ip={ip})")
    ip6 = opts.get("ip6")
    if ip6 is not None and ip6 not in ("dhcp", "auto", "manual"):
        try:
            ipaddress.IPv6Interface(ip6)
        except ValueError as exc:
            raise BackendError(f"net0 ip6={ip6!r} is not an IPv6 address with prefix: {exc}") from None
        if "/" not in ip6:
            raise BackendError(f"net0 ip6={ip6!r} needs a prefix length")
    if "gw6" in opts:
        try:
            ipaddress.IPv6Address(opts["gw6"])
        except ValueError:
            raise BackendError(f"net0 gw6={opts['gw6']!r} is not an IPv6 address") from None
    if "mtu" in opts and not (opts["mtu"].isdigit() and 576 <= int(opts["mtu"]) <= 65535):
        raise BackendError(f"net0 mtu={opts['mtu']!r} must be a number from 576 to 65535")
    return net
