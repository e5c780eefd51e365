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
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from proximity.errors import ConflictError, HostError
from proximity.host import Host
from proximity.network.leases import Lease
from proximity.network.render import stable_mac  # noqa: F401 (imported from here too)
from proximity.network.render_ipv6 import stable_ipv6
from proximity.network.dnsmasq import dns_service
from proximity.owner import Owner
from proximity.settings import Settings, SettingsError
from proximity.spec.macs import free_mac
from proximity.spec.view import reservation_dbs


class AdmissionError(ConflictError, SettingsError):
    """A container cannot be admitted to the network; nothing was created."""


class DamagedReservations(HostError):
    """The reservations file cannot be trusted: nothing that writes may go on (it would hand out addresses twice)."""


MAC_RE = re.compile(r"^(?:[0-9a-f]{2}:){5}[0-9a-f]{2}$", re.I)
INTENT_FIELDS = {"op": str, "pid": int, "pid_start": int, "since": (int, float), "start": bool}


def proximity_command(settings: Settings, args: str) -> str:
    """A Proximity command line for this host (with --sandbox on a sandbox)."""
    return f"proximity {args}" + (f" --sandbox {settings.netns}" if settings.netns else "")


def parse_reservations(text: str) -> list[Reservation]:
    """The reservations in a file Proximity wrote (a JSON list, ``[]`` when there are none).

    Anything else (0 bytes, ``{}``, a truncated list, an entry of the wrong shape) raises ValueError
    naming what is wrong: a damaged file is never read as "no reservations".
    """
    if not text.strip():
        raise ValueError("the file is empty (a valid file with no reservations holds `[]`)")
    try:
        data = json.loads(text)  # JSONDecodeError is a ValueError
    except RecursionError:
        raise ValueError("it is nested too deeply to be a list of reservations") from None
    if not isinstance(data, list):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not a list of reservations")
    return [_entry(number, item) for number, item in enumerate(data, start=1)]


def _entry(number: int, item: object) -> Reservation:
    where = f"entry {number}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} is {json.dumps(item)[:40]}, not an object")
    unknown = set(item) - {"hostname", "mac", "ip", "vmid", "intent"}
    if unknown:
        raise ValueError(f"{where} has unknown fields {sorted(unknown)}")
    for key in ("hostname", "mac", "ip"):
        if not isinstance(item.get(key), str):
            raise ValueError(f"{where}: {key!r} is missing or not a string")
    if not MAC_RE.match(item["mac"]):
        raise ValueError(f"{where}: mac {item['mac']!r} is not a MAC address")
    try:
        ipaddress.IPv4Address(item["ip"])
    except ValueError:
        raise ValueError(f"{where}: ip {item['ip']!r} is not an IPv4 address") from None
    vmid = item.get("vmid")
    if vmid is not None and (type(vmid) is not int or vmid < 0):
        raise ValueError(f"{where}: vmid {vmid!r} is not a container id")
    intent = item.get("intent")
    if intent is not None:
        if not isinstance(intent, dict) or not {"op", "pid", "pid_start", "since"} <= set(intent) <= set(INTENT_FIELDS) \
                or any(not isinstance(intent[k], INTENT_FIELDS[k]) or isinstance(intent[k], bool) != (k == "start")
                       for k in intent):
            raise ValueError(f"{where}: intent {json.dumps(intent)[:60]} is not a create or destroy record")
    return Reservation.from_dict(item)


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


def render_dhcp_hosts(reservations: list[Reservation], subnet: ipaddress.IPv4Network | None = None,
                      ipv6_gateway: ipaddress.IPv6Interface | None = None) -> str:
    """dnsmasq's dhcp-hostsfile: ``MAC,IP,hostname``; with IPv6 on (the zone's IPv4 ``subnet`` and
    ``ipv6_gateway`` given), ``MAC,IP,[IPV6],hostname``, the IPv6 address the stable one of
    :func:`proximity.network.render_ipv6.stable_ipv6`."""
    if ipv6_gateway is None:
        return "".join(f"{r.mac},{r.ip},{r.hostname}\n" for r in reservations)
    return "".join(f"{r.mac},{r.ip},[{_ipv6(r, subnet, ipv6_gateway)}],{r.hostname}\n" for r in reservations)


def render_addn_hosts(reservations: list[Reservation], domain: str, subnet: ipaddress.IPv4Network | None = None,
                      ipv6_gateway: ipaddress.IPv6Interface | None = None) -> str:
    """The names before first boot: an A record per reservation, and with IPv6 on an AAAA one after it."""
    lines = []
    for r in reservations:
        lines.append(f"{r.ip} {r.hostname}.{domain} {r.hostname}\n")
        if ipv6_gateway is not None:
            lines.append(f"{_ipv6(r, subnet, ipv6_gateway)} {r.hostname}.{domain} {r.hostname}\n")
    return "".join(lines)


def _ipv6(r: Reservation, subnet: ipaddress.IPv4Network | None, gateway: ipaddress.IPv6Interface) -> str:
    if subnet is None:
        raise ValueError("an IPv6 reservation needs the zone's IPv4 subnet (its address is the IPv4 offset)")
    return str(stable_ipv6(r.ip, subnet, gateway.network))


class Reservations:
    """Reservations of one network, changed under a lock and applied with SIGHUP."""

    def __init__(self, settings: Settings, host: Host):
        self.settings, self.host = settings, host

    # -- reading -------------------------------------------------------------------
    @property
    def backup(self) -> Path:
        """The previous good copy of the file (kept at every write)."""
        db = self.settings.reservations_db
        return db.with_name(db.name + ".bak")

    def all(self) -> list[Reservation]:
        """Every reservation; DamagedReservations when the file cannot be trusted."""
        db = self.settings.reservations_db
        try:
            text = self.host.read_text(db)
        except HostError as exc:  # not UTF-8, unreadable
            raise self._damaged(str(exc).removeprefix(f"cannot read {db}: ")) from None
        if text is None:
            if self._read_backup() is not None:  # it was there: removed by hand, or lost
                raise self._damaged("the file is missing, but its backup exists")
            return []  # a host that never had a reservation
        try:
            return parse_reservations(text)
        except ValueError as exc:
            raise self._damaged(str(exc)) from None

    def _read_backup(self) -> list[Reservation] | None:
        try:
            text = self.host.read_text(self.backup)
            return parse_reservations(text) if text is not None else None
        except (HostError, ValueError):
            return None

    def _damaged(self, why: str) -> DamagedReservations:
        db, backup = self.settings.reservations_db, self._read_backup()
        restore = (f"restore the last good copy ({len(backup)} reservations) with `cp {self.backup} {db}`, or "
                   if backup is not None else f"no good backup exists ({self.backup}); ")
        return DamagedReservations(
            f"the reservations file {db} is damaged: {why}. Nothing that writes runs until it is repaired, so no "
            f"address is handed out twice: {restore}rebuild it from dnsmasq's hosts file and the containers with "
            f"`{proximity_command(self.settings, 'gc --rebuild')}` (add --dry-run to see what it would write)")

    def find(self, hostname: str | None = None, vmid: int | None = None, mac: str | None = None) -> Reservation | None:
        for r in self.all():
            if (hostname and r.hostname == hostname) or (vmid is not None and r.vmid == vmid) or (mac and r.mac == mac):
                return r
        return None

    # -- changing ------------------------------------------------------------------
    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self.host.lock(self.settings.state_dir / "reservations.lock", what="another change of the reservations")

    def macs_elsewhere(self) -> dict[str, dict[str, str]]:
        """What the other zones' reservations hold: ``{zone: {mac: hostname}}`` (a MAC is unique host-wide:
        recovery and the leases know a container by it, wherever it is)."""
        found: dict[str, dict[str, str]] = {}
        for zone, db in reservation_dbs(self.settings).items():
            if db == self.settings.reservations_db:
                continue
            text = self.host.read_text(db, errors="replace")
            if text is None:
                continue
            try:
                found[zone] = {r.mac: r.hostname for r in parse_reservations(text)}
            except ValueError as exc:
                raise DamagedReservations(
                    f"the reservations file {db} of zone {zone} is damaged: {exc}. MACs are unique across the "
                    "host, so no container is admitted in any zone until it is repaired: "
                    f"`{proximity_command(self.settings, f'gc --rebuild --zone {zone}')}`") from None
        return found

    def reserve(self, hostname: str, leases: list[Lease], mac: str | None = None, *, save: bool = True,
                intent: Intent | None = None, move_from: str | None = None) -> Reservation:
        """Admit ``hostname``: refuse a name in use, a MAC any zone holds, or a full pool; call with the lock held.

        With ``save=False`` only say what would be reserved (for --dry-run). ``move_from``: the zone whose
        reservation of ``mac`` is being moved here (`ct move`), so that one MAC is not refused.
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
        elsewhere = {z: macs for z, macs in self.macs_elsewhere().items() if z != move_from}
        if mac is None:
            mac = free_mac(hostname, {"": [r.mac for r in current], **elsewhere})
        mac = mac.lower()
        holder = next((f"{r.hostname} on {self.settings.bridge}" for r in current if r.mac == mac), None) or next(
            (f"{macs[mac]} in zone {z}" for z, macs in elsewhere.items() if mac in macs), None)
        if holder is not None:
            raise AdmissionError(f"MAC {mac} is already reserved for another container ({holder}): MACs are unique "
                                 "across the host's zones")
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
        self._apply(self.all(), running=False)

    def _pool(self) -> Iterator[ipaddress.IPv4Address]:
        address = self.settings.dhcp_start
        while address <= self.settings.dhcp_end:
            yield address
            address += 1

    def _rendered(self, reservations: list[Reservation]) -> dict:
        from proximity.network.plan_zone import reservation_files
        from proximity.spec.view import default_view

        return reservation_files(default_view(self.settings), reservations)

    def _apply(self, reservations: list[Reservation], running: bool = True) -> None:
        """dnsmasq's files and its SIGHUP, as the zone's plan says (network.plan_zone.plan_reservations)."""
        from proximity.network.changes import Env
        from proximity.network.dns_changes import ReloadDns
        from proximity.network.plan_zone import plan_reservations
        from proximity.spec.view import default_view

        dns = dns_service(self.host, self.settings)
        for change in plan_reservations(default_view(self.settings), reservations, self.host.read_text,
                                        dns.process() if running else None):
            if isinstance(change, ReloadDns):
                self._reload_dnsmasq()
            else:
                change.apply(Env(self.host, self.settings, dns))

    def replace_all(self, reservations: list[Reservation]) -> str | None:
        """Write ``reservations`` over whatever the file holds (``gc --rebuild``); call with the lock held.

        A good file becomes the backup; a damaged one is kept beside it as ``PATH.damaged-STAMP``,
        whose path is returned, so nothing is lost.
        """
        db = self.settings.reservations_db
        text = self.host.read_text(db, errors="replace")
        try:
            parse_reservations(text if text is not None else "[]")
        except ValueError:
            kept = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d%H%M%S')}")
            self.host.write_text(kept, text or "", mode=0o600)
            self.host.remove(db)  # so _save does not take it for a good copy
            self._save(reservations)
            return str(kept)
        self._save(reservations)
        return None

    def _save(self, reservations: list[Reservation]) -> None:
        """Write the database (its previous good copy kept as the backup), then what the zone's plan
        makes of it: dnsmasq's files, and a SIGHUP when dnsmasq runs with older ones."""
        s = self.settings
        before = self.host.read_text(s.reservations_db)
        if before is not None:
            try:
                parse_reservations(before)  # only a good copy becomes the backup (callers read it first)
            except ValueError as exc:
                raise self._damaged(str(exc)) from None
            self.host.write_text(self.backup, before, mode=0o600)
        self.host.write_text(s.reservations_db, json.dumps([asdict(r) for r in reservations]) + "\n")
        self._apply(reservations)

    def _reload_dnsmasq(self) -> None:
        dns_service(self.host, self.settings).reload()  # re-reads dhcp-hostsfile and addn-hosts
