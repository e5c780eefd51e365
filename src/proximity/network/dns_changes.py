"""The changes that drive dnsmasq: its config, start, restart, reload (SIGHUP) and stop, each with its undo."""

from __future__ import annotations

from dataclasses import dataclass, field

from proximity.network.changes import Change, Env, WriteFile
from proximity.network.dnsmasq import ServiceError, port_holders
from proximity.network.render import dnsmasq_binary
from proximity.network.safety import is_guest_port, physical_port_reason


@dataclass(frozen=True)
class WriteDnsConfig(WriteFile):
    """dnsmasq.conf, checked with ``dnsmasq --test`` before it replaces the old one."""

    def apply(self, env: Env) -> None:
        result = env.host.query([dnsmasq_binary(), "--test", "--conf-file=-"], input=self.text)
        if not result.ok:
            raise ServiceError(f"dnsmasq rejects the rendered config: {result.stderr.strip()}")
        super().apply(env)


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
        refuse_physical_ports(env)
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
        refuse_physical_ports(env)
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
        if env.dns.running_pid() is None:
            env.dns.start()


def refuse_physical_ports(env: Env) -> None:
    """dnsmasq is never started on a bridge with a port to a network Proximity does not own (checked
    live: ``ifreload`` may just have merged an admin's stanza from another file)."""
    if env.host.dry_run:
        return
    bridge = env.settings.bridge
    ports = [link["ifname"] for link in env.host.ip_json("link", "show")
             if link.get("master") == bridge and not is_guest_port(link["ifname"])]
    if ports:
        raise ServiceError(f"dnsmasq was not started: {physical_port_reason(env.settings, ports)}")
