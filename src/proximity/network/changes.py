"""The changes a plan is made of: each says what it does, does it, and undoes it.

A change is a frozen value: the dry run prints it, ``apply`` runs it against a ``Host`` (the
real one, or a ``DryRunHost`` that only records), and ``undo`` puts back what ``apply`` changed.
Every ``apply`` is safe to run again on a host where it already happened (kill -9 between two
changes leaves a host that the next plan simply finishes).
"""

from __future__ import annotations

import contextlib

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from proximity.host import CommandError, Host
from proximity.network.dnsmasq import DnsService
from proximity.network.firewall import Rule, parse_own_rules
from proximity.network.pvefirewall import PveFirewallApi, PveRule
from proximity.settings import Settings

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
