"""The dnsmasq service: a systemd unit on a real host, a supervised daemon elsewhere.

Both answer the same question (which dnsmasq runs, and what was it started with) and take the
same orders (start, restart, reload, stop), so the reconciler does not care which it has.

Every start and SIGHUP is recorded in ``<run_dir>/<service>.state``: the pid, a hash of the
config file it read, a hash of the hosts files it last re-read, and the bridge's ifindex it
bound to. Comparing that record with the files and the bridge of now tells a stale daemon
(a crash between writing the config and restarting, a bridge deleted and re-created) from a
current one, which comparing files alone cannot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from proximity.errors import HostError
from proximity.host import CommandError, Host, wait_for
from proximity.network import render
from proximity.network.leases import parse_leases
from proximity.network.render import dnsmasq_binary
from proximity.settings import Settings


log = logging.getLogger(__name__)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ServiceError(HostError):
    """dnsmasq could not be started or stopped; the message says why and what to do."""


def content_hash(*texts: str | None) -> str:
    """One hash of some files' contents (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update((text or "").encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DnsProcess:
    """The running dnsmasq and what it was started with (None: not known, so treat it as stale)."""

    pid: int
    config: str | None  # content_hash of the config file it read at start
    hosts: str | None  # content_hash of the hosts files at its last start or SIGHUP
    bridge_index: int | None  # the bridge it bound to


@dataclass(frozen=True)
class PortHolder:
    proto: str
    local: str
    process: str
    pid: int

    def __str__(self) -> str:
        return f"{self.process} (pid {self.pid}) holds {self.proto} {self.local}"


SS_USERS = re.compile(r'\("([^"]+)",pid=(\d+)')


def port_holders(host: Host, settings: Settings) -> list[PortHolder]:
    """Processes whose sockets would keep dnsmasq off ports 53 and 67 on the gateway.

    A socket bound to the gateway address, or to the wildcard address without
    being tied to another device, collides; ``0.0.0.0%vmbr1:67`` does not.
    """
    result = host.query(["ss", "-H", "-l", "-n", "-p", "-u", "-t", "( sport = :53 or sport = :67 )"])
    holders = []
    gateway = str(settings.gateway.ip)
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        proto, local = fields[0], fields[4]
        address, _, port = local.rpartition(":")
        address, _, device = address.partition("%")
        if port == "53" and proto not in ("udp", "tcp"):
            continue
        if port == "67" and proto != "udp":
            continue
        if address not in (gateway, "0.0.0.0", "*", "[::]") or (device and device != settings.bridge):
            continue
        for name, pid in SS_USERS.findall(line):
            holders.append(PortHolder(proto, local, name, int(pid)))
    return holders


class DnsService:
    """What both kinds share: the start record, and SIGHUP."""

    def __init__(self, host: Host, settings: Settings):
        self.host, self.settings = host, settings

    @property
    def record_file(self) -> Path:
        return self.settings.run_dir / f"{self.settings.service_name}.state"

    def running_pid(self) -> int | None:
        raise NotImplementedError

    def process(self) -> DnsProcess | None:
        """The running dnsmasq, with what it was started with if the record is its own."""
        pid = self.running_pid()
        if pid is None:
            return None
        try:
            record = json.loads(self.host.read_text(self.record_file) or "{}")
        except (ValueError, RecursionError, HostError):  # damaged (not JSON, not UTF-8): stale, so `up` restarts and rewrites it
            record = {}
        if not isinstance(record, dict) or record.get("pid") != pid:
            return DnsProcess(pid, None, None, None)
        return DnsProcess(pid, record.get("config"), record.get("hosts"), record.get("bridge_index"))

    # -- the leases it holds: never (re)start it while its leases file has lost some --------------
    def _raw_record(self) -> dict:
        try:
            record = json.loads(self.host.read_text(self.record_file) or "{}")
        except (ValueError, RecursionError, HostError):
            return {}
        return record if isinstance(record, dict) else {}

    def _file_leases(self) -> dict[str, int]:
        """Address -> expiry of the leases in dnsmasq's file now."""
        leases, _ = parse_leases(self.host.read_text(self.settings.leases_file, errors="replace") or "")
        return {lease.ip: lease.expiry for lease in leases}

    @staticmethod
    def _in_use(record: dict) -> dict[str, int]:
        """The recorded leases that could still be in use (not expired; 0 is an infinite lease)."""
        raw, now = record.get("leases"), time.time()
        return {ip: exp for ip, exp in raw.items() if type(exp) is int and (exp == 0 or exp > now)} \
            if isinstance(raw, dict) else {}

    def _disk_full(self) -> bool:
        free = self.host.free_space(self.settings.leases_file.parent)
        return free is not None and free < self.host.write_spare

    def lost_leases(self) -> list[str]:
        """Addresses leased (and not expired) when last recorded that dnsmasq's file no longer holds."""
        return sorted(set(self._in_use(self._raw_record())) - set(self._file_leases()))

    def check_leases_kept(self) -> None:
        """dnsmasq reads its leases back from the file at start: a file that lost some (a full disk truncates
        it) would make it hand out addresses still in use. Refuse the start or restart then."""
        if self.host.dry_run:
            return
        lost = self.lost_leases()
        if not lost:
            return
        s = self.settings
        full = (f"; the file system of {s.leases_file.parent} is full" if self._disk_full() else "")
        raise ServiceError(
            f"dnsmasq's leases file {s.leases_file} has lost {len(lost)} lease(s) still in use "
            f"({', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}){full}. (Re)starting dnsmasq now would forget "
            "them and hand those addresses out twice, so it was not (re)started. Free some space there: a running "
            "dnsmasq writes the file again from memory within a minute; then run `proximity up`. If those clients "
            f"are really gone, remove {self.record_file} first.")

    def note_leases(self) -> None:
        """Keep the record's leases current (``up`` and the service's heal call this). It follows the file
        while the file system has room and dnsmasq has rewritten the file since it was last seen full;
        otherwise (the file may be truncated) it only grows."""
        pid = self.running_pid() if not self.host.dry_run else None
        record = self._raw_record()
        if pid is None or record.get("pid") != pid:
            return  # not ours to update: a start or restart writes it
        now, recorded, full_since = self._file_leases(), self._in_use(record), record.get("full_since")
        if self._disk_full():
            leases, full_since = {**recorded, **now}, full_since or time.time()
        elif full_since and _mtime(self.settings.leases_file) <= full_since:
            leases = {**recorded, **now}  # not rewritten since the disk was full: it may still be short
        else:
            leases, full_since = now, None
        if leases != record.get("leases") or full_since != record.get("full_since"):
            try:
                self.host.write_text(self.record_file, json.dumps({**record, "leases": leases,
                                                                   "full_since": full_since}) + "\n")
            except HostError as exc:  # a full run directory: the old record still guards the restart
                log.warning("could not update %s: %s", self.record_file, exc)

    def hosts_hash(self) -> str:
        s = self.settings
        return content_hash(self.host.read_text(s.dhcp_hosts_file), self.host.read_text(s.addn_hosts_file))

    def _record(self, **changes: object) -> None:
        if self.host.dry_run:
            return
        pid = self.running_pid()
        if pid is None:
            return
        current, raw = self.process(), self._raw_record()
        record = {"pid": pid, "config": current.config, "hosts": current.hosts, "bridge_index": current.bridge_index,
                  "leases": raw.get("leases") if raw.get("pid") == pid else None,
                  "full_since": raw.get("full_since") if raw.get("pid") == pid else None}
        self.host.write_text(self.record_file, json.dumps({**record, **changes}) + "\n")

    def _record_start(self) -> None:
        s = self.settings
        links = self.host.ip_json("link", "show") if not self.host.dry_run else []
        index = next((link["ifindex"] for link in links if link.get("ifname") == s.bridge), None)
        self._record(config=content_hash(self.host.read_text(s.dnsmasq_conf)), hosts=self.hosts_hash(),
                     bridge_index=index, leases=self._file_leases(), full_since=None)  # what it read at start

    def reload(self) -> None:
        """SIGHUP: dnsmasq re-reads the reservation and hosts files, without a restart."""
        pid = self.running_pid()
        if pid is not None:
            self.host.kill(pid, signal.SIGHUP)
            self._record(hosts=self.hosts_hash())

    def forget(self) -> None:
        self.host.remove(self.record_file)


class SupervisedDns(DnsService):
    """dnsmasq as a daemon Proximity starts itself, tracked by its pid file (no systemd)."""

    @property
    def argv(self) -> list[str]:
        return render.dnsmasq_argv(self.settings, dnsmasq_binary(), foreground=False)

    def unit_files(self) -> dict:
        return render.dns_unit_files(self.settings, systemd=False)

    def running_pid(self) -> int | None:
        text = self.host.read_text(self.settings.dns_pid_file, errors="replace")  # a damaged one: not running
        if not text or not text.strip().isascii() or not text.strip().isdigit() or len(text.strip()) > 10:
            return None
        pid = int(text.strip())
        cmdline = self.host.pid_cmdline(pid)
        # Trust the pid only if it still is our dnsmasq (pids get reused).
        if cmdline and cmdline[0].endswith("dnsmasq") and f"--conf-file={self.settings.dnsmasq_conf}" in cmdline:
            return pid
        return None

    def start(self) -> None:
        self.check_leases_kept()
        self.host.mkdir(self.settings.run_dir)
        try:
            # dnsmasq reports start-up errors (a port in use) before its parent exits.
            self.host.run(self.argv, timeout=20)
        except CommandError as exc:
            raise ServiceError(f"dnsmasq did not start: {exc.stderr.strip() or exc}") from None
        if not self.host.dry_run and not wait_for(lambda: self.running_pid() is not None, 5):
            raise ServiceError(f"dnsmasq started but wrote no pid file at {self.settings.dns_pid_file}")
        self._record_start()

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        self.host.kill(pid, signal.SIGTERM)
        if self.host.dry_run:
            return
        if not wait_for(lambda: self.host.pid_cmdline(pid) is None, 5):
            self.host.kill(pid, signal.SIGKILL)
            wait_for(lambda: self.host.pid_cmdline(pid) is None, 2)
        self.host.remove(self.settings.dns_pid_file)
        self.forget()

    def restart(self) -> None:
        self.check_leases_kept()  # before the stop: a stopped dnsmasq's leases live only in the file
        self.stop()
        self.start()

    def enable(self) -> None:
        """Nothing to enable: a supervised daemon lives as long as its namespace."""

    def disable(self) -> None:
        """Nothing to disable."""

    def describe(self) -> str:
        return f"supervised dnsmasq (pid file {self.settings.dns_pid_file})"


class SystemdDns(DnsService):
    """dnsmasq as the ``proximity-dns`` systemd unit."""

    @property
    def unit(self) -> str:
        return f"{self.settings.service_name}.service"

    def unit_files(self) -> dict:
        return render.dns_unit_files(self.settings, systemd=True)

    def running_pid(self) -> int | None:
        result = self.host.query(["systemctl", "show", "-p", "MainPID", "-p", "ActiveState", self.unit])
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        pid = int(values.get("MainPID", "0") or 0)
        return pid if values.get("ActiveState") == "active" and pid > 0 else None

    def _systemctl(self, *args: str) -> None:
        try:
            self.host.run(["systemctl", *args], timeout=60)
        except CommandError as exc:
            raise ServiceError(f"{exc}; see `journalctl -u {self.unit} -n 50`") from None

    def start(self) -> None:
        self.check_leases_kept()
        self._systemctl("start", self.unit)
        self._record_start()

    def restart(self) -> None:
        self.check_leases_kept()
        self._systemctl("daemon-reload")
        self._systemctl("restart", self.unit)
        self._record_start()

    def stop(self) -> None:
        if self.running_pid() is not None:
            self._systemctl("stop", self.unit)
        self.forget()

    def enable(self) -> None:
        self._systemctl("daemon-reload")  # the unit file may be new or changed
        self._systemctl("enable", self.unit)

    def disable(self) -> None:
        self._systemctl("disable", self.unit)

    def describe(self) -> str:
        return f"systemd unit {self.unit}"


def dns_service(host: Host, settings: Settings) -> DnsService:
    return SystemdDns(host, settings) if host.has_systemd else SupervisedDns(host, settings)
