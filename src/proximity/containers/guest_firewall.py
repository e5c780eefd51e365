"""DHCP through a Proxmox guest firewall: a NIC with ``firewall=1`` gets no lease once the guest's
firewall is enabled, unless the guest's firewall options say ``dhcp: 1`` (default 0).

pve-firewall and proxmox-firewall drop a firewalled guest's DHCP, v4 (68->67, 67->68) and v6
(546->547, 547->546), unless ``dhcp`` is 1. Proximity sets that one option after it creates or
migrates a container whose net0 has firewall=1, and never ``enable``: whether the guest firewall
is on is the admin's choice. It works the same whether the firewall is on now or later.

IPv6: ``dhcp`` covers DHCPv6 as well. SLAAC needs router advertisements in and router and
neighbour solicitations out, which ``ndp`` allows; ``ndp`` defaults to 1, so nothing is written
for it (the doctor names a guest whose ``ndp`` was set to 0). ``radv`` lets the guest *send*
router advertisements: a client never needs that, and it stays off (a rogue router otherwise).
"""

from __future__ import annotations

from typing import Any

from proximity.containers.base import BackendError, Net0
from proximity.errors import ProximityError

TRUE = ("1", "on", "yes", "true")  # PVE::JSONSchema::parse_boolean


def applies(backend: Any, net0: str) -> bool:
    """Whether the backend has a guest firewall (Proxmox) and this NIC goes through it."""
    if not hasattr(backend, "allow_guest_dhcp"):
        return False
    try:
        return (Net0.parse(net0).get("firewall") or "0").lower() in TRUE
    except BackendError:
        return False


def dhcp_fix(node: str, vmid: int) -> str:
    return f"pvesh set /nodes/{node}/lxc/{vmid}/firewall/options --dhcp 1"


def allow_dhcp(backend: Any, vmid: int) -> str | None:
    """Set ``dhcp: 1``; None when done, else what went wrong and the fix (the caller goes on)."""
    try:
        backend.allow_guest_dhcp(vmid)
        return None
    except ProximityError as exc:
        return (f"the guest firewall option dhcp of CT {vmid} could not be set to 1 ({exc}); once its firewall "
                f"is enabled, CT {vmid} gets no DHCP lease. Fix: `{dhcp_fix(backend.config.node, vmid)}` "
                "on the Proxmox host")


def problems(options: dict[str, Any], ipv6: bool) -> list[str]:
    """What an enabled guest firewall with these options blocks for a DHCP client on the bridge."""
    def value(key: str, default: int) -> int:
        raw = options.get(key, default)
        return 1 if str(raw).lower() in TRUE else 0

    if not value("enable", 0):
        return []  # off: nothing is filtered (Proximity leaves it off or on, as the admin chose)
    found = [] if value("dhcp", 0) else ["DHCP (dhcp is not 1)"]
    if ipv6 and not value("ndp", 1):
        found.append("IPv6 router advertisements and neighbour discovery (ndp is 0)")
    return found
