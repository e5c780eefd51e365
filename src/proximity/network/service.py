"""Running dnsmasq: a systemd unit on a real host, a supervised daemon elsewhere.

Both answer the same questions (is it running, which pid) and take the same
orders (start, restart, stop), so the reconciler does not care which it has.
"""

from __future__ import annotations

import re
import shutil
import signal
from dataclasses import dataclass

from proximity.errors import HostError
from proximity.host import CommandError, Host, pid_cmdline, wait_for
from proximity.network import render
from proximity.settings import Settings


class ServiceError(HostError):
    """dnsmasq could not be started or stopped; the message says why and what to do."""


def dnsmasq_binary() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


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


class SupervisedDns:
    """dnsmasq as a daemon Proximity starts itself, tracked by its pid file (no systemd)."""

    def __init__(self, host: Host, settings: Settings):
        self.host, self.settings = host, settings

    @property
    def argv(self) -> list[str]:
        return render.dnsmasq_argv(self.settings, dnsmasq_binary(), foreground=False)

    def unit_files(self) -> dict:
        return {}

    def running_pid(self) -> int | None:
        text = self.host.read_text(self.settings.dns_pid_file)
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        cmdline = pid_cmdline(pid)
        # Trust the pid only if it still is our dnsmasq (pids get reused).
        if cmdline and cmdline[0].endswith("dnsmasq") and f"--conf-file={self.settings.dnsmasq_conf}" in cmdline:
            return pid
        return None

    def start(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            # dnsmasq reports start-up errors (a port in use) before its parent exits.
            self.host.run(self.argv, timeout=20)
        except CommandError as exc:
            raise ServiceError(f"dnsmasq did not start: {exc.stderr.strip() or exc}") from None
        if not self.host.dry_run and not wait_for(lambda: self.running_pid() is not None, 5):
            raise ServiceError(f"dnsmasq started but wrote no pid file at {self.settings.dns_pid_file}")

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        self.host.kill(pid, signal.SIGTERM)
        if self.host.dry_run:
            return
        if not wait_for(lambda: pid_cmdline(pid) is None, 5):
            self.host.kill(pid, signal.SIGKILL)
            wait_for(lambda: pid_cmdline(pid) is None, 2)
        self.host.remove(self.settings.dns_pid_file)

    def restart(self) -> None:
        self.stop()
        self.start()

    def enable(self) -> None:
        """Nothing to enable: a supervised daemon lives as long as its namespace."""

    def disable(self) -> None:
        """Nothing to disable."""

    def describe(self) -> str:
        return f"supervised dnsmasq (pid file {self.settings.dns_pid_file})"


class SystemdDns:
    """dnsmasq as the ``proximity-dns`` systemd unit."""

    def __init__(self, host: Host, settings: Settings):
        self.host, self.settings = host, settings

    @property
    def unit(self) -> str:
        return f"{self.settings.service_name}.service"

    def unit_files(self) -> dict:
        return {self.settings.unit_file: render.systemd_unit(self.settings, dnsmasq_binary())}

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
        self._systemctl("start", self.unit)

    def restart(self) -> None:
        self._systemctl("daemon-reload")
        self._systemctl("restart", self.unit)

    def stop(self) -> None:
        if self.running_pid() is not None:
            self._systemctl("stop", self.unit)

    def enable(self) -> None:
        self._systemctl("daemon-reload")  # the unit file may be new or changed
        self._systemctl("enable", self.unit)

    def disable(self) -> None:
        self._systemctl("disable", self.unit)

    def describe(self) -> str:
        return f"systemd unit {self.unit}"


def dns_service(host: Host, settings: Settings) -> SupervisedDns | SystemdDns:
    return SystemdDns(host, settings) if host.has_systemd else SupervisedDns(host, settings)
