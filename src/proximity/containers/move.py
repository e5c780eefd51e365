"""`ct move HOST --zone NAME`: a managed container changes zones and keeps its MAC.

Reserve the same hostname (and MAC) in the new zone, stop the container, point net0 at the new
zone's bridge, start it again so it asks the new zone's dnsmasq for its new lease at once, then
release the old reservation and its lease (``dhcp_release`` on the old bridge). Each step registers
its undo first; a failure puts the container back on its old bridge with its old reservation.
A mixin of :class:`~proximity.containers.manager.ContainerManager` (the zone the container is in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from proximity.containers.base import BackendError, Net0, StillRunning
from proximity.containers.guest_firewall import allow_dhcp, applies
from proximity.errors import ConflictError, NotFoundError
from proximity.host import wait_for
from proximity.revert import Reverter

if TYPE_CHECKING:
    from proximity.containers.manager import ContainerManager


@dataclass
class MoveReport:
    vmid: int
    hostname: str
    from_zone: str
    zone: str
    dry_run: bool
    mac: str
    old_ip: str
    ip: str
    dns_name: str
    net0: str
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class Move:
    """``move`` (mixed into ContainerManager)."""

    def move(self: ContainerManager, ref: str, target: ContainerManager, *, dry_run: bool = False,
             timeout: float = 30, progress: Callable[[str], None] = lambda step: None) -> MoveReport:
        here, there = self.settings, target.settings
        if there.zone == here.zone:
            raise ConflictError(f"CT {ref} is in zone {here.zone} already: name another zone with --zone")
        container = self.backend.status(self.resolve(ref))
        old = self._reservation_of(container, self.reservations.all())
        if old is None or Net0.parse(container.net0 or "").get("bridge") != here.bridge:
            raise NotFoundError(f"CT {container.vmid} ({container.hostname}) is not a managed container of zone "
                                f"{here.zone}", fix=f"see `proximity ct list`; a container on vmbr0 joins a zone with "
                                                    f"`proximity migrate {container.vmid} --zone {there.zone}`")
        target.network.require_up(there)
        name, vmid, was_running = old.hostname, container.vmid, container.state == "running"
        net0 = str(Net0({**Net0.parse(container.net0).options, "bridge": there.bridge}))
        if dry_run:  # the same admission (name in use, a full pool), saving nothing
            new = target.reservations.reserve(name, target._leases(), old.mac, save=False, move_from=here.zone)
        else:
            with self.reservations.locked():  # one lock for every zone's reservations (the host's state directory)
                new = target.reservations.reserve(name, target._leases(), old.mac, move_from=here.zone)
                target.reservations.assign(name, vmid)
        report = MoveReport(vmid, container.hostname, here.zone, there.zone, dry_run, old.mac, old.ip, new.ip,
                            f"{name}.{there.domain}", net0)

        def step(text: str) -> None:
            report.steps.append(text)
            progress(text)

        plan = [f"reserve {new.ip} and the name {report.dns_name} for MAC {old.mac} in zone {there.zone}",
                *([f"shut down CT {vmid}"] if was_running else []), f"set net0 to {net0}",
                *([f"start CT {vmid}: it takes its lease from {there.bridge}",
                   f"verify the lease {new.ip} within {timeout:.0f} s"] if was_running else []),
                f"release {old.ip} ({name}.{here.domain}) and its lease in zone {here.zone}"]
        if dry_run:
            for text in plan:
                step(text)
            return report
        with Reverter() as revert:
            revert.add(f"release the reservation of {name} in zone {there.zone}", lambda: target._forget(name, new))
            try:
                step(plan[0])
                target._wait_resolvable(new)
                if was_running:
                    revert.add(f"start CT {vmid} again", lambda: self.backend.start(vmid))
                    step(self._stop_gracefully(vmid))
                revert.add(f"put net0 back on {here.bridge}", lambda: self._net0_back(vmid, container.net0))
                self.backend.set_net0(vmid, net0)
                step(f"net0 set to {net0}")
                if applies(self.backend, net0):
                    step(allow_dhcp(self.backend, vmid) or f"DHCP allowed through CT {vmid}'s guest firewall")
                if was_running:
                    self.backend.start(vmid)
                    step("started")
                    leased = lambda: any(l.mac == new.mac and l.ip == new.ip for l in target._leases())  # noqa: E731
                    if not wait_for(leased, timeout, interval=0.1):
                        raise BackendError(f"no lease for {new.mac} ({new.ip}) from {there.bridge} within {timeout:.0f} s")
                    step(f"holds {new.ip} and resolves as {report.dns_name}")
                self._forget(name, old)
                step(plan[-1])
            except StillRunning as exc:
                revert.success()  # undoing now would race the task still running in Proxmox
                raise BackendError(f"the move of CT {vmid} stopped: {exc}. Not undone: it holds reservations in "
                                   f"zones {here.zone} ({old.ip}) and {there.zone} ({new.ip}); when the task has "
                                   f"ended, run the move again or `proximity gc`") from exc
            except Exception as exc:
                problems = revert.fail()
                undone = (f"undoing it had problems: {'; '.join(problems)}" if problems else
                          f"it is back in zone {here.zone} with {old.ip}")
                raise BackendError(f"the move of CT {vmid} ({name}) to zone {there.zone} failed; {undone}. "
                                   f"What failed: {exc}") from exc
            revert.success()
        return report

    def _net0_back(self: ContainerManager, vmid: int, net0: str) -> None:
        if self.backend.status(vmid).state == "running":  # the backend changes net0 of a stopped container only
            self.backend.stop(vmid)
        self.backend.set_net0(vmid, net0)
