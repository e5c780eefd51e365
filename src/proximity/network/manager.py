"""NetworkManager: converge the host to the declared prox-net network, and report on it.

``up`` observes the host, changes only what differs, registers an undo for
every change as it makes it, verifies the result, and runs the undos in
reverse if anything fails. Run it again and it changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from proximity.errors import HostError
from proximity.host import CommandError, DryRunHost, Host, wait_for
from proximity.network import interfaces, render
from proximity.network.leases import Lease, parse_leases
from proximity.network.service import ServiceError, dns_service, dnsmasq_binary, port_holders
from proximity.network.validate import HostNetwork, check_subnet_free, read_host_network, resolve_uplink
from proximity.settings import Settings, SettingsError, check_hostname

PVE_CLUSTER_FIREWALL = Path("/etc/pve/firewall/cluster.fw")


class ConvergeError(HostError):
    """``up`` or ``down`` failed; everything it had changed was undone (or the message says what was not)."""


class Revert:
    """Undo steps registered as changes are made; run in reverse on failure."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, description: str, undo: Callable[[], None]) -> None:
        self._steps.append((description, undo))

    def run(self) -> list[str]:
        """Undo everything; return what could not be undone."""
        failures = []
        for description, undo in reversed(self._steps):
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                failures.append(f"{description}: {exc}")
        self._steps.clear()
        return failures


@dataclass
class Report:
    """What a converge did (or, in a dry run, would do)."""

    dry_run: bool
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "changed": self.changed, **asdict(self)}


@dataclass
class NetworkStatus:
    bridge_name: str
    bridge_ip: str
    subnet: str
    dhcp_range: str
    dns_domain: str
    bridge_up: bool
    nat_configured: bool
    dhcp_service_running: bool
    health_status: str
    reasons: list[str]
    uplink: str | None
    bridge_exists: bool
    gateway_assigned: bool
    isolation_configured: bool
    ip_forward: bool
    dns_answering: bool
    dhcp_served: bool
    dns_pid: int | None
    pool_size: int
    leases_in_use: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # a finding that does not break the network by itself


class NetworkManager:
    def __init__(self, settings: Settings, *, dry_run: bool = False, host: Host | None = None):
        self.settings = settings
        self.host = host or (DryRunHost(netns=settings.netns) if dry_run else Host(settings.netns))
        self.dns = dns_service(self.host, settings)
        self._leases_cache: tuple[tuple[int, int, int], tuple[list[Lease], list[str]]] | None = None

    # -- public API -----------------------------------------------------------------
    def get_container_network_config(self, hostname: str) -> str:
        """``net0`` for a container on the managed bridge (the container backends use this)."""
        check_hostname(hostname)
        return render.container_net0(self.settings)

    def initialize(self) -> Report:
        """The seed's name for ``up``."""
        return self.up()

    def up(self) -> Report:
        report = Report(dry_run=self.host.dry_run)
        with self._locked():
            net = read_host_network(self.host)
            uplink = resolve_uplink(self.settings, net)
            text = self._read_interfaces()
            check_subnet_free(self.settings, net, interfaces.remove_block(text))
            pve_firewall = self._pve_firewall()
            revert = Revert()
            try:
                self._converge_bridge(text, uplink, pve_firewall, net, revert, report)
                self._converge_firewall(uplink, pve_firewall, revert, report)
                self._converge_forwarding(revert, report)
                self._converge_dns(revert, report)
                if report.changed and not self.host.dry_run:  # every step already checked what it skipped
                    self._verify()
            except BaseException as exc:
                failures = revert.run()
                raise self._failed("up", exc, failures, report.warnings) from exc
        self._finish(report)
        return report

    def down(self, purge: bool = False) -> Report:
        report = Report(dry_run=self.host.dry_run)
        s = self.settings
        with self._locked():
            text = self._read_interfaces()
            revert = Revert()
            try:
                if self.dns.running_pid() is not None:
                    self.dns.stop()
                    report.actions.append(f"stopped {self.dns.describe()}")
                units = [path for path in self.dns.unit_files() if self.host.read_text(path) is not None]
                if units:
                    self.dns.disable()  # while its unit file still exists
                state = [s.leases_file, s.reservations_db, s.dhcp_hosts_file, s.addn_hosts_file]
                for path in [*units, s.dnsmasq_conf] + (state if purge else []):
                    if self.host.read_text(path) is not None:
                        self.host.remove(path)
                        report.actions.append(f"removed {path}")
                new_text = interfaces.remove_block(text)
                if new_text != text:
                    self._write_interfaces(text, new_text, revert, report)
                    self._ifreload(report)
                    if not self.host.dry_run:
                        self._ifquery_check(expect_bridge=False)
                net = read_host_network(self.host)
                if not self._hand_written_stanza(new_text) and net.link(s.bridge) is not None:
                    self._change(report, f"deleted bridge {s.bridge}", ["ip", "link", "delete", s.bridge])
                for table, line in sorted(self._own_rules()):
                    self._change(report, f"removed {table} rule {line}", _delete_argv(table, line))
            except BaseException as exc:
                failures = revert.run()
                raise self._failed("down", exc, failures) from exc
        self._finish(report)
        return report

    def status(self) -> NetworkStatus:
        s = self.settings
        net = read_host_network(self.host)
        uplink = s.uplink or net.default_route_link()
        link = net.link(s.bridge)
        gateway_assigned = (s.bridge, s.gateway) in net.addresses
        rules = render.firewall_rules(s, uplink, self._pve_firewall()) if uplink else []
        live = self._own_rules()
        present = {rule: self._rule_present(rule, live) for rule in rules}
        nat = bool(rules) and present[rules[0]]
        isolation = bool(rules) and all(present.values())
        forward = self.host.read_sysctl("net.ipv4.ip_forward") == "1"
        pid = self.dns.running_pid()
        answering = pid is not None and gateway_assigned and self._dns_answers()
        served = pid is not None and self._dhcp_served(pid)
        leases, _ = self.leases()

        problems: list[tuple[bool, str]] = []  # (fatal, reason)
        if link is None:
            problems.append((True, f"bridge {s.bridge} does not exist: run `proximity up`"))
        elif not link["up"]:
            problems.append((True, f"bridge {s.bridge} is down: run `ifup {s.bridge}` or `proximity up`"))
        if link is not None and not gateway_assigned:
            problems.append((True, f"{s.gateway} is not assigned to {s.bridge}: run `proximity up`"))
        if pid is None:
            problems.append((True, f"dnsmasq ({self.dns.describe()}) is not running: run `proximity up`"))
        if not uplink:
            problems.append((False, "no uplink: there is no default route and no uplink setting"))
        elif not nat:
            problems.append((False, f"NAT rule for {s.subnet} out of {uplink} is missing: run `proximity up`"))
        elif not isolation:
            missing = [r.saved() for r, ok in present.items() if not ok]
            problems.append((False, f"firewall rules missing ({'; '.join(missing)}): run `proximity up`"))
        if not forward:
            problems.append((False, "net.ipv4.ip_forward is 0: run `sysctl -w net.ipv4.ip_forward=1`"))
        if pid is not None and not answering:
            problems.append((False, f"dnsmasq does not answer DNS on {s.gateway.ip}:53"))
        if pid is not None and not served:
            problems.append((False, f"dnsmasq does not serve DHCP on {s.bridge} (udp port 67)"))
        health = "healthy"
        if problems:
            health = "unhealthy" if any(fatal for fatal, _ in problems) else "degraded"
        return NetworkStatus(
            bridge_name=s.bridge,
            bridge_ip=str(s.gateway.ip),
            subnet=str(s.subnet),
            dhcp_range=f"{s.dhcp_start}-{s.dhcp_end}",
            dns_domain=s.domain,
            bridge_up=bool(link and link["up"]),
            nat_configured=nat,
            dhcp_service_running=pid is not None,
            health_status=health,
            reasons=[reason for _, reason in problems],
            uplink=uplink,
            bridge_exists=link is not None,
            gateway_assigned=gateway_assigned,
            isolation_configured=isolation,
            ip_forward=forward,
            dns_answering=answering,
            dhcp_served=served,
            dns_pid=pid,
            pool_size=s.pool_size,
            leases_in_use=sum(1 for lease in leases if ":" not in lease.ip),
        )

    def leases(self) -> tuple[list[Lease], list[str]]:
        """Leases, parsed again only when dnsmasq has rewritten the file (it is read on hot paths)."""
        path = self.settings.leases_file
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return [], []
        cached = self._leases_cache
        if cached is None or cached[0] != key:
            cached = self._leases_cache = (key, parse_leases(self.host.read_text(path) or "", str(path)))
        leases, warnings = cached[1]
        return list(leases), list(warnings)

    # -- converge steps -------------------------------------------------------------
    def _converge_bridge(
        self, text: str, uplink: str, pve_firewall: bool, net: HostNetwork, revert: Revert, report: Report
    ) -> None:
        s = self.settings
        hand = self._hand_written_stanza(text)
        if hand is not None:
            differences = interfaces.compare_bridge(hand, render.bridge_options(s))
            if differences:
                raise SettingsError(
                    f"{s.interfaces_file} already declares {s.bridge} by hand (line {hand.first_line}) and it "
                    "differs from Proximity's settings:\n  " + "\n  ".join(differences)
                    + f"\nMake that stanza match, or delete it and run `proximity up` to let Proximity manage {s.bridge}."
                )
            new_text = interfaces.remove_block(text)
            report.warnings.append(
                f"adopted the hand-written {s.bridge} stanza at {s.interfaces_file} line {hand.first_line}; "
                "NAT and forwarding rules are applied live, make sure its post-up lines re-create them at boot"
            )
        else:
            new_text = interfaces.merge_block(text, render.bridge_stanza(s, uplink, pve_firewall))
        link = net.link(s.bridge)
        live = link is not None and link["up"] and (s.bridge, s.gateway) in net.addresses
        if new_text == text and live:
            return
        rules_before = self._own_rules()

        def undo_live() -> None:
            # The file is restored by then (undos run in reverse). Put the live state back even
            # if this reload fails too (e.g. another stanza's post-up hangs): that is what matters.
            try:
                self._ifreload(None)
            except CommandError as exc:
                report.warnings.append(f"while undoing: {exc}")
            if link is None and read_host_network(self.host).link(s.bridge) is not None:
                self.host.run(["ip", "link", "delete", s.bridge])
            for table, line in self._own_rules() - rules_before:
                self.host.run(_delete_argv(table, line))

        revert.add(f"bring {s.bridge} back to how it was", undo_live)
        if new_text != text:
            self._write_interfaces(text, new_text, revert, report)
        self._ifreload(report)
        if not self.host.dry_run:
            self._ifquery_check(expect_bridge=True)

    def _converge_firewall(self, uplink: str, pve_firewall: bool, revert: Revert, report: Report) -> None:
        rules = render.firewall_rules(self.settings, uplink, pve_firewall)
        wanted = {(rule.table, rule.saved()) for rule in rules}
        live = self._own_rules()
        stale = live - wanted
        for rule in rules:
            if not self._rule_present(rule, live):
                self._change(report, f"added {rule.table} rule {rule.saved()}", rule.argv(rule.add_op))
                revert.add(f"remove {rule.saved()}", lambda rule=rule: self.host.run(rule.argv("-D")))
        for table, line in sorted(stale):
            self._change(report, f"removed stale {table} rule {line}", _delete_argv(table, line))
            argv = ["iptables", "-w", "5", "-t", table, *shlex.split(line)]
            revert.add(f"re-add {line}", lambda argv=argv: self.host.run(argv))

    def _converge_forwarding(self, revert: Revert, report: Report) -> None:
        before = self.host.read_sysctl("net.ipv4.ip_forward")
        if before != "1":
            self.host.write_sysctl("net.ipv4.ip_forward", "1")
            report.actions.append("enabled net.ipv4.ip_forward")
            revert.add("restore ip_forward", lambda: self.host.write_sysctl("net.ipv4.ip_forward", before or "0"))

    def _converge_dns(self, revert: Revert, report: Report) -> None:
        s = self.settings
        for path in (s.dhcp_hosts_file, s.addn_hosts_file):  # dnsmasq reads them; `ct` fills them
            if self.host.read_text(path) is None:
                self._write_file(path, "", revert, report)
        files = {s.dnsmasq_conf: render.dnsmasq_conf(s), **self.dns.unit_files()}
        changed = {path: text for path, text in files.items() if self.host.read_text(path) != text}
        pid = self.dns.running_pid()
        if not changed and pid is not None:
            return
        if s.dnsmasq_conf in changed:
            self._test_dnsmasq_conf(changed[s.dnsmasq_conf])
        if pid is None:
            holders = port_holders(self.host, s)
            if holders:
                raise ServiceError(
                    "dnsmasq cannot bind its ports on the gateway: "
                    + "; ".join(str(holder) for holder in holders)
                    + f". Stop that process or make it bind elsewhere (for a system dnsmasq: `bind-interfaces` "
                    f"with `except-interface={s.bridge}`), then run `proximity up` again."
                )
            revert.add(f"stop {self.dns.describe()}", self.dns.stop)
        else:
            revert.add(f"restart {self.dns.describe()} with its old config", self.dns.restart)
        if not self.host.dry_run:
            for directory in (s.leases_file.parent, s.state_dir, s.run_dir):
                directory.mkdir(parents=True, exist_ok=True)
        for path, text in changed.items():
            self._write_file(path, text, revert, report)
        if pid is None:
            self.dns.enable()
            self.dns.start()
            report.actions.append(f"started {self.dns.describe()}")
        else:
            self.dns.restart()
            report.actions.append(f"restarted {self.dns.describe()} (config changed)")

    def _verify(self) -> None:
        status = self.status()
        if status.health_status != "healthy":
            raise ConvergeError("verification failed: " + "; ".join(status.reasons))

    # -- helpers ------------------------------------------------------------------------
    def _read_interfaces(self) -> str:
        text = self.host.read_text(self.settings.interfaces_file)
        if text is None:
            raise SettingsError(
                f"setting 'interfaces_file': {self.settings.interfaces_file} does not exist; "
                "point --interfaces-file at the host's interfaces file"
            )
        return text

    def _hand_written_stanza(self, text: str) -> interfaces.Stanza | None:
        return next(
            (st for st in interfaces.parse_stanzas(text) if st.name == self.settings.bridge and not st.managed),
            None,
        )

    def _write_interfaces(self, old: str, new: str, revert: Revert, report: Report) -> None:
        path = self.settings.interfaces_file
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        backup = self.settings.backup_dir / f"{path.name}.{stamp}"
        if not self.host.dry_run:  # a dry run's plan lists the files that matter, not the backup
            self.host.write_text(backup, old, mode=0o600)
        report.actions.append(f"backed up {path} to {backup}")
        self._write_file(path, new, revert, report)

    def _write_file(self, path: Path, text: str, revert: Revert, report: Report) -> None:
        before = self.host.read_text(path)
        self.host.write_text(path, text)
        report.actions.append(f"wrote {path}")
        if before is None:
            revert.add(f"remove {path}", lambda: self.host.remove(path))
        else:
            revert.add(f"restore {path}", lambda: self.host.write_text(path, before))

    def _ifreload(self, report: Report | None) -> None:
        self._ensure_ifupdown_rundir()
        argv = ["ifreload", "-a"]
        attempts = 0
        while True:  # ifupdown2's lock is machine-wide: another ifreload may hold it briefly
            try:
                self.host.run(argv, timeout=self.settings.ifreload_timeout)
                break
            except CommandError as exc:
                attempts += 1
                if exc.returncode != 89 or attempts >= 20:
                    raise
                time.sleep(0.25)
        if report is not None:
            report.actions.append("applied the interfaces file with `ifreload -a`")

    def _ensure_ifupdown_rundir(self) -> None:
        if not self.host.dry_run:
            Path("/run/network").mkdir(parents=True, exist_ok=True)

    def _ifquery_check(self, expect_bridge: bool) -> None:
        result = self.host.query(["ifquery", "-a", "--check", "-o", "json"], timeout=30)
        try:
            entries = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            raise ConvergeError(f"`ifquery -a --check` gave no readable answer: {result.stderr.strip()}") from None
        ours = [entry for entry in entries if entry.get("name") == self.settings.bridge]
        if expect_bridge and (not ours or any(entry.get("status") != "pass" for entry in ours)):
            failed = {k: v for entry in ours for k, v in entry.get("config_status", {}).items() if v == "fail"}
            raise ConvergeError(
                f"`ifquery -a --check` does not pass for {self.settings.bridge} after `ifreload -a`: "
                + (", ".join(f"{key} fails" for key in failed) or "not applied")
            )

    def _test_dnsmasq_conf(self, text: str) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="proximity-dnsmasq.", suffix=".conf") as fh:
            fh.write(text)
            fh.flush()
            result = self.host.query([dnsmasq_binary(), "--test", f"--conf-file={fh.name}"])
        if not result.ok:
            raise ServiceError(f"dnsmasq rejects the rendered config: {result.stderr.strip()}")

    def _rule_present(self, rule: render.Rule, live: set[tuple[str, str]]) -> bool:
        """``live`` is ``_own_rules()``. The rule's exact saved line there proves it is present;
        only a rule missing from it costs an ``iptables -C``, which knows every equivalent spelling."""
        return (rule.table, rule.saved()) in live or self.host.query(rule.argv("-C")).ok

    def _own_rules(self) -> set[tuple[str, str]]:
        """Live rules carrying Proximity's comment, as (table, iptables-save line)."""
        tag = f"--comment {render.comment(self.settings)} "
        found, table = set(), None
        for line in self.host.query(["iptables-save"]).stdout.splitlines():  # every table in one dump
            line = line.replace('"', "")  # iptables-nft quotes every comment, legacy does not
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and tag in line:
                found.add((table, line))
        return found

    def _change(self, report: Report, description: str, argv: list[str]) -> None:
        self.host.run(argv)
        report.actions.append(description)

    def _dns_answers(self) -> bool:
        probe = f"{self.settings.service_name}-probe.{self.settings.domain}"
        return self.host.resolve(probe, str(self.settings.gateway.ip)) is not None

    def _dhcp_served(self, pid: int) -> bool:
        return any(h.pid == pid and h.local.endswith(":67") for h in port_holders(self.host, self.settings))

    def _pve_firewall(self) -> bool:
        mode = self.settings.proxmox_firewall
        if mode != "auto":
            return mode == "on"
        if self.settings.netns:  # a sandbox has no Proxmox firewall
            return False
        try:
            text = PVE_CLUSTER_FIREWALL.read_text()
        except OSError:
            return False
        return any(line.replace(" ", "").lower() == "enable:1" for line in text.splitlines())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One converge at a time per host; a dry run changes nothing and takes no lock."""
        if self.host.dry_run:
            yield
            return
        path = self.settings.lock_file
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            if not wait_for(lambda: _try_lock(fh), timeout=60, interval=0.05):
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise ConvergeError(f"another Proximity run (pid {holder}) holds {path}; wait for it to finish")
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _finish(self, report: Report) -> None:
        if isinstance(self.host, DryRunHost):
            report.files = self.host.files
            report.commands = self.host.commands

    def _failed(
        self, verb: str, exc: BaseException, failures: list[str], notes: list[str] = ()
    ) -> ConvergeError:
        message = f"`proximity {verb}` failed: {exc}"
        for note in notes:
            message += f"\nNote: {note}"
        if failures:
            message += "\nCould NOT undo: " + "; ".join(failures) + f"\nCheck {self.settings.interfaces_file} by hand."
        else:
            message += "\nEvery change was undone; the host is as it was before."
        return ConvergeError(message)


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _delete_argv(table: str, saved_line: str) -> list[str]:
    parts = shlex.split(saved_line)
    return ["iptables", "-w", "5", "-t", table, "-D", *parts[1:]]
