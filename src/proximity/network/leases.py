"""The dnsmasq lease file, as dnsmasq really writes it.

IPv4 lines are ``EXPIRY MAC IP HOSTNAME CLIENT-ID`` (hostname ``*`` when the
client sent none). With DHCPv6 on there is a ``duid SERVER-DUID`` line and
IPv6 lines ``EXPIRY IAID IPV6 HOSTNAME CLIENT-DUID``, after all the IPv4 ones: the
IAID in decimal, ``T`` before it for a temporary address (dnsmasq's ``lease.c``).
A v6 lease keeps the IAID where a v4 one has the MAC, and the DUID as its client id.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, fields
from datetime import datetime

log = logging.getLogger(__name__)

IAID_RE = re.compile(r"^T?[0-9]{1,10}$")
HEX_ID_RE = re.compile(r"^(?:[0-9a-f]{2}:)*[0-9a-f]{2}$|^\*$", re.I)  # a DUID (or none)
MAC_RE = re.compile(r"^(?:[0-9a-f]{2}:){5}[0-9a-f]{2}$|^\*$|^(?:[0-9a-f]{2}:)*[0-9a-f]{2}-(?:[0-9a-f]{2}:)*[0-9a-f]{2}$", re.I)


@dataclass(frozen=True)
class Lease:
    expiry: int  # seconds since the epoch; 0 for an infinite lease
    mac: str  # for IPv6 leases: the IAID
    ip: str
    hostname: str | None
    client_id: str | None

    @property
    def version(self) -> int:
        """4 or 6: the family of its address."""
        return 6 if ":" in self.ip else 4

    @property
    def iaid(self) -> str | None:
        """The DHCPv6 identity association (``T``-prefixed for a temporary address); None for IPv4."""
        return self.mac if self.version == 6 else None

    @property
    def duid(self) -> str | None:
        """The DHCPv6 client's DUID; None for IPv4."""
        return self.client_id if self.version == 6 else None

    def client_text(self) -> str:
        """Who holds it, as a table shows it: the MAC, or for IPv6 the IAID (the DUID is in client_id)."""
        return self.mac if self.version == 4 else f"IAID {self.mac}"

    def as_dict(self) -> dict[str, object]:
        # Its fields as they are (all plain values): asdict's deep copy took ~9 ms for 1,000 leases.
        return {name: getattr(self, name) for name in _LEASE_FIELDS}

    def expires_text(self) -> str:
        """The expiry in local time; a time past what a clock can show is shown as its number (the lease
        still holds its address: dnsmasq keeps it)."""
        if self.expiry == 0:
            return "never"
        try:
            return datetime.fromtimestamp(self.expiry).strftime("%Y-%m-%d %H:%M")
        except (OverflowError, OSError, ValueError):
            return f"at {self.expiry} (past year 9999)"


_LEASE_FIELDS = tuple(field.name for field in fields(Lease))


def parse_leases(text: str, source: str = "lease file") -> tuple[list[Lease], list[str]]:
    """Leases in file order, and one warning per malformed line (naming its number)."""
    leases: list[Lease] = []
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == "duid":
            continue
        lease = _parse_line(fields)
        if lease is None:
            warning = f"{source} line {number}: skipped malformed lease {line.strip()!r}"
            log.warning(warning)
            warnings.append(warning)
        else:
            leases.append(lease)
    return leases, warnings


def server_duid(text: str) -> str | None:
    """dnsmasq's own DUID, from its ``duid`` line (None: no DHCPv6 has run, or the line is malformed)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "duid" and HEX_ID_RE.match(fields[1]) and fields[1] != "*":
            return fields[1].lower()
    return None


def _parse_line(fields: list[str]) -> Lease | None:
    if len(fields) != 5 or not fields[0].isascii() or not fields[0].isdigit():
        return None
    if any("\ufffd" in field for field in fields):  # a byte that is not UTF-8 (read with errors="replace")
        return None
    expiry, mac, ip, hostname, client_id = fields
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 4 and not MAC_RE.match(mac):
        return None
    if address.version == 6 and not (IAID_RE.match(mac) and HEX_ID_RE.match(client_id)):
        return None
    return Lease(
        expiry=int(expiry),
        mac=mac.lower() if address.version == 4 else mac,
        ip=str(address),
        hostname=None if hostname == "*" else hostname,
        client_id=None if client_id == "*" else (client_id if address.version == 4 else client_id.lower()),
    )
