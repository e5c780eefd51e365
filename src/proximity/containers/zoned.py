"""The containers of every zone: which zone holds a container, and the listing of them all.

A hostname is unique per zone, not per host: ``web`` may live in two zones. A command given a
name and no ``--zone`` acts in the one zone that holds it, and refuses (asking for ``--zone``)
when two do. A container that no zone holds (on vmbr0, say) is the default zone's to act on, as
before zones (``migrate`` takes it from there).
"""

from __future__ import annotations

from proximity.containers.base import Container, ContainerBackend, Net0
from proximity.containers.manager import ContainerInfo, ContainerManager
from proximity.errors import ConflictError
from proximity.network.reconciler import NetworkManager
from proximity.network.zone_views import zone_view_of, zone_views


def managers(network: NetworkManager, backend: ContainerBackend, zone: str | None = None) -> list[ContainerManager]:
    """One manager per zone (the default zone's first), or zone ``zone``'s alone (NotFoundError naming the zones)."""
    views = zone_views(network)
    if zone is not None:
        return [ContainerManager(network, backend, zone_view_of(network, zone, views))]
    return [ContainerManager(network, backend, view) for view in views]


def locate(network: NetworkManager, backend: ContainerBackend, ref: str, zone: str | None = None) -> ContainerManager:
    """The manager of the zone holding ``ref`` (an id or hostname): ``zone``'s if given."""
    every = managers(network, backend, zone)
    if zone is not None or len(every) == 1:
        return every[0]
    containers = backend.list()
    holders = [m for m in every if _holds(m, ref, containers)]
    if len(holders) > 1:
        raise ConflictError(f"{ref!r} names containers in zones {', '.join(m.settings.zone for m in holders)}: "
                            "a name is unique per zone only", fix=f"pass --zone ZONE (e.g. --zone {holders[1].settings.zone})")
    return holders[0] if holders else every[0]


def _holds(manager: ContainerManager, ref: str, containers: list[Container]) -> bool:
    """A container of that name or id on the zone's bridge, or the zone's reservation of it."""
    numeric = ref.isascii() and ref.isdigit()
    matches = [c for c in containers if (c.vmid == int(ref) if numeric else c.hostname == ref)]
    reservations = manager.reservations.all()
    if any(manager._in_zone(c, reservations) for c in matches):
        return True
    if matches and numeric:
        return False  # the container is elsewhere; a stale reservation of its id does not make it this zone's
    return any((r.vmid == int(ref)) if numeric else r.hostname == ref for r in reservations)


def list_all(network: NetworkManager, backend: ContainerBackend, zone: str | None = None) -> list[ContainerInfo]:
    """Every container, each seen by the zone it is in (``zone``: that zone's alone). Interrupted
    commands of every zone are settled first."""
    every = managers(network, backend, zone)
    for manager in every:
        manager._recover()
    containers, found = backend.list(), []
    by_bridge = {m.settings.bridge: m for m in every}
    reservations = {m.settings.zone: m.reservations.all() for m in every}
    for container in containers:
        bridge = Net0.parse(container.net0).get("bridge") if container.net0 else None
        manager = by_bridge.get(bridge) if bridge else next(
            (m for m in every if m._reservation_of(container, reservations[m.settings.zone])), None)
        if manager is None and zone is not None:
            continue
        manager = manager or every[0]
        found.append(manager._info(container, reservations[manager.settings.zone]))
    return found


def recover_all(network: NetworkManager, backend: ContainerBackend) -> list[str]:
    """``recover`` in every zone: what interrupted commands left is finished or undone."""
    return [line for manager in managers(network, backend) for line in manager.recover()]
