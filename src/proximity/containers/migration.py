"""Migration: a container moves from vmbr0 to the managed bridge, or is rolled back.

Snapshot, shut down, switch net0 to the bridge with DHCP, start, verify; on failure, roll back to
the snapshot (or, where the storage cannot snapshot, write the old net0 back). A mixin of
:class:`~proximity.containers.manager.ContainerManager`, whose backend, network and reservations it uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from proximity.containers.base import BackendError, ContainerLocked, Net0, StillRunning, dns_label
from proximity.containers.guest_firewall import allow_dhcp, applies
from proximity.host import wait_for
from proximity.network.reservations import Reservation
from proximity.network.zone_views import zone_views
from proximity.revert import Reverter
from proximity.settings import SettingsError


@dataclass
class MigrationReport:
    vmid: int
    hostname: str
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    snapshot: str | None = None
    rollback: str = "snapshot"  # or "config-only": storage without snapshots (dir, NFS raw) or bind mounts
    ip: str | None = None
    dns_name: str | None = None
    old_net0: str = ""
    new_net0: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


DHCP_STEP = "allow DHCP through CT {vmid}'s guest firewall (option dhcp: 1; the firewall itself is left as it is)"


class MigrationError(BackendError):
    """Migration failed; the container was rolled back to its snapshot (or the message says why not)."""


class Migration:
    """``migrate`` and its steps (mixed into ContainerManager)."""

    def migrate(self, vmid: int, *, dry_run: bool = False, timeout: float = 60,
                progress: Callable[[str], None] = lambda step: None) -> MigrationReport:
        """Snapshot, shut down, switch net0 to the bridge with DHCP, start, verify; roll back on failure.

        Where the storage cannot snapshot (dir, NFS raw, bind mounts) the rollback is config-only:
        the old net0 is written back. A Proxmox task that timed out is never raced by a rollback.
        """
        container = self.backend.status(vmid)
        if container.lock:
            raise ContainerLocked(vmid, container.lock)
        old = Net0.parse(container.net0)
        if old.get("bridge") == self.settings.bridge:
            raise SettingsError(f"CT {vmid} ({container.hostname}) is already on {self.settings.bridge}")
        if old.get("bridge") in {v.bridge for v in zone_views(self.network)}:
            raise SettingsError(f"CT {vmid} ({container.hostname}) is on {old.get('bridge')}, a bridge of another zone",
                                fix=f"move it with `proximity ct move {vmid} --zone {self.settings.zone}`")
        name = dns_label(container.hostname)  # Proxmox allows an FQDN hostname; DNS on the bridge uses its first label
        self.network.get_container_network_config(name, self.settings)  # an RFC 1123 name or refuse
        self.network.require_up(self.settings)  # before `proximity up` the move could only fail and roll back
        can_snapshot = self.backend.can_snapshot(vmid)
        snapshot = f"proximity_premigrate_{time.strftime('%Y%m%d%H%M%S')}" if can_snapshot else None
        was_running = container.state == "running"
        report = MigrationReport(vmid, container.hostname, dry_run, snapshot=snapshot, old_net0=container.net0,
                                 rollback="snapshot" if can_snapshot else "config-only")

        def step(text: str) -> None:
            report.steps.append(text)
            progress(text)

        notes = []
        if name != container.hostname:
            notes.append(f"hostname {container.hostname} is an FQDN: its name on {self.settings.bridge} is {name}")
        if old.get("tag"):
            notes.append(f"VLAN tag={old.get('tag')} dropped from net0: {self.settings.bridge} has no ports, and "
                         "Proxmox refuses to start a container with a VLAN tag on such a bridge")
        if not can_snapshot:
            notes.append(f"CT {vmid}'s storage cannot snapshot (dir, NFS raw, or bind mounts): on failure the "
                         "rollback is config-only (the old net0 is written back; files are not rolled back)")

        if dry_run:  # the same admission the real run makes (name or address in use, a full pool), saving nothing
            planned = self.reservations.reserve(name, self._leases(), old.get("hwaddr"), save=False)
            report.new_net0 = self._migrated_net0(old, planned.mac)
            for text in [*notes, f"reserve {planned.ip} and the name {name} for MAC {planned.mac}", f"snapshot CT {vmid} as {snapshot}" if snapshot else "take no snapshot",
                         f"shut down CT {vmid} (stop by force if it takes over 30 s)" if was_running
                         else f"CT {vmid} is stopped", f"set net0 to {report.new_net0}",
                         *([DHCP_STEP.format(vmid=vmid)] if applies(self.backend, report.new_net0) else []),
                         f"start CT {vmid}", f"verify a lease and {name}.{self.settings.domain} within {timeout:.0f} s"]:
                step(text)
            return report

        for text in notes:
            step(text)
        with self.reservations.locked():  # refused (name or address in use): nothing has changed
            reservation = self.reservations.reserve(name, self._leases(), old.get("hwaddr"))
            self.reservations.assign(name, vmid)
        with Reverter() as revert:
            revert.add(f"release the reservation of {name}", lambda: self._forget(name, reservation))
            try:
                report.new_net0 = self._migrated_net0(old, reservation.mac)
                if snapshot:
                    self.backend.snapshot(vmid, snapshot)
                    revert.add(f"roll back to snapshot {snapshot}",
                               lambda: self._put_back(vmid, was_running, snapshot=snapshot))
                    step(f"snapshot {snapshot} taken")
                else:
                    revert.add("write back the old net0", lambda: self._put_back(vmid, was_running, net0=container.net0))
                if was_running:
                    step(self._stop_gracefully(vmid))
                self.backend.set_net0(vmid, report.new_net0)
                step(f"net0 set to {report.new_net0}")
                if applies(self.backend, report.new_net0):  # before the start: its DHCP must pass a guest firewall
                    step(allow_dhcp(self.backend, vmid) or f"DHCP allowed through CT {vmid}'s guest firewall (dhcp: 1)")
                self.backend.start(vmid)
                step("started")
                self._verify_on_network(reservation, timeout)
                step(f"holds {reservation.ip} and resolves as {name}.{self.settings.domain}")
            except StillRunning as exc:
                revert.success()  # a rollback now would race the task still running in Proxmox
                kept = (f"; snapshot {snapshot} is kept: when the task has ended, roll back with "
                        f"`pct rollback {vmid} {snapshot}`") if snapshot else f"; old net0 was {container.net0}"
                raise MigrationError(f"migration of CT {vmid} ({container.hostname}) stopped: {exc}. Not rolled "
                                     f"back; the reservation of {name} is kept{kept}") from exc
            except Exception as exc:
                undone = revert.pending
                problems = revert.fail()
                if problems:
                    outcome = f"the rollback had problems: {'; '.join(problems)}"
                elif snapshot and any(u.startswith("roll back") for u in undone):
                    outcome = f"rolled back to snapshot {snapshot}" + (" and started again" if was_running else "")
                elif any(u.startswith("write back") for u in undone):
                    outcome = ("config-only rollback: the old net0 is written back" +
                               (" and the container started again" if was_running else ""))
                else:
                    outcome = "nothing had changed"
                raise MigrationError(f"migration of CT {vmid} ({container.hostname}) failed; {outcome}. "
                                     f"What failed: {exc}") from exc
            revert.success()
        report.ip, report.dns_name = reservation.ip, f"{name}.{self.settings.domain}"
        return report

    def _migrated_net0(self, old: Net0, mac: str) -> str:
        keep = {k: v for k, v in old.options.items() if k in ("name", "mtu", "rate")}  # no tag: see migrate
        keep.setdefault("name", "eth0")
        return str(Net0({**keep, "bridge": self.settings.bridge, "ip": "dhcp", "firewall": "1", "hwaddr": mac}))

    def _put_back(self, vmid: int, was_running: bool, *, snapshot: str | None = None, net0: str | None = None) -> None:
        """Undo a migration: stop, roll back to the snapshot or write back the old net0, start if it ran."""
        if self.backend.status(vmid).state == "running":
            self.backend.stop(vmid)
        if snapshot:
            self.backend.rollback(vmid, snapshot)
        else:
            self.backend.set_net0(vmid, net0 or "")
        if was_running:
            self.backend.start(vmid)

    def _verify_on_network(self, reservation: Reservation, timeout: float) -> None:
        def leased() -> bool:
            return any(l.mac == reservation.mac and l.ip == reservation.ip for l in self._leases())

        if not wait_for(leased, timeout, interval=0.1):
            raise BackendError(f"no DHCP lease for {reservation.mac} ({reservation.ip}) within {timeout:.0f} s")
        self._wait_resolvable(reservation)
