"""ContainerManager: containers on prox-net with stable names and addresses (migration: migration.py).

It asks the network for ``net0`` and a reservation, refuses what cannot work before
anything is created (bad or duplicate hostname, full pool), and leaves nothing behind
when a step fails. Create and destroy record their intent on the reservation first, so that
one interrupted by kill -9 is finished or undone by :meth:`ContainerManager.recover`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

from proximity.containers.base import (
    BackendError,
    Container,
    ContainerBackend,
    ContainerSpec,
    Net0,
    StillRunning,
)
from proximity.containers.guest_firewall import allow_dhcp, applies
from proximity.containers.recovery import (ADOPT, KEEP, LINK, OPERATIONS, RELEASE, REMOVE, Repair, RepairFailure, mac_of,
                                          plan_repairs)
from proximity.containers.migration import Migration, MigrationError, MigrationReport
from proximity.containers.rebuild import Rebuilt, rebuild
from proximity.errors import HostError, NotFoundError, ProximityError
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
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
    note: str | None = None  # how an action went, when that is worth saying (a forced stop)

    def as_dict(self) -> dict:
        return asdict(self)


class NoSuchContainer(NotFoundError, SettingsError):
    """No container has that id or hostname."""


class ContainerManager(Migration):
    def __init__(self, network: NetworkManager, backend: ContainerBackend):
        self.network, self.backend = network, backend
        self.settings = network.settings
        # With IPv6 in prox-net a reservation has a stable IPv6 address and AAAA record, from the prefix
        # only the zone's view knows: the files are written as `up` writes them (else each create
        # dropped every IPv6 line until the next `up`), and net0 asks for DHCPv6 (ip6=dhcp).
        self.view = network.default_zone(network.observe()) if self.settings.ipv6 != "off" else self.settings
        self.reservations = Reservations(self.view, network.host)

    # -- lifecycle -----------------------------------------------------------------
    def plan_create(self, hostname: str) -> tuple[Reservation, str]:
        """What ``create`` would reserve and send, after the same admission checks; changes nothing."""
        base_net0 = self.network.get_container_network_config(hostname)
        self.network.require_up()  # before `proximity up`, a create could only fail after making the container
        if any(c.hostname.lower() == hostname.lower() for c in self.backend.list()):  # DNS ignores case
            raise AdmissionError(f"a container named {hostname!r} already exists: pick another hostname")
        reservation = self.reservations.reserve(hostname, self.network.leases()[0], save=False)
        ip6 = ",ip6=dhcp" if getattr(self.view, "ipv6_gateway", None) is not None else ""
        return reservation, f"{base_net0}{ip6},hwaddr={reservation.mac}"

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
            made: list[int] = []  # the container, while it exists: its reservation must then stay
            revert.add(f"release the reservation of {hostname}", lambda: made or self._forget(hostname, reservation))
            self._wait_resolvable(reservation)
            try:
                container = self.backend.create(ContainerSpec(hostname, net0, memory, cores, template))
            except StillRunning as exc:  # the create goes on in Proxmox: keep its name and address for it
                revert.success()
                raise BackendError(f"{exc}. The reservation of {hostname} ({reservation.ip}) is kept for it: once "
                                   f"the task has ended, `proximity ct destroy {hostname}` if it is not wanted") from exc
            made.append(container.vmid)
            revert.add(f"destroy CT {container.vmid}", lambda: self._destroy_made(container.vmid, made))
            with self.reservations.locked():
                self.reservations.assign(hostname, container.vmid)
            # before the first start, so its first DHCP request passes a guest firewall that is on
            note = allow_dhcp(self.backend, container.vmid) if applies(self.backend, net0) else None
            if start:
                try:
                    self.backend.start(container.vmid)
                except StillRunning as exc:  # destroying now would race the start task
                    revert.success()
                    raise BackendError(f"CT {container.vmid} ({hostname}) was created and is kept with its "
                                       f"reservation ({reservation.ip}); its start: {exc}") from exc
                except Exception as exc:
                    raise self._start_failed(container.vmid, reservation, revert, made, exc) from exc
            with self.reservations.locked():
                self.reservations.set_intent(hostname, None)
        return replace(self.info(container.vmid), note=note)

    @staticmethod
    def _start_failed(vmid: int, reservation: Reservation, revert: Reverter, made: list[int],
                      exc: Exception) -> BackendError:
        """Undo the create now, and say which way it ended: destroyed, or kept with its reservation."""
        failures = revert.fail()
        hostname = reservation.hostname
        if not made:
            return BackendError(f"CT {vmid} ({hostname}) was created but did not start; it was destroyed and its "
                                f"reservation released. Why it did not start: {exc}")
        detail = failures[0].splitlines()[0] if failures else "unknown"
        revert.failures.clear()  # said here, in full
        return BackendError(
            f"CT {vmid} ({hostname}) was created but did not start, and could not be destroyed ({detail}); CT {vmid} "
            f"is kept with its reservation ({reservation.ip}, {reservation.mac}): fix the cause and `proximity ct "
            f"start {hostname}`, or `proximity ct destroy {hostname}`. Why it did not start: {exc}")

    def _destroy_made(self, vmid: int, made: list[int]) -> None:
        """Undo a create: a container that did not start is destroyed; if that fails it is kept, and its
        reservation with it (never a container on the bridge with a MAC nobody reserved)."""
        if self.backend.status(vmid).state == "running":
            self.backend.stop(vmid)
        self.backend.destroy(vmid)
        made.clear()

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
            raise NoSuchContainer(f"no container with id or hostname {ref!r}", fix="see `proximity ct list`")
        return matches[0]

    def _target(self, ref: str) -> tuple[Container | None, Reservation | None]:
        """The container ``ref`` names and its reservation; or, when the container is gone, its reservation."""
        try:
            container = self.backend.status(self.resolve(ref))
        except (NoSuchContainer, BackendError):
            numeric = ref.isascii() and ref.isdigit()
            reservation = self.reservations.find(vmid=int(ref)) if numeric else self.reservations.find(hostname=ref)
            held = {mac_of(c) for c in self._with_net0(self.backend.list())} if reservation else set()
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
        return plan_repairs(self.reservations.all(), self._with_net0(self.backend.list()), bridge=self.settings.bridge,
                            alive=Intent.alive, strays=strays, interrupted_only=interrupted_only)

    def _with_net0(self, containers: list[Container]) -> list[Container]:
        """Containers as recovery needs them, with net0 (and so the MAC): a listing without it (Proxmox's
        one-call listing) is completed from each config; a container deleted meanwhile is left out."""
        complete = []
        for container in containers:
            if not container.net0:
                try:
                    container = self.backend.status(container.vmid)
                except BackendError:
                    continue
            complete.append(container)
        return complete

    def collect_garbage(self) -> list[str]:
        """Repair every orphan: `proximity gc`. Returns what was done (and what could not be)."""
        return self._repair(interrupted_only=False)

    def rebuild_reservations(self, dry_run: bool = False) -> Rebuilt:
        """`gc --rebuild`: the reservations from dnsmasq's hosts files and the containers (see rebuild.py)."""
        s, host = self.settings, self.network.host
        with self.reservations.locked():
            result = rebuild(s, host.read_text(s.dhcp_hosts_file, errors="replace"),
                             host.read_text(s.addn_hosts_file, errors="replace"),
                             self._with_net0(self.backend.list()), self.network.leases()[0])
            if not dry_run:
                kept = self.reservations.replace_all(result.reservations)
                result.notes.append(f"the damaged file is kept as {kept}" if kept else
                                    f"the previous file is kept as {self.reservations.backup}")
        return result

    def _repair(self, interrupted_only: bool) -> list[str]:
        done, to_start = [], []
        with self.reservations.locked():  # planned and applied under the lock: no other create runs meanwhile
            for repair in self.plan_repairs(interrupted_only):
                try:
                    if self._apply(repair):
                        to_start.append(repair.container)
                    done.append(repair.describe())
                except ProximityError as exc:
                    done.append(RepairFailure(f"could not {repair.describe()}: {exc}"))
        for container in to_start:
            try:
                self.backend.start(container.vmid)
            except ProximityError as exc:
                done.append(RepairFailure(f"could not start CT {container.vmid} ({container.hostname}): {exc}"))
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
        # no net0 (Proxmox's one-call listing does not carry it): a reservation says the CT is on the bridge
        if bridge == self.settings.bridge or (not container.net0 and bridge is None):
            reservation = self._reservation_of(container, self.reservations.all() if reservations is None
                                               else reservations)
            bridge = self.settings.bridge if reservation else bridge
        mac = (reservation.mac if reservation else net0.get("hwaddr")) or None
        ip = reservation.ip if reservation else _static_ip(net0)
        dns_name = f"{reservation.hostname}.{self.settings.domain}" if reservation else None
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
