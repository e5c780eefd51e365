"""The changes a plan is made of: each says what it does, does it, and undoes it.

A change is a frozen value: the dry run prints it, ``apply`` runs it against a ``Host`` (the
real one, or a ``DryRunHost`` that only records), and ``undo`` puts back what ``apply`` changed.
Every ``apply`` is safe to run again on a host where it already happened (kill -9 between two
changes leaves a host that the next plan simply finishes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from proximity.errors import HostError
from proximity.host import CommandError, Host
from proximity.network.dnsmasq import DnsService, ServiceError, port_holders
from proximity.network.render import dnsmasq_binary
from proximity.network.firewall import Rule, parse_own_rules
from proximity.settings import Settings

IFUPDOWN_RUN_DIR = Path("/run/network")
IFUPDOWN_LOCKED = 89  # ifupdown2's exit code when another ifreload holds its machine-wide lock


@dataclass(frozen=True)
class Env:
    """What changes act through."""

    host: Host
    settings: Settings
    dns: DnsService


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
class WriteDnsConfig(WriteFile):
    """dnsmasq.conf, checked with ``dnsmasq --test`` before it replaces the old one."""

    def apply(self, env: Env) -> None:
        result = env.host.query([dnsmasq_binary(), "--test", "--conf-file=-"], input=self.text)
        if not result.ok:
            raise ServiceError(f"dnsmasq rejects the rendered config: {result.stderr.strip()}")
        super().apply(env)


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


# -- the bridge -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ifreload(Change):
    """``ifreload -a``: apply the whole interfaces file (only when an admin runs up or down)."""

    bridge: str
    bridge_existed: bool  # before this plan: the undo deletes a bridge it made
    rules_before: tuple[Rule, ...]  # the undo removes rules that post-up lines added
    check_bridge: bool = True  # `ifquery --check` must pass for the bridge afterwards

    def describe(self) -> str:
        return "apply the interfaces file with `ifreload -a`"

    def apply(self, env: Env) -> None:
        ifreload(env)
        if self.check_bridge and not env.host.dry_run:
            ifquery_check(env)

    def undo(self, env: Env) -> None:
        # The file is restored by then (undos run in reverse). Reload even if that fails too
        # (another stanza's post-up may hang): what matters is the live state.
        try:
            ifreload(env)
        finally:
            links = {link["ifname"] for link in env.host.ip_json("link", "show")}
            if not self.bridge_existed and self.bridge in links:
                env.host.run(["ip", "link", "delete", self.bridge])
            live = parse_own_rules(env.host.query(["iptables-save"]).stdout, env.settings)
            for rule in set(live) - set(self.rules_before):
                env.host.run(rule.argv("-D"))


@dataclass(frozen=True)
class IfupBridge(Change):
    """``ifup BRIDGE``: bring back only our bridge (healing never reloads the admin's other edits)."""

    bridge: str

    def describe(self) -> str:
        return f"bring {self.bridge} up with `ifup {self.bridge}`"

    def apply(self, env: Env) -> None:
        env.host.mkdir(IFUPDOWN_RUN_DIR)
        _retry_locked(env, ["ifup", self.bridge])


@dataclass(frozen=True)
class DeleteLink(Change):
    name: str

    def describe(self) -> str:
        return f"delete the link {self.name}"

    def apply(self, env: Env) -> None:
        if env.host.dry_run or any(link["ifname"] == self.name for link in env.host.ip_json("link", "show")):
            env.host.run(["ip", "link", "delete", self.name])


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
            env.host.run(self.rule.argv("-D"))


@dataclass(frozen=True)
class DeleteRule(Change):
    rule: Rule

    def describe(self) -> str:
        return f"remove {self.rule.table} rule {self.rule.saved()}"

    def apply(self, env: Env) -> None:
        if env.host.dry_run or env.host.query(self.rule.argv("-C")).ok:  # a post-down line may have removed it
            env.host.run(self.rule.argv("-D"))

    def undo(self, env: Env) -> None:
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


# -- dnsmasq --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartDns(Change):
    def describe(self) -> str:
        return "start dnsmasq"

    def apply(self, env: Env) -> None:
        holders = port_holders(env.host, env.settings)
        if holders:
            s = env.settings
            raise ServiceError(
                "dnsmasq cannot bind its ports on the gateway: " + "; ".join(map(str, holders))
                + f". Stop that process or make it bind elsewhere (for a system dnsmasq: `bind-interfaces` "
                f"with `except-interface={s.bridge}`), then run `proximity up` again.")
        env.dns.enable()
        env.dns.start()

    def undo(self, env: Env) -> None:
        env.dns.stop()


@dataclass(frozen=True)
class RestartDns(Change):
    why: str

    def describe(self) -> str:
        return f"restart dnsmasq ({self.why})"

    def apply(self, env: Env) -> None:
        env.dns.restart()

    def undo(self, env: Env) -> None:
        env.dns.restart()  # the old config is back by then


@dataclass(frozen=True)
class ReloadDns(Change):
    def describe(self) -> str:
        return "reload dnsmasq's reservations and names (SIGHUP)"

    def apply(self, env: Env) -> None:
        env.dns.reload()

    def undo(self, env: Env) -> None:
        env.dns.reload()


@dataclass(frozen=True)
class StopDns(Change):
    disable: bool = field(default=False)

    def describe(self) -> str:
        return "stop dnsmasq" + (" and disable its unit" if self.disable else "")

    def apply(self, env: Env) -> None:
        env.dns.stop()
        if self.disable:
            env.dns.disable()

    def undo(self, env: Env) -> None:
        if self.disable:
            env.dns.enable()
        env.dns.start()


# -- helpers ---------------------------------------------------------------------------------------
def ifreload(env: Env) -> None:
    env.host.mkdir(IFUPDOWN_RUN_DIR)
    _retry_locked(env, ["ifreload", "-a"])


def _retry_locked(env: Env, argv: list[str]) -> None:
    """ifupdown2's lock is machine-wide: another reload may hold it for a moment."""
    for attempt in range(20):
        try:
            env.host.run(argv, timeout=env.settings.ifreload_timeout)
            return
        except CommandError as exc:
            if exc.returncode != IFUPDOWN_LOCKED or attempt == 19:
                raise
            time.sleep(0.25)


def ifquery_check(env: Env) -> None:
    """``ifquery -a --check`` must pass for the bridge: ifupdown2's own word that it is applied."""
    bridge = env.settings.bridge
    result = env.host.query(["ifquery", "-a", "--check", "-o", "json"], timeout=30)
    try:
        entries = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise HostError(f"`ifquery -a --check` gave no readable answer: {result.stderr.strip()}") from None
    ours = [entry for entry in entries if entry.get("name") == bridge]
    if not ours or any(entry.get("status") != "pass" for entry in ours):
        failed = {k for entry in ours for k, v in entry.get("config_status", {}).items() if v == "fail"}
        raise HostError(f"`ifquery -a --check` does not pass for {bridge} after `ifreload -a`: "
                        + (", ".join(f"{key} fails" for key in sorted(failed)) or "not applied"))


