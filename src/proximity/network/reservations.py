"""Stable names and addresses: one DHCP reservation (MAC, IP, hostname) per managed container.

The reservations live in ``reservations.json`` under the state directory. From it we render
two files that dnsmasq reads: a ``dhcp-hostsfile`` (``MAC,IP,hostname``) so the container
always gets the same address, and an ``addn-hosts`` file so its name resolves before it
has ever booted. Both are re-read by dnsmasq on SIGHUP, so no restart is needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from proximity.errors import ConflictError
from proximity.host import Host
from proximity.network.leases import Lease
from proximity.network.render import stable_mac
from proximity.network.service import dns_service
from proximity.settings import Settings, SettingsError


class AdmissionError(ConflictError, SettingsError):
    """A container cannot be admitted to the network; nothing was created."""


@dataclass(frozen=True)
class Reservation:
    hostname: str
    mac: str
    ip: str
    vmid: int | None = None


def render_dhcp_hosts(reservations: list[Reservation]) -> str:
    return "".join(f"{r.mac},{r.ip},{r.hostname}\n" for r in reservations)


def render_addn_hosts(reservations: list[Reservation], domain: str) -> str:
    return "".join(f"{r.ip} {r.hostname}.{domain} {r.hostname}\n" for r in reservations)


class Reservations:
    """Reservations of one network, changed under a lock and applied with SIGHUP."""

    def __init__(self, settings: Settings, host: Host):
        self.settings, self.host = settings, host

    # -- reading -------------------------------------------------------------------
    def all(self) -> list[Reservation]:
        text = self.host.read_text(self.settings.reservations_db)
        if not text:
            return []
        try:
            return [Reservation(**item) for item in json.loads(text)]
        except (ValueError, TypeError) as exc:
            raise SettingsError(
                f"{self.settings.reservations_db} is damaged ({exc}); restore it from "
                f"{self.settings.backup_dir} or remove it and re-create the reservations"
            ) from None

    def find(self, hostname: str | None = None, vmid: int | None = None, mac: str | None = None) -> Reservation | None:
        for r in self.all():
            if (hostname and r.hostname == hostname) or (vmid is not None and r.vmid == vmid) or (mac and r.mac == mac):
                return r
        return None

    # -- changing ------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        path = self.settings.state_dir / "reservations.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def reserve(self, hostname: str, leases: list[Lease], mac: str | None = None, *, save: bool = True) -> Reservation:
        """Admit ``hostname``: refuse a name in use or a full pool; call with the lock held.

        With ``save=False`` only say what would be reserved (for --dry-run).
        """
        current = self.all()
        name = hostname.lower()  # DNS is case-insensitive: WEB-01 is web-01
        if any(r.hostname.lower() == name for r in current) or any((l.hostname or "").lower() == name for l in leases):
            raise AdmissionError(
                f"hostname {hostname!r} is already in use on {self.settings.bridge}: pick another name "
                f"(see `proximity ct list` and `proximity leases`)"
            )
        taken_macs = {r.mac for r in current}
        if mac is None:
            mac = next(stable_mac(hostname, salt) for salt in range(1000) if stable_mac(hostname, salt) not in taken_macs)
        elif mac.lower() in taken_macs:
            raise AdmissionError(f"MAC {mac} is already reserved for another container")
        mac = mac.lower()
        # An address is taken if reserved, or leased to a client we did not reserve it for.
        taken = {r.ip for r in current} | {l.ip for l in leases if l.mac != mac}
        ip = next((str(a) for a in self._pool() if str(a) not in taken), None)
        if ip is None:
            raise AdmissionError(
                f"no free address left in {self.settings.dhcp_start}-{self.settings.dhcp_end} "
                f"({self.settings.pool_size} addresses): destroy unused containers or widen the DHCP range"
            )
        reservation = Reservation(hostname, mac, ip)
        if save:
            self._save([*current, reservation])
        return reservation

    def assign(self, hostname: str, vmid: int) -> None:
        self._save([Reservation(r.hostname, r.mac, r.ip, vmid) if r.hostname == hostname else r for r in self.all()])

    def release(self, hostname: str) -> Reservation | None:
        current = self.all()
        gone = next((r for r in current if r.hostname == hostname), None)
        if gone is not None:
            self._save([r for r in current if r.hostname != hostname])
        return gone

    def ensure_files(self) -> None:
        """The files dnsmasq reads must exist before it starts."""
        for path, text in self._rendered(self.all()).items():
            if self.host.read_text(path) != text:
                self.host.write_text(path, text)

    def _pool(self) -> Iterator[ipaddress.IPv4Address]:
        address = self.settings.dhcp_start
        while address <= self.settings.dhcp_end:
            yield address
            address += 1

    def _rendered(self, reservations: list[Reservation]) -> dict:
        s = self.settings
        return {
            s.dhcp_hosts_file: render_dhcp_hosts(reservations),
            s.addn_hosts_file: render_addn_hosts(reservations, s.domain),
        }

    def _save(self, reservations: list[Reservation]) -> None:
        s = self.settings
        self.host.write_text(s.reservations_db, json.dumps([asdict(r) for r in reservations]) + "\n")
        for path, text in self._rendered(reservations).items():
            self.host.write_text(path, text)
        self._reload_dnsmasq()

    def _reload_dnsmasq(self) -> None:
        pid = dns_service(self.host, self.settings).running_pid()
        if pid is not None:
            self.host.kill(pid, signal.SIGHUP)  # re-reads dhcp-hostsfile and addn-hosts
