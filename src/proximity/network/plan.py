"""Plan: a pure function from (the zones, an observation of each) to the changes that converge the host.

An empty plan means converged; that is the only definition of converged. ``up`` applies a plan,
observes again and plans again until the plan is empty (a change can reveal the next one: a
bridge re-created by ``ifreload`` has lost its ports, which the next plan attaches).

Two modes differ only in how the bridge is applied: ``up`` (an admin asked) runs ``ifreload -a``;
``heal`` (the service, continuously) touches only what Proximity owns and runs ``ifup BRIDGE``, so
an admin's unrelated, unapplied edits to other interfaces are never applied behind their back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

from proximity.errors import ConflictError
from proximity.network import interfaces, ipv6_host, safety
from proximity.network.bridge_changes import batch_reloads
from proximity.network.changes import AddPveRule, Change, DeletePveRule, DeleteRule, SetSysctl
from proximity.network.nft_changes import plan_firewall, plan_remove, spec_of
from proximity.network.observe import Observation
from proximity.network.plan_zone import check_zone, plan_zone_down, plan_zone_up, zone_text
from proximity.network.pvefirewall import PveRule, from_live, host_rules, is_own, node_name
from proximity.network.validate import resolve_uplink
from proximity.settings import Settings
from proximity.spec.view import ZoneSettings, default_view

Mode = Literal["up", "heal"]
Zone = tuple[ZoneSettings, Observation]  # a zone's view and the host observed with its files


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    zones: tuple[str, ...] = field(default=(), compare=False)  # the zone each change acts for, in order

    def __bool__(self) -> bool:
        return bool(self.changes)

    def describe(self) -> list[str]:
        return [change.describe() for change in self.changes]

    def zone_of(self, index: int) -> str | None:
        return self.zones[index] if index < len(self.zones) else None


class _Builder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.zones: list[str] = []
        self.warnings: list[str] = []

    def add(self, zone: str, changes: Iterable[Change]) -> None:
        for change in changes:
            self.changes.append(change)
            self.zones.append(zone)

    def plan(self) -> Plan:
        return Plan(tuple(self.changes), tuple(self.warnings), tuple(self.zones))


def plan_up(settings: Settings, obs: Observation, mode: Mode = "up", *, zones: Sequence[Zone] = (),
            peers: Iterable[Iterable[str]] = (), before: Iterable[Change] = ()) -> Plan:
    """What makes the host match the settings: the default zone (``settings``, ``obs``) and ``zones``,
    the further ones; ``peers``: pairs of zone names; ``before``: changes of Proximity's own state
    that come first (the zones' allocations)."""
    default = default_view(settings)
    every: list[Zone] = [(default, obs), *zones]
    host_text = interfaces.remove_block(zone_text(default, obs))
    uplink = resolve_uplink(default, obs)
    refused = {v.zone: check_zone(v, o, host_text) for v, o in every}
    cut_off = safety.undeclared_uplink(default, obs, zone_text(default, obs), uplink)
    if cut_off:
        raise ConflictError(cut_off)
    for v, _ in every:
        if refused[v.zone]:
            raise ConflictError(f"Proximity will not run {v.bridge} (nothing was changed):\n  "
                                + "\n  ".join(refused[v.zone]))
    ipv6_host.sysctl_changes([v for v, _ in every], uplink, obs.sysctls)  # a host without IPv6: refused now
    out = _Builder()
    out.add(default.zone, before)
    # 0. The nftables table first: the file the stanzas' post-up loads exists before ifreload runs it,
    #    and an upgrade has NAT all along (the old iptables rules go in step 3, after it).
    first, rule_changes = plan_firewall(default, obs, spec_of([v for v, _ in every], uplink, obs, peers))
    out.add(default.zone, first)
    # 1-2. Each zone's bridge, its containers' ports and its dnsmasq.
    #      New or changed stanzas of several zones are applied by one `ifreload -a` (batch_reloads).
    bridges = tuple(v.bridge for v, _ in every)
    for zone, change in batch_reloads([(v.zone, plan_zone_up(v, o, mode, out.warnings, bridges)) for v, o in every]):
        out.add(zone, [change])
    # 3. iptables: the accepts a FORWARD policy of DROP needs, exactly once; no other rule of ours.
    out.add(default.zone, rule_changes)
    # 4. Forwarding (IPv6's after the uplink keeps accepting router advertisements, ipv6_host).
    forward = obs.sysctls.get("net.ipv4.ip_forward")
    if forward != "1":
        out.add(default.zone, [SetSysctl("net.ipv4.ip_forward", "1", forward)])
    out.add(default.zone, [SetSysctl(key, value, old) for key, value, old
                           in ipv6_host.sysctl_changes([v for v, _ in every], uplink, obs.sysctls)])
    # 5. The Proxmox host firewall (on when the datacenter firewall is): DHCP and DNS to each gateway.
    if obs.pve_firewall:
        for v, o in every:
            out.add(v.zone, _pve_changes(v, o, host_rules(v), out.warnings))
    return out.plan()


def plan_down(settings: Settings, obs: Observation, purge: bool = False, *, zones: Sequence[Zone] = (),
              only: Sequence[Zone] | None = None, remaining_peers: Iterable[Iterable[str]] = ()) -> Plan:
    """What removes Proximity from the host: every zone's dnsmasq, files, stanza and bridge, then the
    table and the rules. ``only``: remove just these zones, and re-render the table without them."""
    default = default_view(settings)
    every: list[Zone] = [(default, obs), *zones]
    out = _Builder()
    bridges = tuple(v.bridge for v, _ in every)
    gone = {v.zone for v, _ in (every if only is None else only)}
    template_stays = any(not v.is_default and v.zone not in gone for v, _ in every)
    for v, o in (every if only is None else only):
        out.add(v.zone, plan_zone_down(v, o, purge, bridges, template_stays))
        if obs.pve_firewall:
            out.add(v.zone, _pve_changes(v, o, [], out.warnings))
    if only is None:
        out.add(default.zone, plan_remove(default, obs))
        out.add(default.zone, [DeleteRule(rule, obs.rules.count(rule)) for rule in obs.rules])
        return out.plan()
    staying = [v for v, _ in every if v.zone not in gone]
    if not staying:
        return plan_down(settings, obs, purge, zones=zones)
    if obs.firewall.table is not None:  # the others keep their table (a network down has none to keep)
        uplink = resolve_uplink(default, obs)
        first, rule_changes = plan_firewall(default, obs, spec_of(staying, uplink, obs, remaining_peers))
        out.add(default.zone, [*first, *rule_changes])
    return out.plan()


def _pve_changes(settings: Settings, obs: Observation, wanted: list[PveRule], warnings: list[str]) -> list[Change]:
    if obs.pve_rules is None:
        node = node_name(settings)
        if wanted:
            warnings.append(
                f"the Proxmox firewall is on, and Proximity cannot change its rules: {obs.pve_error}. Containers get "
                "no lease or name until DHCP and DNS to the gateway are open. Set the token, or add the rules by "
                "hand:\n  " + "\n  ".join(rule.pvesh(node) for rule in wanted))
        return []
    ours = [live for live in obs.pve_rules if is_own(live, settings)]
    changes: list[Change] = [DeletePveRule(from_live(live)) for live in ours
                             if not any(rule.matches(live) for rule in wanted)]
    changes += [AddPveRule(rule) for rule in wanted if not any(rule.matches(live) for live in ours)]
    return changes
