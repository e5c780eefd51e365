"""The bridge's changes: its stanza applied by ifupdown2 (with one undo), its link, its ports.

``ifreload -a`` applies the whole interfaces file: only when an admin runs up or down; the service
uses ``ifup BRIDGE``. Zones new in one ``up`` share one reload (:func:`batch_reloads`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from proximity.errors import HostError
from proximity.host import CommandError
from proximity.host.ifupdown import is_locked, retry_while_locked
from proximity.network.changes import Change, Env, WriteFile, delete, delete_rule
from proximity.network.firewall import Rule, parse_own_rules

IFUPDOWN_RUN_DIR = Path("/run/network")


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



# -- helpers ---------------------------------------------------------------------------------------
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
