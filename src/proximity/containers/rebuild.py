"""`proximity gc --rebuild`: the reservations rebuilt from what exists, for a lost or damaged file.

The sources, strongest first:

1. dnsmasq's ``dhcp-hosts`` file (``MAC,IP,hostname``): what dnsmasq was last told, exactly the
   reservations as they were when they were last written;
2. the ``hosts`` file (``IP FQDN NAME``): a name and address whose MAC the container with that
   hostname on the bridge carries (when the ``dhcp-hosts`` line is lost);
3. the containers on the bridge with a MAC and none of the above: they keep the address their
   current lease holds (or get a free one), as ``gc`` adopts them.

Each reservation is linked to the container that carries its MAC. A reservation no container
holds is kept (it is what dnsmasq was handing out; a later ``proximity gc`` releases it), and the
first of two claims on one name, MAC or address wins; every such choice is named in the notes.
Intents (an interrupted create or destroy) cannot be rebuilt: what they left is a case for ``gc``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from proximity.containers.base import Container, Net0
from proximity.containers.recovery import mac_of
from proximity.network.leases import Lease
from proximity.network.reservations import MAC_RE, Reservation
from proximity.settings import Settings


@dataclass
class Rebuilt:
    reservations: list[Reservation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"reservations": [{"hostname": r.hostname, "mac": r.mac, "ip": r.ip, "vmid": r.vmid}
                                 for r in self.reservations], "notes": self.notes}


def rebuild(settings: Settings, dhcp_hosts: str | None, addn_hosts: str | None, containers: list[Container],
            leases: list[Lease]) -> Rebuilt:
    """The reservations that what exists describes (pure: the caller reads the files and the backend)."""
    s, out = settings, Rebuilt()
    on_bridge = [c for c in containers if Net0.parse(c.net0 or "").get("bridge") == s.bridge and mac_of(c)]
    by_mac = {mac_of(c): c for c in containers if mac_of(c)}

    def add(hostname: str, mac: str, ip: str, source: str) -> None:
        mac = mac.lower()
        for r in out.reservations:
            clash = ("name" if r.hostname.lower() == hostname.lower() else "MAC" if r.mac == mac
                     else "address" if r.ip == ip else None)
            if clash:
                out.notes.append(f"skipped {hostname} ({ip}, {mac}) from {source}: its {clash} is already "
                                 f"reserved for {r.hostname}")
                return
        container = by_mac.get(mac)
        out.reservations.append(Reservation(hostname, mac, ip, container.vmid if container else None))
        if container is None:
            out.notes.append(f"{hostname} ({ip}, {mac}) from {source}: no container carries its MAC; kept "
                             "(`proximity gc` releases it)")

    for number, line in enumerate((dhcp_hosts or "").splitlines(), start=1):
        parts = line.strip().split(",")
        if not line.strip():
            continue
        if len(parts) != 3 or not MAC_RE.match(parts[0]) or not _ipv4(parts[1]) or not parts[2]:
            out.notes.append(f"{s.dhcp_hosts_file} line {number}: skipped {line.strip()!r} (not MAC,IP,hostname)")
            continue
        add(parts[2], parts[0], parts[1], f"{s.dhcp_hosts_file} line {number}")
    for number, line in enumerate((addn_hosts or "").splitlines(), start=1):
        parts = line.split()
        if len(parts) < 2 or not _ipv4(parts[0]):
            continue
        name = parts[-1]
        if any(r.hostname.lower() == name.lower() or r.ip == parts[0] for r in out.reservations):
            continue  # already known from dhcp-hosts
        owner = next((c for c in on_bridge if c.hostname.split(".")[0].lower() == name.lower()), None)
        if owner is None:
            out.notes.append(f"{s.addn_hosts_file} line {number}: skipped {name} ({parts[0]}): no container on "
                             f"{s.bridge} has that name, so its MAC is unknown")
            continue
        add(name, mac_of(owner), parts[0], f"{s.addn_hosts_file} line {number}")
    pool = _pool(s)
    for c in on_bridge:
        mac = mac_of(c)
        if any(r.mac == mac for r in out.reservations):
            continue
        taken = {r.ip for r in out.reservations} | {l.ip for l in leases if l.mac != mac}
        leased = next((l.ip for l in leases if l.mac == mac and l.ip in pool and l.ip not in taken), None)
        ip = leased or next((a for a in pool if a not in taken), None)
        if ip is None:
            out.notes.append(f"CT {c.vmid} ({c.hostname}, {mac}) is on {s.bridge} but the pool is full: not reserved")
            continue
        name = c.hostname.split(".")[0]
        before = len(out.reservations)
        add(name, mac, ip, f"CT {c.vmid} on {s.bridge}" + (" and its lease" if leased else ", a free address"))
        if len(out.reservations) > before:
            out.reservations[-1] = replace(out.reservations[-1], vmid=c.vmid)
    return out


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _pool(settings: Settings) -> list[str]:
    start, end = int(settings.dhcp_start), int(settings.dhcp_end)
    return [str(ipaddress.IPv4Address(n)) for n in range(start, end + 1)]
