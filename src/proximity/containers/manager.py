"""ContainerManager: containers on prox-net with stable names and addresses, and the migration path.

It asks the network for ``net0`` and a reservation, refuses what cannot work before
anything is created (bad or duplicate hostname, full pool), and leaves nothing behind
when a step fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from proximity.containers.base import (
    BackendError,
    Container,
    ContainerBackend,
    ContainerLocked,
    ContainerSpec,
    Net0,
    StillRunning,
    dns_label,
)
from proximity.network.reservations import AdmissionError, Reservation, Reservations
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.revert import Reverter
from proximity.settings import SettingsError


@dataclass(frozen=True)
class ContainerInfo:
    vmid: int
    hostname: str
    state: str
    mac: str | None
    ip: str | None
    dns_name: str | None
    bridge: str | None
    backend: str
    note: str | None = None  # how an action went, when that is worth saying (a forced stop)

    def as_dict(self) -> dict:
        return asdict(self)


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


class MigrationError(BackendError):
    """Migration failed; the container was rolled back to its snapshot (or the message says why not)."""


class ContainerManager:
    def __init__(self, network: NetworkManager, backend: ContainerBackend):
        self.network, self.backend = network, backend
        self.settings = network.settings
        self.reservations = Reservations(self.settings, network.host)

    # -- lifecycle -----------------------------------------------------------------
    def plan_create(self, hostname: str) -> tuple[Reservation, str]:
        """What ``create`` would reserve and send, after the same admission checks; changes nothing."""
        base_net0 = self.network.get_container_network_config(hostname)
        if any(c.hostname == hostname for c in self.backend.list()):
            raise AdmissionError(f"a container named {hostname!r} already exists: pick another hostname")
        reservation = self.reservations.reserve(hostname, self.network.leases()[0], save=False)
        return reservation, f"{base_net0},hwaddr={reservation.mac}"

    def create(self, hostname: str, *, memory: int = 256, cores: int = 1, template: str | None = None,
               start: bool = True) -> ContainerInfo:
        with self.reservations.locked():
            planned, net0 = self.plan_create(hostname)
            reservation = self.reservations.reserve(hostname, self.network.leases()[0], planned.mac)
        try:
            self._wait_resolvable(reservation)
            spec = ContainerSpec(hostname, net0, memory, cores, template)
            container = self.backend.create(spec)
            with self.reservations.locked():
                self.reservations.assign(hostname, container.vmid)
        except StillRunning as exc:  # the create goes on in Proxmox: keep its name and address for it
            raise BackendError(f"{exc}. The reservation of {hostname} ({reservation.ip}) is kept for it: once "
                               f"the task has ended, `proximity ct destroy {hostname}` if it is not wanted") from exc
        except BaseException:
            self._forget(hostname, reservation)
            raise
        if start:
            try:
                self.backend.start(container.vmid)
            except Exception as exc:
                raise self._failed_start(container.vmid, hostname, reservation, exc) from exc
        return self.info(container.vmid)

    def _failed_start(self, vmid: int, hostname: str, reservation: Reservation, exc: Exception) -> BackendError:
        """After a failed start the container is destroyed (and its reservation released), or kept with its
        reservation: never left on the bridge with a MAC nobody reserved."""
        kept = (f"CT {vmid} is kept with its reservation ({reservation.ip}, {reservation.mac}): fix the cause and "
                f"`proximity ct start {hostname}`, or `proximity ct destroy {hostname}`")
        if isinstance(exc, StillRunning):  # destroying now would race the start task
            return BackendError(f"CT {vmid} ({hostname}) was created; {kept}. Its start: {exc}")
        try:
            if self.backend.status(vmid).state == "running":
                self.backend.stop(vmid)
            self.backend.destroy(vmid)
        except Exception as cleanup:
            return BackendError(f"CT {vmid} ({hostname}) was created but did not start, and could not be destroyed "
                                f"({str(cleanup).splitlines()[0]}); {kept}. Why it did not start: {exc}")
        self._forget(hostname, reservation)
        return BackendError(f"CT {vmid} ({hostname}) was created but did not start; it was destroyed and its "
                            f"reservation released. Why it did not start: {exc}")

    def start(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        self.backend.start(vmid)
        return self.info(vmid)

    def stop(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        how = self._stop_gracefully(vmid)
        return replace(self.info(vmid), note=how)

    def _stop_gracefully(self, vmid: int, timeout: float = 30) -> str:
        """A clean shutdown, then a forced stop if it does not finish in time (as Proxmox's own tools do)."""
        try:
            self.backend.shutdown(vmid, timeout)
            return "shut down cleanly"
        except StillRunning:
            raise  # the shutdown task still runs: a stop now would race it
        except BackendError as exc:
            if self.backend.status(vmid).state != "running":
                return "shut down cleanly"
            reason = str(exc).splitlines()[0]
        self.backend.stop(vmid)
        return f"did not shut down within {timeout:.0f} s ({reason}): stopped by force"

    def destroy(self, ref: str) -> None:
        vmid = self.resolve(ref)
        container = self.backend.status(vmid)
        if container.state == "running":
            self.backend.stop(vmid)
        self.backend.destroy(vmid)
        reservation = self.reservations.find(vmid=vmid) or self.reservations.find(hostname=container.hostname)
        if reservation is not None:
            self._forget(reservation.hostname, reservation)

    def list(self) -> list[ContainerInfo]:
        return [self._info(c) for c in self.backend.list()]

    def info(self, vmid: int) -> ContainerInfo:
        return self._info(self.backend.status(vmid))

    def resolve(self, ref: str) -> int:
        """A container by id or hostname."""
        if ref.isascii() and ref.isdigit():  # "²".isdigit() is true too
            return int(ref)
        matches = [c.vmid for c in self.backend.list() if c.hostname == ref]
        if not matches:
            raise SettingsError(f"no container with id or hostname {ref!r}: see `proximity ct list`")
        return matches[0]

    # -- migration -----------------------------------------------------------------
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
        name = dns_label(container.hostname)  # Proxmox allows an FQDN hostname; DNS on the bridge uses its first label
        self.network.get_container_network_config(name)  # an RFC 1123 name or refuse
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

        if dry_run:
            mac = old.get("hwaddr") or "(reserved at migration)"
            report.new_net0 = self._migrated_net0(old, mac)
            for text in [*notes, f"snapshot CT {vmid} as {snapshot}" if snapshot else "take no snapshot",
                         f"shut down CT {vmid} (stop by force if it takes over 30 s)" if was_running
                         else f"CT {vmid} is stopped", f"set net0 to {report.new_net0}", f"start CT {vmid}",
                         f"verify a lease and {name}.{self.settings.domain} within {timeout:.0f} s"]:
                step(text)
            return report

        for text in notes:
            step(text)
        with self.reservations.locked():  # refused (name or address in use): nothing has changed
            reservation = self.reservations.reserve(name, self.network.leases()[0], old.get("hwaddr"))
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
            return any(l.mac == reservation.mac and l.ip == reservation.ip for l in self.network.leases()[0])

        if not wait_for(leased, timeout, interval=0.1):
            raise BackendError(f"no DHCP lease for {reservation.mac} ({reservation.ip}) within {timeout:.0f} s")
        self._wait_resolvable(reservation)

    # -- names ---------------------------------------------------------------------
    def _wait_resolvable(self, reservation: Reservation, timeout: float = 5) -> None:
        """After SIGHUP, dnsmasq answers for the new name within milliseconds; make sure of it."""
        if self.network.dns.running_pid() is None:
            return  # nothing to ask; `proximity status` reports the missing service
        name = f"{reservation.hostname}.{self.settings.domain}"
        if not wait_for(lambda: self.lookup(name) == [reservation.ip], timeout, interval=0.05):
            raise BackendError(f"{name} does not resolve to {reservation.ip} on {self.settings.gateway.ip}")

    def lookup(self, name: str) -> list[str]:
        return self.network.host.resolve(name, str(self.settings.gateway.ip)) or []

    def _forget(self, hostname: str, reservation: Reservation) -> None:
        """Drop the reservation and the lease, so the name and address are free again."""
        with self.reservations.locked():
            self.reservations.release(hostname)
        self.network.host.query(["dhcp_release", self.settings.bridge, reservation.ip, reservation.mac])

    def _info(self, container: Container) -> ContainerInfo:
        net0 = Net0.parse(container.net0) if container.net0 else Net0()
        bridge = net0.get("bridge")
        # no net0 (Proxmox's one-call listing does not carry it): a reservation says the CT is on the bridge
        on_bridge = bridge == self.settings.bridge or (not container.net0 and bridge is None)
        reservation = self.reservations.find(vmid=container.vmid) if on_bridge else None
        bridge = self.settings.bridge if reservation else bridge
        mac = (reservation.mac if reservation else net0.get("hwaddr")) or None
        ip = reservation.ip if reservation else _static_ip(net0)
        dns_name = f"{reservation.hostname}.{self.settings.domain}" if reservation else None
        return ContainerInfo(container.vmid, container.hostname, container.state, mac and mac.lower(), ip, dns_name,
                             bridge, container.backend)


def _static_ip(net0: Net0) -> str | None:
    ip = net0.get("ip")
    return ip.split("/")[0] if ip and ip not in ("dhcp", "manual") else None


__all__ = ["AdmissionError", "ContainerInfo", "ContainerManager", "MigrationError", "MigrationReport"]
