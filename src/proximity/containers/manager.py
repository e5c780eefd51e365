"""ContainerManager: containers on prox-net with stable names and addresses, and the migration path.

It asks the network for ``net0`` and a reservation, refuses what cannot work before
anything is created (bad or duplicate hostname, full pool), and leaves nothing behind
when a step fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from proximity.containers.base import BackendError, Container, ContainerBackend, ContainerSpec, Net0
from proximity.network.reservations import AdmissionError, Reservation, Reservations
from proximity.host import wait_for
from proximity.network.manager import NetworkManager
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


class ContainerManager:
    def __init__(self, network: NetworkManager, backend: ContainerBackend):
        self.network, self.backend = network, backend
        self.settings = network.settings
        self.reservations = Reservations(self.settings, network.host)

    # -- lifecycle -----------------------------------------------------------------
    def plan_create(self, hostname: str) -> tuple[Reservation, str]:
        """What ``create`` would reserve and send, after the same admission checks; changes nothing."""
        base_net0 = self.network.get_container_network_config(hostname)
        if any(c.hostname.lower() == hostname.lower() for c in self.backend.list()):  # DNS ignores case
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
            if start:
                self.backend.start(container.vmid)
        except BaseException:
            self._forget(hostname, reservation)
            raise
        return self.info(container.vmid)

    def start(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        self.backend.start(vmid)
        return self.info(vmid)

    def stop(self, ref: str) -> ContainerInfo:
        vmid = self.resolve(ref)
        self.backend.shutdown(vmid)
        return self.info(vmid)

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
            self.reservations.release(hostname)
        self.network.host.query(["dhcp_release", self.settings.bridge, reservation.ip, reservation.mac])

    def _info(self, container: Container) -> ContainerInfo:
        net0 = Net0.parse(container.net0) if container.net0 else Net0()
        bridge = net0.get("bridge")
        reservation = self.reservations.find(vmid=container.vmid) if bridge == self.settings.bridge else None
        mac = (reservation.mac if reservation else net0.get("hwaddr")) or None
        ip = reservation.ip if reservation else _static_ip(net0)
        dns_name = f"{container.hostname}.{self.settings.domain}" if reservation else None
        return ContainerInfo(container.vmid, container.hostname, container.state, mac and mac.lower(), ip, dns_name,
                             bridge, container.backend)


def _static_ip(net0: Net0) -> str | None:
    ip = net0.get("ip")
    return ip.split("/")[0] if ip and ip not in ("dhcp", "manual") else None


__all__ = ["AdmissionError", "ContainerInfo", "ContainerManager", "MigrationError", "MigrationReport"]
