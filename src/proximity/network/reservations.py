"""Stable names and addresses: one DHCP reservation (MAC, IP, hostname) per managed container.

The reservations live in ``reservations.json`` under the state directory. From it we render
two files that dnsmasq reads: a ``dhcp-hostsfile`` (``MAC,IP,hostname``) so the container
always gets the same address, and an ``addn-hosts`` file so its name resolves before it
has ever booted. Both are re-read by dnsmasq on SIGHUP, so no restart is needed.

A reservation can carry an :class:`Intent`: the record of a create or destroy that has begun
and not ended, with the process doing it. If that process dies (kill -9, a power cut), the
intent stays behind, and the container layer's recovery finishes or undoes the operation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

from proximity.errors import ConflictError
from proximity.host import Host
from proximity.network.leases import Lease
from proximity.network.render import stable_mac
from proximity.network.dnsmasq import dns_service
from proximity.owner import Owner
from proximity.settings import Settings, SettingsError


class AdmissionError(ConflictError, SettingsError):
    """A container cannot be admitted to the network; nothing was created."""


@dataclass(frozen=True)
class Intent:
    """A create or destroy of the reservation's container that has begun and not ended."""

    op: str  # "create" or "destroy"
    pid: int  # the process doing it, with its start time (see proximity.owner)
    pid_start: int
    since: float  # time.time() when it began
    start: bool = False  # create: start the container once made; destroy: it was running

    @classmethod
    def begin(cls, op: str, *, start: bool = False) -> Intent:
        me = Owner.me()
        return cls(op, me.pid, me.start, time.time(), start)

    def alive(self) -> bool:
        """Whether the process doing it still runs (else it was interrupted)."""
        return Owner(self.pid, self.pid_start).alive()

    def describe(self) -> str:
        return f"{self.op} by pid {self.pid} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"


@dataclass(frozen=True)
class Reservation:
    hostname: str
    mac: str
    ip: str
    vmid: int | None = None
    intent: Intent | None = None

    @classmethod
    def from_dict(cls, item: dict) -> Reservation:
        intent = item.get("intent")
        return cls(**{**item, "intent": Intent(**intent) if intent else None})


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
            return [Reservation.from_dict(item) for item in json.loads(text)]
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
    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self.host.lock(self.settings.state_dir / "reservations.lock", what="another change of the reservations")

    def reserve(self, hostname: str, leases: list[Lease], mac: str | None = None, *, save: bool = True,
                intent: Intent | None = None) -> Reservation:
        """Admit ``hostname``: refuse a name in use or a full pool; call with the lock held.

        With ``save=False`` only say what would be reserved (for --dry-run).
        """
        current = self.all()
        name = hostname.lower()  # DNS is case-insensitive: WEB-01 is web-01
        mine = next((r for r in current if r.hostname.lower() == name), None)
        if mine is not None and mine.intent is not None and not mine.intent.alive():
            raise AdmissionError(
                f"hostname {hostname!r} is held by an interrupted {mine.intent.describe()}: the next "
                f"`proximity ct` command or `proximity gc` finishes or undoes it"
            )
        if mine is not None or any((l.hostname or "").lower() == name for l in leases):
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
        reservation = Reservation(hostname, mac, ip, intent=intent)
        if save:
            self._save([*current, reservation])
        return reservation

    def assign(self, hostname: str, vmid: int) -> None:
        """Link the reservation to its container; call with the lock held."""
        self._change(hostname, vmid=vmid)

    def set_intent(self, hostname: str, intent: Intent | None) -> None:
        """Record an operation that begins (or, with None, that ended); call with the lock held."""
        self._change(hostname, intent=intent)

    def _change(self, hostname: str, **changes: object) -> None:
        self._save([replace(r, **changes) if r.hostname == hostname else r for r in self.all()])

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
        """Write the database, then dnsmasq's files, reloading dnsmasq only when those changed."""
        s = self.settings
        self.host.write_text(s.reservations_db, json.dumps([asdict(r) for r in reservations]) + "\n")
        changed = False
        for path, text in self._rendered(reservations).items():
            if self.host.read_text(path) != text:
                self.host.write_text(path, text)
                changed = True
        if changed:
            self._reload_dnsmasq()

    def _reload_dnsmasq(self) -> None:
        dns_service(self.host, self.settings).reload()  # re-reads dhcp-hostsfile and addn-hosts
