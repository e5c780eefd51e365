"""ContainerManager: containers on prox-net with stable names and addresses, and the migration path.

It asks the network for ``net0`` and a reservation, refuses what cannot work before
anything is created (bad or duplicate hostname, full pool), and leaves nothing behind
when a step fails. Create and destroy record their intent on the reservation first, so that
one interrupted by kill -9 is finished or undone by :meth:`ContainerManager.recover`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from proximity.containers.base import BackendError, Container, ContainerBackend, ContainerSpec, Net0
from proximity.containers.recovery import (ADOPT, KEEP, LINK, OPERATIONS, RELEASE, REMOVE, Repair, mac_of,
                                          plan_repairs)
from proximity.errors import HostError, NotFoundError, ProximityError
from proximity.host import wait_for
from proximity.network.manager import NetworkManager
from proximity.network.reservations import AdmissionError, Intent, Reservation, Reservations
from proximity.revert import Reverter
from proximity.settings import SettingsError

log = logging.getLogger(__name__)


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MigrationReport:
    vmid: int
    hostname: str
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    snapshot: str | None = None
    ip: str | None = None
    dns_name: str | None = None
    old_net0: str = ""
    new_net0: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class MigrationError(BackendError):
    """Migration failed; the container was rolled back to its snapshot (or the message says why not)."""


class NoSuchContainer(NotFoundError, SettingsError):
    """No container has that id or hostname."""


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
        """Reserve, create, link, start. The reservation carries the intent until the end, so a
        create killed at any point is finished or undone by the next :meth:`recover`."""
        self._recover()
        with _reverting(f"the create of {hostname}") as revert:
            with self.reservations.locked():
                planned, net0 = self.plan_create(hostname)
                reservation = self.reservations.reserve(hostname, self.network.leases()[0], planned.mac,
                                                        intent=Intent.begin("create", start=start))
            revert.add(f"release the reservation of {hostname}", lambda: self._forget(hostname, reservation))
            self._wait_resolvable(reservation)
            container = self.backend.create(ContainerSpec(hostname, net0, memory, cores, template))
            revert.add(f"destroy CT {container.vmid}", lambda: self.backend.destroy(container.vmid))
            with self.reservations.locked():
                self.reservations.assign(hostname, container.vmid)
            if start:
                self.backend.start(container.vmid)
            with self.reservations.locked():
                self.reservations.set_intent(hostname, None)
        return self.info(container.vmid)

    def start(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        self.backend.start(vmid)
        return self.info(vmid)

    def stop(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        self.backend.shutdown(vmid)
        return self.info(vmid)

    def plan_destroy(self, ref: str) -> str:
        """What ``destroy`` would do; changes nothing."""
        container, reservation = self._target(ref)
        release = f"release {reservation.hostname}'s reservation {reservation.ip} and its lease" if reservation else ""
        if container is None:
            return f"{release} (no container holds it)"
        return f"destroy CT {container.vmid} ({container.hostname})" + (f" and {release}" if release else "")

    def destroy(self, ref: str) -> None:
        """Destroy the container and release its reservation and lease.

        A reservation whose container is gone already (destroyed outside Proximity) is released.
        """
        self._recover()
        container, reservation = self._target(ref)
        if container is not None:
            with _reverting(f"the destroy of CT {container.vmid}") as revert:
                if reservation is not None:
                    self._set_intent(reservation.hostname,
                                     Intent.begin("destroy", start=container.state == "running"))
                    revert.add(f"keep the reservation of {reservation.hostname}",
                               lambda: self._set_intent(reservation.hostname, None))
                if container.state == "running":
                    self.backend.stop(container.vmid)
                    revert.add(f"start CT {container.vmid} again", lambda: self.backend.start(container.vmid))
                self.backend.destroy(container.vmid)
        if reservation is not None:
            self._forget(reservation.hostname, reservation)

    def list(self) -> list[ContainerInfo]:
        self._recover()
        reservations = self.reservations.all()
        return [self._info(c, reservations) for c in self.backend.list()]

    def info(self, vmid: int) -> ContainerInfo:
        return self._info(self.backend.status(vmid))

    def resolve(self, ref: str) -> int:
        """A container by id or hostname."""
        if ref.isascii() and ref.isdigit():  # "²".isdigit() is true too
            return int(ref)
        matches = [c.vmid for c in self.backend.list() if c.hostname == ref]
        if not matches:
            raise NoSuchContainer(f"no container with id or hostname {ref!r}: see `proximity ct list`")
        return matches[0]

    def _target(self, ref: str) -> tuple[Container | None, Reservation | None]:
        """The container ``ref`` names and its reservation; or, when the container is gone, its reservation."""
        try:
            container = self.backend.status(self.resolve(ref))
        except (NoSuchContainer, BackendError):
            numeric = ref.isascii() and ref.isdigit()
            reservation = self.reservations.find(vmid=int(ref)) if numeric else self.reservations.find(hostname=ref)
            held = {mac_of(c) for c in self.backend.list()} if reservation else set()
            if reservation is None or reservation.mac in held:
                raise
            return None, reservation
        return container, self._reservation_of(container, self.reservations.all())

    # -- crash recovery and garbage --------------------------------------------------
    def recover(self) -> list[str]:
        """Finish or undo every create and destroy whose process died; return what was done.

        Cheap when nothing was interrupted: one read of the reservations, no call to the
        backend. Create, destroy and list call it first; so does the CLI before each `ct`
        command, and the service from its reconcile loop.
        """
        if not any(r.intent and r.intent.op in OPERATIONS and not r.intent.alive() for r in self.reservations.all()):
            return []
        return self._repair(interrupted_only=True)

    def _recover(self) -> None:
        """``recover`` before an operation, with what it did in the log."""
        for line in self.recover():
            log.warning("recovered an interrupted command: %s", line)

    def plan_repairs(self, interrupted_only: bool = False) -> list[Repair]:
        """Every orphan and its repair (see proximity.containers.recovery); changes nothing."""
        strays = self.backend.strays() if hasattr(self.backend, "strays") else []
        return plan_repairs(self.reservations.all(), self.backend.list(), bridge=self.settings.bridge,
                            alive=Intent.alive, strays=strays, interrupted_only=interrupted_only)

    def collect_garbage(self) -> list[str]:
        """Repair every orphan: `proximity gc`. Returns what was done (and what could not be)."""
        return self._repair(interrupted_only=False)

    def _repair(self, interrupted_only: bool) -> list[str]:
        done, to_start = [], []
        with self.reservations.locked():  # planned and applied under the lock: no other create runs meanwhile
            for repair in self.plan_repairs(interrupted_only):
                try:
                    if self._apply(repair):
                        to_start.append(repair.container)
                    done.append(repair.describe())
                except ProximityError as exc:
                    done.append(f"could not {repair.describe()}: {exc}")
        for container in to_start:
            try:
                self.backend.start(container.vmid)
            except ProximityError as exc:
                done.append(f"could not start CT {container.vmid} ({container.hostname}): {exc}")
        return done

    def _apply(self, repair: Repair) -> bool:
        """Make one repair, with the reservations' lock held; True if the container is to be started."""
        r, c = repair.reservation, repair.container
        if repair.kind == LINK:
            self.reservations.assign(r.hostname, c.vmid)
            self.reservations.set_intent(r.hostname, None)
            return repair.start
        if repair.kind == KEEP:
            self.reservations.assign(r.hostname, c.vmid)
            self.reservations.set_intent(r.hostname, None)
            return repair.start
        if repair.kind == RELEASE:
            self._release(r)
        elif repair.kind == ADOPT:
            mac = mac_of(c)
            self.network.get_container_network_config(c.hostname)  # an RFC 1123 name, or refuse
            leases = [lease for lease in self.network.leases()[0] if lease.mac != mac]  # its own lease is fine
            self.reservations.reserve(c.hostname, leases, mac)
            self.reservations.assign(c.hostname, c.vmid)
        elif repair.kind == REMOVE:
            self.backend.destroy(int(repair.path.name))
        return False

    # -- migration -----------------------------------------------------------------
    def migrate(self, vmid: int, *, dry_run: bool = False, timeout: float = 60,
                progress: Callable[[str], None] = lambda step: None) -> MigrationReport:
        """Snapshot, shut down, switch net0 to the bridge with DHCP, start, verify; roll back on failure."""
        container = self.backend.status(vmid)
        old = Net0.parse(container.net0)
        if old.get("bridge") == self.settings.bridge:
            raise SettingsError(f"CT {vmid} ({container.hostname}) is already on {self.settings.bridge}")
        self.network.get_container_network_config(container.hostname)  # an RFC 1123 name or refuse
        snapshot = f"proximity_premigrate_{time.strftime('%Y%m%d%H%M%S')}"
        report = MigrationReport(vmid, container.hostname, dry_run, snapshot=snapshot, old_net0=container.net0)

        def step(text: str) -> None:
            report.steps.append(text)
            progress(text)

        if dry_run:
            mac = old.get("hwaddr") or "(reserved at migration)"
            report.new_net0 = self._migrated_net0(old, mac)
            for text in (f"snapshot CT {vmid} as {snapshot}", f"shut down CT {vmid}" if container.state == "running"
                         else f"CT {vmid} is stopped", f"set net0 to {report.new_net0}", f"start CT {vmid}",
                         f"verify a lease and {container.hostname}.{self.settings.domain} within {timeout:.0f} s"):
                step(text)
            return report

        with self.reservations.locked():
            reservation = self.reservations.reserve(container.hostname, self.network.leases()[0], old.get("hwaddr"))
            self.reservations.assign(container.hostname, vmid)
        report.new_net0 = self._migrated_net0(old, reservation.mac)
        try:
            self.backend.snapshot(vmid, snapshot)
        except BaseException:
            self._forget(container.hostname, reservation)
            raise
        step(f"snapshot {snapshot} taken")
        try:
            if container.state == "running":
                self.backend.shutdown(vmid)
                step("shut down")
            self.backend.set_net0(vmid, report.new_net0)
            step(f"net0 set to {report.new_net0}")
            self.backend.start(vmid)
            step("started")
            self._verify_on_network(reservation, timeout)
            step(f"holds {reservation.ip} and resolves as {reservation.hostname}.{self.settings.domain}")
        except BaseException as exc:
            problems = self._roll_back(vmid, snapshot, was_running=container.state == "running")
            self._forget(container.hostname, reservation)
            detail = f"; rollback problems: {'; '.join(problems)}" if problems else (
                f"; rolled back to snapshot {snapshot}" + (" and started again" if container.state == "running" else ""))
            raise MigrationError(f"migration of CT {vmid} ({container.hostname}) failed: {exc}{detail}") from exc
        report.ip, report.dns_name = reservation.ip, f"{reservation.hostname}.{self.settings.domain}"
        return report

    def _migrated_net0(self, old: Net0, mac: str) -> str:
        keep = {k: v for k, v in old.options.items() if k in ("name", "mtu", "rate", "tag")}
        keep.setdefault("name", "eth0")
        return str(Net0({**keep, "bridge": self.settings.bridge, "ip": "dhcp", "firewall": "1", "hwaddr": mac}))

    def _roll_back(self, vmid: int, snapshot: str, was_running: bool) -> list[str]:
        problems = []
        for what, action in [
            ("stop", lambda: self.backend.stop(vmid) if self.backend.status(vmid).state == "running" else None),
            ("rollback", lambda: self.backend.rollback(vmid, snapshot)),
            ("start", lambda: self.backend.start(vmid) if was_running else None),
        ]:
            try:
                action()
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        return problems

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
            self._release(reservation)

    def _release(self, reservation: Reservation) -> None:
        """``_forget`` with the reservations' lock held."""
        self.reservations.release(reservation.hostname)
        self.network.host.query(["dhcp_release", self.settings.bridge, reservation.ip, reservation.mac])

    def _set_intent(self, hostname: str, intent: Intent | None) -> None:
        with self.reservations.locked():
            self.reservations.set_intent(hostname, intent)

    def _reservation_of(self, container: Container, reservations: list[Reservation]) -> Reservation | None:
        """The reservation a container on the bridge holds: the one with its MAC (or, without one, its id)."""
        mac = mac_of(container)
        return next((r for r in reservations if (r.mac == mac if mac else r.vmid == container.vmid)), None)

    def _info(self, container: Container, reservations: list[Reservation] | None = None) -> ContainerInfo:
        net0 = Net0.parse(container.net0) if container.net0 else Net0()
        bridge = net0.get("bridge")
        reservation = None
        if bridge == self.settings.bridge:
            reservation = self._reservation_of(container, self.reservations.all() if reservations is None
                                               else reservations)
        mac = (reservation.mac if reservation else net0.get("hwaddr")) or None
        ip = reservation.ip if reservation else _static_ip(net0)
        dns_name = f"{container.hostname}.{self.settings.domain}" if reservation else None
        return ContainerInfo(container.vmid, container.hostname, container.state, mac and mac.lower(), ip, dns_name,
                             bridge, container.backend)


@contextlib.contextmanager
def _reverting(what: str) -> Iterator[Reverter]:
    """A Reverter whose undo problems are not lost: they join the error (a HostError then)."""
    with Reverter() as revert:
        try:
            yield revert
        except Exception as exc:
            if revert.fail():
                raise HostError(f"{exc}; undoing {what} also failed: {'; '.join(revert.failures)} "
                                "(`proximity gc` removes what is left)") from exc
            raise
        revert.success()


def _static_ip(net0: Net0) -> str | None:
    ip = net0.get("ip")
    return ip.split("/")[0] if ip and ip not in ("dhcp", "manual") else None


__all__ = ["AdmissionError", "ContainerInfo", "ContainerManager", "MigrationError", "MigrationReport",
           "NoSuchContainer"]
