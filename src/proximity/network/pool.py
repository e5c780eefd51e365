"""How full the DHCP pool is, for a client without a reservation (the probe's client, a stranger).

dnsmasq never gives a ``dhcp-host`` address to another MAC, and never a leased one before its
lease expires: a client without a reservation gets an address only if one in the range is neither
reserved nor leased. Reserved containers still get theirs when none is left, so a full pool is a
warning for unknown clients, not broken DHCP.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

from proximity.network.leases import Lease
from proximity.network.reservations import Reservation
from proximity.settings import Settings


@dataclass(frozen=True)
class PoolUsage:
    size: int
    reserved: int  # addresses of the range held by a reservation
    leased: int  # ... leased, unexpired, to a client without one (the asking client's own lease excluded)

    @property
    def free(self) -> int:
        return max(0, self.size - self.reserved - self.leased)

    def describe(self, settings: Settings) -> str:
        return (f"{self.free} of the {self.size} addresses of {settings.dhcp_start}-{settings.dhcp_end} free "
                f"({self.reserved} reserved, {self.leased} leased to clients without a reservation)")

    def full_message(self, settings: Settings) -> str:
        return (f"the DHCP pool is full for clients without a reservation: all {self.size} addresses of "
                f"{settings.dhcp_start}-{settings.dhcp_end} are taken ({self.reserved} reserved, {self.leased} "
                f"leased to clients without a reservation); reserved containers still get their addresses")

    def fix(self, settings: Settings) -> str:
        if self.leased > self.reserved:  # strangers (spoofed MACs?) hold the pool
            return (f"see who holds the leases (`{settings.command('leases')}`); stop unknown clients, shorten "
                    f"lease_time ({settings.lease_time}) or widen dhcp_start/dhcp_end in the settings, then "
                    f"`{settings.command('up')}`")
        return (f"widen dhcp_start/dhcp_end in the settings and run `{settings.command('up')}`, or destroy "
                f"containers you no longer need (`{settings.command('ct destroy NAME')}`)")


def pool_usage(settings: Settings, reservations: Iterable[Reservation], leases: Iterable[Lease],
               client_mac: str | None = None, now: float | None = None) -> PoolUsage:
    s, now = settings, time.time() if now is None else now
    start, end = int(s.dhcp_start), int(s.dhcp_end)

    def in_range(ip: str) -> int | None:
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return None
        return value if start <= value <= end else None

    reserved = {v for r in reservations if (v := in_range(str(r.ip))) is not None}
    macs = {str(r.mac).lower() for r in reservations}
    leased = {v for lease in leases
              if (lease.expiry == 0 or lease.expiry > now) and lease.mac not in macs and lease.mac != client_mac
              and (v := in_range(lease.ip)) is not None} - reserved
    return PoolUsage(end - start + 1, len(reserved), len(leased))
