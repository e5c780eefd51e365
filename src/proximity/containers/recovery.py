"""What interrupted operations and outside changes leave behind, and the repair of each: pure.

The identity of a managed container is its MAC: the reservation holds it, and the container's
``net0`` carries it as ``hwaddr``. From the reservations, the containers and the directories
of half-built containers, :func:`plan_repairs` decides:

- an interrupted create whose container exists: link it (and start it if the create would have);
- an interrupted create whose container does not exist: release the reservation and its lease;
- an interrupted destroy whose container still exists: keep the reservation, and start the container
  again if the destroy had stopped it (destroy again to finish);
- an interrupted destroy whose container is gone: release the reservation;
- (garbage collection) a reservation that no container holds: release it; a container that
  holds a reservation but is not linked to it: link it; a container on the bridge with no
  reservation: adopt it (reserve its MAC an address and a name, so it never loses them);
- a half-built container directory: remove it.

An operation whose process still runs is never touched, nor one of a kind not listed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from proximity.containers.base import Container, Net0
from proximity.network.reservations import Intent, Reservation

LINK, RELEASE, KEEP, ADOPT, REMOVE = "link", "release", "keep", "adopt", "remove"
OPERATIONS = ("create", "destroy")  # the operations whose interruption recovery settles


class RepairFailure(str):
    """A repair that could not be made: its text says what and why (a ``str``, so it prints as one)."""


@dataclass(frozen=True)
class Repair:
    kind: str  # one of LINK, RELEASE, KEEP, ADOPT, REMOVE
    reservation: Reservation | None = None  # LINK, RELEASE, KEEP
    container: Container | None = None  # LINK, KEEP, ADOPT
    path: Path | None = None  # REMOVE
    start: bool = False  # LINK, KEEP: start the container (the create asked for it; the destroy stopped it)
    elsewhere: str | None = None  # RELEASE: the other zone's bridge its container is on (an interrupted `ct move`)

    @property
    def subject(self) -> str:
        """What is orphaned, in a few words: a hostname, a container or a directory."""
        if self.kind == REMOVE:
            return f"directory {self.path.name}"
        return f"CT {self.container.vmid}" if self.kind == ADOPT else self.reservation.hostname

    @property
    def orphan(self) -> str:
        """What is wrong, in words."""
        r, c = self.reservation, self.container
        if self.kind == REMOVE:
            return f"half-built container directory {self.path}"
        if self.kind == ADOPT:
            return f"CT {c.vmid} ({c.hostname}) is on the bridge with no reservation (MAC {mac_of(c)})"
        why = f"an interrupted {r.intent.op}" if r.intent else "a reservation"
        if self.kind == RELEASE and self.elsewhere:
            return f"{why} of {r.hostname} ({r.ip}, {r.mac}) is left behind: its container is on {self.elsewhere}"
        if self.kind == RELEASE:
            return f"{why} of {r.hostname} ({r.ip}, {r.mac}) has no container"
        if self.kind == KEEP:
            return f"{why} of {r.hostname}: CT {c.vmid} still exists"
        return f"{why} of {r.hostname} ({r.ip}, {r.mac}) is not linked to CT {c.vmid}, which holds its MAC"

    def describe(self) -> str:
        """What the repair does."""
        r, c = self.reservation, self.container
        return {
            LINK: lambda: f"link CT {c.vmid} ({c.hostname}) to its reservation {r.ip}"
                          + (" and start it" if self.start else ""),
            RELEASE: lambda: f"release the reservation of {r.hostname} ({r.ip}, {r.mac}) and its lease: " + (
                f"its container is on {self.elsewhere}, another zone's bridge" if self.elsewhere
                else "no container holds it"),
            KEEP: lambda: f"keep the reservation of {r.hostname}: the interrupted destroy left CT {c.vmid} "
                          "in place" + (", so start it again" if self.start else "") + " (destroy it again to finish)",
            ADOPT: lambda: f"reserve an address and the name {c.hostname} for CT {c.vmid}, on the bridge "
                           f"with MAC {mac_of(c)} and no reservation",
            REMOVE: lambda: f"remove the half-built container directory {self.path}",
        }[self.kind]()


def mac_of(container: Container) -> str | None:
    mac = Net0.parse(container.net0).get("hwaddr") if container.net0 else None
    return mac.lower() if mac else None


def plan_repairs(reservations: Iterable[Reservation], containers: Iterable[Container], *, bridge: str,
                 alive: Callable[[Intent], bool], strays: Iterable[Path] = (),
                 interrupted_only: bool = False, reserved_elsewhere: Iterable[str] = (),
                 other_bridges: Iterable[str] = ()) -> list[Repair]:
    """The repairs, in the order they should run.

    ``alive(intent)`` says whether the process of an intent still runs. With
    ``interrupted_only`` only interrupted operations are settled (crash recovery); otherwise
    every orphan is (garbage collection). ``reserved_elsewhere``: the MACs other zones' reservations hold
    (MACs are unique across the host): a container with one is that zone's, never adopted here.
    ``other_bridges``: the other zones' bridges; a reservation whose container is on one of them was left
    behind by an interrupted move, and is released (garbage collection only).
    """
    other_bridges = set(other_bridges)
    reservations, containers = list(reservations), list(containers)
    by_mac = {mac: c for c in containers if (mac := mac_of(c))}
    repairs = []
    for r in reservations:
        if r.intent is not None and alive(r.intent):
            continue  # its process is still at work
        if r.intent is None and interrupted_only:
            continue
        if r.intent is not None and r.intent.op not in OPERATIONS:
            continue  # an operation this module does not know how to settle
        container = by_mac.get(r.mac)
        start = r.intent is not None and r.intent.start and container is not None and container.state != "running"
        on = Net0.parse(container.net0 or "").get("bridge") if container is not None else None
        if container is None:
            repairs.append(Repair(RELEASE, r))
        elif r.intent is None and on in other_bridges:  # (never when interrupted_only: see above)
            repairs.append(Repair(RELEASE, r, elsewhere=on))
        elif r.intent is not None and r.intent.op == "destroy":
            repairs.append(Repair(KEEP, r, container, start=start))
        elif r.intent is not None or r.vmid != container.vmid:
            repairs.append(Repair(LINK, r, container, start=start))
    if not interrupted_only:
        reserved = {r.mac for r in reservations} | set(reserved_elsewhere)
        repairs += [Repair(ADOPT, container=c) for c in containers
                    if Net0.parse(c.net0 or "").get("bridge") == bridge and mac_of(c)
                    and mac_of(c) not in reserved]
    repairs += [Repair(REMOVE, path=path) for path in strays]
    return repairs


__all__ = ["ADOPT", "KEEP", "LINK", "OPERATIONS", "RELEASE", "REMOVE", "Repair", "RepairFailure", "mac_of",
           "plan_repairs"]
