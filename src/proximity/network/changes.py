"""The changes a plan is made of: each says what it does, does it, and undoes it.

A change is a frozen value: the dry run prints it, ``apply`` runs it against a ``Host`` (the
real one, or a ``DryRunHost`` that only records), and ``undo`` puts back what ``apply`` changed.
Every ``apply`` is safe to run again on a host where it already happened (kill -9 between two
changes leaves a host that the next plan simply finishes).
"""

from __future__ import annotations

import contextlib

import functools
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from proximity.errors import HostError
from proximity.host import CommandError, Host
from proximity.host.ifupdown import is_locked, retry_while_locked
from proximity.network.dnsmasq import DnsService
from proximity.network.firewall import Rule, parse_own_rules
from proximity.network.pvefirewall import PveFirewallApi, PveRule
from proximity.settings import Settings

IFUPDOWN_RUN_DIR = Path("/run/network")


class Env:
    """What changes act through: the host, the settings, dnsmasq, and (when used) the Proxmox API."""

    def __init__(self, host: Host, settings: Settings, dns: DnsService):
        self.host, self.settings, self.dns = host, settings, dns

    @functools.cached_property
    def pve(self) -> PveFirewallApi:
        return PveFirewallApi(self.settings)


class Change:
    """One step of a plan."""

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, env: Env) -> None:
        raise NotImplementedError

    def undo(self, env: Env) -> None:
        """Most changes can be undone; those that cannot say so in their description."""

    def __str__(self) -> str:
        return self.describe()


# -- files ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteFile(Change):
    path: Path
    text: str
    before: str | None
    backup: bool = False  # keep a timestamped copy of the old file in the backup directory

    def describe(self) -> str:
        return f"write {self.path}"

    def apply(self, env: Env) -> None:
        if self.backup and self.before is not None and not env.host.dry_run:  # a dry run shows what matters
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            env.host.write_text(env.settings.backup_dir / f"{self.path.name}.{stamp}", self.before, mode=0o600)
        env.host.write_text(self.path, self.text)

    def undo(self, env: Env) -> None:
        if self.before is None:
            env.host.remove(self.path)
        else:
            env.host.write_text(self.path, self.before)


@dataclass(frozen=True)
class RemoveFile(Change):
    path: Path
    before: str

    def describe(self) -> str:
        return f"remove {self.path}"

    def apply(self, env: Env) -> None:
        env.host.remove(self.path)

    def undo(self, env: Env) -> None:
        env.host.write_text(self.path, self.before)


@dataclass(frozen=True)
class RemoveDir(Change):
    """Remove a directory Proximity made, once its files are gone (a deleted zone's state directory)."""

    path: Path

    def describe(self) -> str:
        return f"remove the directory {self.path}"

    def apply(self, env: Env) -> None:
        if not env.host.dry_run:
            with contextlib.suppress(FileNotFoundError):
                self.path.rmdir()

    def undo(self, env: Env) -> None:
        env.host.mkdir(self.path)


# -- the bridge -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BridgeState:
    """The bridge before a change: whether it existed, was up, its addresses and its ports."""

    exists: bool
    up: bool = False
    addresses: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()

    def restore(self, env: Env, bridge: str) -> None:
        links = {link["ifname"]: link for link in env.host.ip_json("address", "show")}
        link = links.get(bridge)
        if link is None:
            return
        if not self.exists:
            delete_link(env, bridge)
            return
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and f"{a['local']}/{a['prefixlen']}" not in self.addresses:
                cidr = f"{a['local']}/{a['prefixlen']}"
                delete(env, ["ip", "address", "del", cidr, "dev", bridge],
                       lambda: _has_address(env, bridge, cidr))
        if not self.up and "UP" in link.get("flags", []):
            env.host.run(["ip", "link", "set", "dev", bridge, "down"])
        for port in self.ports:  # a re-created bridge has lost them
            if port in links and links[port].get("master") != bridge:
                env.host.run(["ip", "link", "set", "dev", port, "master", bridge])

    def reattach(self, env: Env, bridge: str) -> None:
        """Put back the ports an ``ifreload`` took off: ifupdown2 removes (and downs) every port of a
        changed bridge that ``bridge-ports none`` does not list, containers' and VMs' alike."""
        links = {link["ifname"]: link for link in env.host.ip_json("link", "show")}
        for port in self.ports:
            link = links.get(port)
            if link is not None and (link.get("master") != bridge or "UP" not in link.get("flags", [])):
                env.host.run(["ip", "link", "set", "dev", port, "master", bridge, "up"])


@dataclass(frozen=True)
class ApplyInterfaces(Change):
    """Write the interfaces file (with a backup) and apply it, as one change with one undo.

    ``ifreload -a`` applies the whole file: only when an admin runs up or down. ``ifup BRIDGE``
    applies only our bridge: what the service uses, so an admin's unapplied edits stay unapplied.
    """

    path: Path
    text: str | None  # None: remove the file (a zone's own, on `down`)
    before: str | None  # None: the file was not there (a new zone's)
    bridge: str
    bridge_before: BridgeState  # the undo puts the bridge back as it was
    rules_before: tuple[Rule, ...]  # ... and removes the rules that post-up lines added
    whole_file: bool = True  # ifreload -a; False: ifup BRIDGE
    check_bridge: bool = True  # `ifquery --check` must pass for the bridge afterwards
    others: tuple[tuple[str, BridgeState], ...] = ()  # the other zones' bridges: `ifreload -a` takes their ports too
    reload: bool = True  # False: only write the file; the last change of its batch reloads (batch_reloads)
    batch: tuple[ApplyInterfaces, ...] = ()  # the earlier changes whose files this one's reload applies
    _reached: set = field(default_factory=set, compare=False, repr=False)  # how far apply got

    def describe(self) -> str:
        how = "`ifreload -a`" if self.whole_file else f"`ifup {self.bridge}`"
        if not self.reload:
            how = "the one `ifreload -a` of every zone below"
        if self.text is None:
            return f"remove {self.path} and apply the change with {how}"
        return (f"write {self.path} and apply it with {how}" if self.text != self.before
                else f"apply {self.path} with {how}")

    def apply(self, env: Env) -> None:
        if self.text is None:
            env.host.remove(self.path)
        elif self.text != self.before:
            WriteFile(self.path, self.text, self.before, backup=True).apply(env)
        if not self.reload:
            return
        env.host.mkdir(IFUPDOWN_RUN_DIR)
        parts = (*self.batch, self)
        for part in parts:
            part._reached.add("reload")  # from here each part's undo puts its bridge back too
        _retry_locked(env, ["ifreload", "-a"] if self.whole_file else ["ifup", self.bridge])
        if self.whole_file and not env.host.dry_run:
            for bridge, state in self.others:
                state.reattach(env, bridge)
        checked = [part for part in parts if part.check_bridge]
        if checked and not env.host.dry_run:
            ifquery_check(env, *(part.bridge for part in checked))
            for part in checked:
                part.bridge_before.reattach(env, part.bridge)

    def undo(self, env: Env) -> None:
        """The file differs from the old one only in the bridge's stanza, so putting the bridge, its
        addresses, ports and rules back is the whole undo. A bridge this change made or deleted is
        reloaded away or back, so that ifupdown2's own state follows too."""
        if self.text != self.before:
            WriteFile(self.path, "", self.before).undo(env)  # the old text back, or no file
        if "reload" not in self._reached:
            return
        links = {link["ifname"] for link in env.host.ip_json("link", "show")}
        try:
            if self.bridge_before.exists != (self.bridge in links):  # made, or deleted: reload it back
                _retry_locked(env, ["ifreload", "-a"])  # even if that fails (a hanging post-up elsewhere)
        finally:
            self.bridge_before.restore(env, self.bridge)
            live = parse_own_rules(env.host.query(["iptables-save"]).stdout, env.settings)
            for rule in set(live) - set(self.rules_before):
                delete_rule(env, rule)


@dataclass(frozen=True)
class DeleteLink(Change):
    name: str

    def describe(self) -> str:
        return f"delete the link {self.name}"

    def apply(self, env: Env) -> None:
        if env.host.dry_run or _link_exists(env, self.name):
            delete_link(env, self.name)


@dataclass(frozen=True)
class AttachPort(Change):
    """Put a container's port back on the bridge (it was re-created, and its ports were lost)."""

    port: str
    bridge: str
    vmid: int
    hostname: str

    def describe(self) -> str:
        return f"attach {self.port} (CT {self.vmid} {self.hostname}) to {self.bridge}"

    def apply(self, env: Env) -> None:
        env.host.run(["ip", "link", "set", "dev", self.port, "master", self.bridge, "up"])

    def undo(self, env: Env) -> None:
        env.host.query(["ip", "link", "set", "dev", self.port, "nomaster"])


# -- rules and sysctls ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AddRule(Change):
    rule: Rule

    def describe(self) -> str:
        return f"add {self.rule.table} rule {self.rule.saved()}"

    def apply(self, env: Env) -> None:
        if env.host.dry_run or not env.host.query(self.rule.argv("-C")).ok:  # a post-up line may have added it
            env.host.run(self.rule.argv(self.rule.add_op))

    def undo(self, env: Env) -> None:
        if env.host.query(self.rule.argv("-C")).ok:
            delete_rule(env, self.rule)


@dataclass(frozen=True)
class DeleteRule(Change):
    rule: Rule
    copies_before: int = 1  # how many copies the host had: the undo puts them all back

    def describe(self) -> str:
        return f"remove {self.rule.table} rule {self.rule.saved()}"

    def apply(self, env: Env) -> None:
        if env.host.dry_run or env.host.query(self.rule.argv("-C")).ok:  # a post-down line may have removed it
            delete_rule(env, self.rule)

    def undo(self, env: Env) -> None:
        live = parse_own_rules(env.host.query(["iptables-save"]).stdout, env.settings).count(self.rule)
        for _ in range(self.copies_before - live):
            env.host.run(self.rule.argv(self.rule.add_op))


@dataclass(frozen=True)
class SetSysctl(Change):
    key: str
    value: str
    before: str | None

    def describe(self) -> str:
        return f"set {self.key} = {self.value}"

    def apply(self, env: Env) -> None:
        env.host.write_sysctl(self.key, self.value)

    def undo(self, env: Env) -> None:
        env.host.write_sysctl(self.key, self.before or "0")


# -- the Proxmox host firewall -------------------------------------------------------------------
@dataclass(frozen=True)
class AddPveRule(Change):
    rule: PveRule

    def describe(self) -> str:
        return f"add the Proxmox host firewall rule {self.rule.comment!r}"

    def apply(self, env: Env) -> None:
        if not env.host.dry_run:
            env.pve.add(self.rule)

    def undo(self, env: Env) -> None:
        env.pve.delete(self.rule.comment)


@dataclass(frozen=True)
class DeletePveRule(Change):
    rule: PveRule  # as it is live, so that the undo can put it back

    def describe(self) -> str:
        return f"remove the Proxmox host firewall rule {self.rule.comment!r}"

    def apply(self, env: Env) -> None:
        if not env.host.dry_run:
            env.pve.delete(self.rule.comment)

    def undo(self, env: Env) -> None:
        env.pve.add(self.rule)


# -- helpers ---------------------------------------------------------------------------------------
def delete(env: Env, argv: list[str], still_there) -> None:
    """Delete something; if the command fails because it is already gone, that is converged.

    Another process (an ``ifreload`` left running by a killed run, a post-down line, an admin) can
    remove it between the check and the delete: ``iptables -D`` then says "Bad rule" and ``ip link
    delete`` "Cannot find device". Only a delete that fails while the thing is still there is an error.
    """
    result = env.host.run(argv, check=False)
    if not result.ok and not env.host.dry_run and still_there():
        raise CommandError(result.argv, result.returncode, result.stderr or result.stdout)


def delete_rule(env: Env, rule: Rule) -> None:
    delete(env, rule.argv("-D"), lambda: env.host.query(rule.argv("-C")).ok)


def delete_link(env: Env, name: str) -> None:
    delete(env, ["ip", "link", "delete", name], lambda: _link_exists(env, name))


def _link_exists(env: Env, name: str) -> bool:
    return any(link["ifname"] == name for link in env.host.ip_json("link", "show"))


def _has_address(env: Env, name: str, cidr: str) -> bool:
    return any(f"{a['local']}/{a['prefixlen']}" == cidr for link in env.host.ip_json("address", "show")
               if link["ifname"] == name for a in link.get("addr_info", []))


def _retry_locked(env: Env, argv: list[str]) -> None:
    """Run an ifupdown2 command, waiting while another run holds its machine-wide lock."""

    def attempt(seconds_left: float) -> CommandError | None:
        try:
            env.host.run(argv, timeout=min(seconds_left, env.settings.ifreload_timeout))
        except CommandError as exc:
            if not is_locked(exc.returncode, str(exc)):
                raise
            return exc
        return None

    failure = retry_while_locked(attempt, lambda result: result is not None, env.settings.ifreload_timeout)
    if failure is not None:
        raise failure


def ifquery_check(env: Env, *bridges: str) -> None:
    """``ifquery -a --check`` must pass for the bridges (default: the zone's): ifupdown2's own word that
    they are applied. One run checks them all (it parses every stanza each time: ~0.4 s)."""
    result = env.host.query(["ifquery", "-a", "--check", "-o", "json"], timeout=30)
    try:
        entries = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise HostError(f"`ifquery -a --check` gave no readable answer: {result.stderr.strip()}") from None
    for bridge in bridges or (env.settings.bridge,):
        ours = [entry for entry in entries if entry.get("name") == bridge]
        if not ours or any(entry.get("status") != "pass" for entry in ours):
            failed = {k for entry in ours for k, v in entry.get("config_status", {}).items() if v == "fail"}
            raise HostError(f"`ifquery -a --check` does not pass for {bridge} after `ifreload -a`: "
                            + (", ".join(f"{key} fails" for key in sorted(failed)) or "not applied"))


def batch_reloads(per_zone: list[tuple[str, list[Change]]]) -> list[tuple[str, Change]]:
    """Every zone's changes in order, but with the zones' ``ifreload -a`` (ApplyInterfaces) first and
    merged: each writes its file, the last reloads once and checks every bridge once. Each reload and
    check takes ~0.5 s (ifupdown2 parses every stanza), so ten zones built one by one took ~10 s."""
    applies = [(zone, c) for zone, changes in per_zone for c in changes
               if isinstance(c, ApplyInterfaces) and c.whole_file and c.reload and not c.batch]
    rest = [(zone, c) for zone, changes in per_zone for c in changes if all(c is not a for _, a in applies)]
    if len(applies) < 2:
        return [(zone, c) for zone, changes in per_zone for c in changes]
    *early, (zone, last) = applies
    early = [(z, replace(c, reload=False)) for z, c in early]
    return [*early, (zone, replace(last, batch=tuple(c for _, c in early))), *rest]


