"""What Proximity chose for the zones, kept so that it never changes: ``STATE_DIR/zones.json``.

It holds the install's ULA /48 and, per zone, the IPv4 subnet allocated when its table named
none and the subnet ID of its /64 (IPv6 ``auto``)::

    {"version": 1, "ula": "fd4c:1f20:a9b3::/48",
     "zones": {"web": {"ipv4": "10.10.1.0/24", "ipv6_id": 1}, "prox-net": {"ipv6_id": 2}}}

A zone's entry stays when the zone leaves proximity.toml (commented out for a while, it comes
back with the same networks); :meth:`ZoneState.release` drops it, for ``zone delete``. A
damaged file is refused, never replaced: allocating afresh would renumber every zone.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from proximity.errors import HostError
from proximity.spec.alloc import ULA_PREFIX

if TYPE_CHECKING:
    from proximity.host import Host
    from proximity.settings import Settings

VERSION = 1


@dataclass(frozen=True)
class ZoneAllocation:
    ipv4: ipaddress.IPv4Network | None = None  # allocated because the zone's table named no subnet
    ipv6_id: int | None = None  # the 16-bit subnet ID of its /64 of the ULA prefix


@dataclass(frozen=True)
class ZoneState:
    ula: ipaddress.IPv6Network | None = None  # the install's /48; None until a zone first needs it
    zones: Mapping[str, ZoneAllocation] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, zone: str) -> ZoneAllocation:
        return self.zones.get(zone, ZoneAllocation())

    def with_zone(self, zone: str, allocation: ZoneAllocation) -> ZoneState:
        zones = {**self.zones, zone: allocation}
        return replace(self, zones=MappingProxyType({k: v for k, v in zones.items() if v != ZoneAllocation()}))

    def release(self, zone: str) -> ZoneState:
        """Without ``zone``'s allocations: its networks may go to the next zone that needs one."""
        return replace(self, zones=MappingProxyType({k: v for k, v in self.zones.items() if k != zone}))


def state_file(settings: Settings) -> Path:
    return settings.state_dir / "zones.json"


def parse_state(text: str | None, where: str = "zones.json") -> ZoneState:
    """The state from the file's text (None: no file yet, nothing chosen); HostError if damaged."""
    if text is None:
        return ZoneState()
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"no \"version\": {VERSION}")
        ula = data.get("ula")
        if ula is not None:
            ula = ipaddress.IPv6Network(ula)
            if ula.prefixlen != 48 or not ula.subnet_of(ULA_PREFIX):
                raise ValueError(f"ula {ula} is not an fd00::/8 /48")
        zones = {}
        for name, entry in (data.get("zones") or {}).items():
            if not isinstance(entry, dict) or set(entry) - {"ipv4", "ipv6_id"}:
                raise ValueError(f"zone {name!r}: {entry!r} is not {{\"ipv4\": ..., \"ipv6_id\": ...}}")
            ipv4, ipv6_id = entry.get("ipv4"), entry.get("ipv6_id")
            if ipv6_id is not None and (type(ipv6_id) is not int or not 0 <= ipv6_id < 1 << 16):
                raise ValueError(f"zone {name!r}: ipv6_id {ipv6_id!r} is not a 16-bit number")
            zones[name] = ZoneAllocation(ipaddress.IPv4Network(ipv4) if ipv4 is not None else None, ipv6_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise HostError(
            f"{where} is damaged ({exc}); it records the zones' allocated subnets and the ULA prefix: "
            "restore it from a backup, or move it away to allocate anew (zones without a subnet in "
            "proximity.toml, and every IPv6 'auto' zone, then get new addresses)"
        ) from None
    return ZoneState(ula, MappingProxyType(zones))


def render_state(state: ZoneState) -> str:
    zones = {}
    for name, a in sorted(state.zones.items()):
        entry = {"ipv4": str(a.ipv4) if a.ipv4 else None, "ipv6_id": a.ipv6_id}
        zones[name] = {k: v for k, v in entry.items() if v is not None}
    return json.dumps({"version": VERSION, "ula": str(state.ula) if state.ula else None, "zones": zones},
                      indent=2) + "\n"


def load_state(host: Host, settings: Settings) -> ZoneState:
    path = state_file(settings)
    return parse_state(host.read_text(path), str(path))


def save_state(host: Host, settings: Settings, state: ZoneState) -> None:
    """Write the state atomically (through the host, so a dry run only records it)."""
    host.write_text(state_file(settings), render_state(state), mode=0o644)
