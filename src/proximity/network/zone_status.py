"""Every zone's health, each judged against the host's one table, for `zone list`, `status` and the API."""

from __future__ import annotations

from dataclasses import replace

from proximity.network import intent as intents
from proximity.network.health import NetworkStatus, health
from proximity.network.leases import parse_leases
from proximity.network.reconciler import NetworkManager
from proximity.spec.view import ZoneSettings, default_view


def zone_statuses(manager: NetworkManager) -> list[tuple[ZoneSettings, NetworkStatus]]:
    """(view, status) of every zone, the default first. A zone that `down --zone` took down reads ``down``."""
    obs = manager.observe(probe=True)
    default, zones, _ = manager.zone_views(obs)
    firewall, pending = manager.firewall_spec(obs), manager.pending(obs)
    found = [(default, health(default, obs, firewall, pending.get(default.zone, [])))]
    down = obs.intent.zones_down if obs.intent else ()
    for view, _ in zones:
        zone_obs = manager.observe_zone(view, obs, probe=True)
        if view.zone in down:
            zone_obs = replace(zone_obs, intent=intents.Intent(intents.DOWN, "record"))
        found.append((view, health(view, zone_obs, firewall, pending.get(view.zone, []))))
    return found


def with_default(manager: NetworkManager, default: NetworkStatus | None) -> list[tuple[ZoneSettings, NetworkStatus]]:
    """Every zone's (view, status) with ``default`` as the default zone's status (the caller's own: the
    service's snapshot, the CLI's reprobed one). prox-net alone (no zones, IPv4 only) reads nothing more."""
    s = manager.settings
    if not s.zones and s.ipv6 == "off":
        return [(default_view(s), default)]
    found = zone_statuses(manager)
    return [(found[0][0], default if default is not None else found[0][1]), *found[1:]]


def zone_row(view: ZoneSettings, status: NetworkStatus) -> dict:
    """One zone as `zone list --json` and ``GET /api/v1/zones`` show it."""
    subnets = [str(view.subnet)] + ([str(view.ipv6_gateway.network)] if view.ipv6_gateway else [])
    return {
        "name": view.zone, "bridge": view.bridge, "subnets": subnets, "gateway": str(view.gateway.ip),
        "gateway6": str(view.ipv6_gateway.ip) if view.ipv6_gateway else None, "domain": view.domain,
        "dhcp_range": f"{view.dhcp_start}-{view.dhcp_end}",
        "ipv6_prefix": str(view.ipv6_gateway.network) if view.ipv6_gateway else None,
        "ipv6_nat": view.ipv6_nat, "host_services": view.host_services, "default": view.is_default,
        "service": view.service_name, "health": status.health_status, "reasons": status.reasons,
        "leases_in_use": status.leases_in_use, "pool_size": status.pool_size,
        "leases6_in_use": _leases6(view) if view.ipv6_gateway else 0,  # DHCPv6 leases (SLAAC leaves none)
    }


_COUNTED: dict = {}  # leases file -> ((inode, mtime, size), count): parsed again only when dnsmasq rewrote it


def _leases6(view: ZoneSettings) -> int:
    path = view.leases_file
    try:
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if _COUNTED.get(path, (None,))[0] != key:
            text = path.read_text(errors="replace")
            _COUNTED[path] = (key, sum(1 for lease in parse_leases(text, str(path))[0] if lease.version == 6))
    except OSError:
        return 0
    return _COUNTED[path][1]


def zone_status(manager: NetworkManager, name: str) -> NetworkStatus:
    for view, status in zone_statuses(manager):
        if view.zone == name:
            return status
    manager.zones(manager.observe())  # a damaged zones.json says so
    from proximity.errors import NotFoundError

    raise NotFoundError(f"there is no zone {name!r} (`proximity zone list`)")
