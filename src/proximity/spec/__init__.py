"""What the admin declared, as pure data: the zones (isolated dual-stack networks) and their checks.

- :mod:`~proximity.spec.config`: ``[zones.NAME]`` tables of proximity.toml -> :class:`ZoneConfig`
- :mod:`~proximity.spec.naming`: zone names, bridge names, per-zone paths and services
- :mod:`~proximity.spec.checks`: checks shared with the settings (domain, gateway, DHCP range)
- :mod:`~proximity.spec.alloc`: a free IPv4 /24, the ULA /48 and each zone's /64
- :mod:`~proximity.spec.overlaps`: zones against each other and the host's addresses and routes
- :mod:`~proximity.spec.state`: the allocations kept in ``STATE_DIR/zones.json``
- :mod:`~proximity.spec.zones`: :func:`resolve` -> :class:`HostSpec` of :class:`ZoneSpec`
- :mod:`~proximity.spec.macs`: a container MAC unique across every zone

The names below are importable from here; they load on first use, because the settings import
``spec.config`` while ``spec.zones`` builds on the settings.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ZoneConfig": "config", "parse_zones": "config", "parse_ipv6_mode": "config",
    "DEFAULT_ZONE": "naming", "ZonePaths": "naming", "bridge_name": "naming", "check_zone_name": "naming",
    "Claim": "overlaps", "host_claims": "overlaps",
    "ZoneState": "state", "load_state": "state", "save_state": "state", "parse_state": "state",
    "render_state": "state",
    "HostSpec": "zones", "SubnetSpec": "zones", "ZoneSpec": "zones", "resolve": "zones",
    "free_mac": "macs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
