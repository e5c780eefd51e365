"""Plan: a pure function from (settings, observation) to the list of changes that converge the host.

An empty plan means converged; that is the only definition of converged. ``up`` applies a plan,
observes again and plans again until the plan is empty (a change can reveal the next one: a
bridge re-created by ``ifreload`` has lost its ports, which the next plan attaches).

Two modes differ only in how the bridge is applied: ``up`` (an admin asked) runs ``ifreload -a``;
``heal`` (the service, continuously) touches only what Proximity owns and runs ``ifup BRIDGE``, so
an admin's unrelated, unapplied edits to other interfaces are never applied behind their back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from proximity.errors import ConflictError
from proximity.network import interfaces, render, safety
from proximity.network.dns_changes import ReloadDns, RestartDns, StartDns, StopDns, WriteDnsConfig
from proximity.network.changes import (
    ApplyInterfaces, AttachPort, BridgeState, Change, DeleteLink, DeleteRule, RemoveFile,
    SetSysctl, WriteFile, AddPveRule, DeletePveRule,
)
from proximity.network.nft_changes import plan_firewall, plan_remove
from proximity.network.pvefirewall import PveRule, from_live, host_rules, is_own, node_name
from proximity.network.dnsmasq import content_hash
from proximity.network.observe import Observation
from proximity.network.reservations import render_addn_hosts, render_dhcp_hosts
from proximity.network.validate import check_subnet_free, resolve_uplink
from proximity.settings import Settings, SettingsError

Mode = Literal["up", "heal"]


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def describe(self) -> list[str]:
        return [change.describe() for change in self.changes]


def plan_up(settings: Settings, obs: Observation, mode: Mode = "up") -> Plan:
    """What makes the host match the settings."""
    s = settings
    text = obs.file(s.interfaces_file)
    if text is None:
        raise SettingsError(f"setting 'interfaces_file': {s.interfaces_file} does not exist; "
                            "point --interfaces-file at the host's interfaces file")
    uplink = resolve_uplink(s, obs)
    check_subnet_free(s, obs, interfaces.remove_block(text))
    refused = safety.refusals(s, obs)
    cut_off = safety.undeclared_uplink(s, obs, text, uplink)
    if cut_off:
        raise ConflictError(cut_off)
    if refused:
        raise ConflictError(f"Proximity will not run {s.bridge} (nothing was changed):\n  " + "\n  ".join(refused))
    warnings: list[str] = list(_not_built_yet(s))
    # 0. The nftables table first: the file the stanza's post-up loads exists before ifreload runs it,
    #    and an upgrade has NAT all along (the old iptables rules go in step 3, after it).
    changes, rule_changes = plan_firewall(s, obs, uplink)

    # 1. The bridge, declared in the interfaces file and live.
    new_text = _declared(s, text, warnings)
    link = obs.link(s.bridge)
    live = link is not None and link.up and (s.bridge, s.gateway) in obs.addresses
    remake_bridge = False
    if new_text != text or not live:
        changes.append(ApplyInterfaces(s.interfaces_file, new_text, text, s.bridge, _bridge_state(s, obs),
                                       obs.rules, whole_file=mode == "up"))
        remake_bridge = link is None

    # Pending GUI changes: Proxmox moves interfaces.new over interfaces on "Apply Configuration" or
    # at the next boot, so the stanza goes there too (it is never applied from there by us).
    pending = obs.file(s.pending_interfaces_file)
    if pending is not None:
        declared = _declared(s, pending, [])
        if declared != pending:
            changes.append(WriteFile(s.pending_interfaces_file, declared, pending))

    # 2. Managed containers' ports on the bridge (a re-created bridge has none; the next round sees it).
    if link is not None and not remake_bridge:
        changes += [AttachPort(a.port, s.bridge, a.vmid, a.hostname) for a in obs.attachments if a.master != s.bridge]

    # 3. iptables: the accepts a FORWARD policy of DROP needs, exactly once; no other rule of ours.
    changes += rule_changes

    # 4. Forwarding.
    forward = obs.sysctls.get("net.ipv4.ip_forward")
    if forward != "1":
        changes.append(SetSysctl("net.ipv4.ip_forward", "1", forward))

    # 5. dnsmasq's files, then dnsmasq itself: started, restarted when what it runs with is stale,
    #    or told to re-read the reservations.
    conf = render.dnsmasq_conf(s)
    hosts = {s.dhcp_hosts_file: render_dhcp_hosts(list(obs.reservations)),
             s.addn_hosts_file: render_addn_hosts(list(obs.reservations), s.domain)}
    files = {**hosts, **render.dns_unit_files(s, obs.systemd)}
    for path, wanted_text in files.items():
        if obs.file(path) != wanted_text:
            changes.append(WriteFile(path, wanted_text, obs.file(path)))
    if obs.file(s.dnsmasq_conf) != conf:
        changes.append(WriteDnsConfig(s.dnsmasq_conf, conf, obs.file(s.dnsmasq_conf)))
    dns = obs.dns
    if dns is None:
        changes.append(StartDns())
    elif dns.config != content_hash(conf):
        changes.append(RestartDns("its config changed" if dns.config else "it was not started by Proximity"))
    elif remake_bridge or (link is not None and dns.bridge_index != link.index):
        changes.append(RestartDns(f"{s.bridge} was re-created"))
    elif dns.hosts != content_hash(*hosts.values()):
        changes.append(ReloadDns())
    # 6. The Proxmox host firewall (on when the datacenter firewall is): DHCP and DNS to the gateway.
    if obs.pve_firewall:
        changes += _pve_changes(s, obs, host_rules(s), warnings)
    return Plan(tuple(changes), tuple(warnings))


def _not_built_yet(settings: Settings) -> list[str]:
    """What the settings declare that this version reads and checks but does not build yet: said, never ignored."""
    said = []
    if settings.zones:
        names = ", ".join(f"zones.{zone.name}" for zone in settings.zones)
        said.append(f"{names} in the settings: this version checks further zones but builds only {settings.bridge}; "
                    "nothing was made for them (docs/zones.md)")
    if settings.ipv6 != "off":
        said.append(f"ipv6 = {settings.ipv6!r} in the settings: this version does not build IPv6 on {settings.bridge} "
                    "yet; it stays IPv4 only (docs/zones.md)")
    return said


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


def plan_down(settings: Settings, obs: Observation, purge: bool = False) -> Plan:
    """What removes Proximity from the host: dnsmasq, its files, the stanza, the bridge, the rules."""
    s = settings
    text = obs.file(s.interfaces_file)
    if text is None:
        raise SettingsError(f"setting 'interfaces_file': {s.interfaces_file} does not exist; "
                            "point --interfaces-file at the host's interfaces file")
    changes: list[Change] = []
    units = [path for path in render.dns_unit_files(s, obs.systemd) if obs.file(path) is not None]
    if obs.dns is not None or units:
        changes.append(StopDns(disable=bool(units)))
    removable = [*units, s.dnsmasq_conf]
    if purge:
        removable += [s.leases_file, s.reservations_db, s.reservations_db.with_name(s.reservations_db.name + ".bak"),
                      s.dhcp_hosts_file, s.addn_hosts_file]
    changes += [RemoveFile(path, obs.file(path)) for path in removable if obs.file(path) is not None]
    pending = obs.file(s.pending_interfaces_file)
    if pending is not None and interfaces.remove_block(pending) != pending:
        changes.append(WriteFile(s.pending_interfaces_file,
                                 interfaces.remove_stanzas(interfaces.remove_block(pending), s.bridge), pending))
    new_text = interfaces.remove_block(text)
    if new_text != text:  # Proximity's bridge: no stanza of it stays (Proxmox's GUI adds IPv6 as its own)
        new_text = interfaces.remove_stanzas(new_text, s.bridge)
        changes.append(ApplyInterfaces(s.interfaces_file, new_text, text, s.bridge, _bridge_state(s, obs),
                                       obs.rules, check_bridge=False))
    mine = _stanza(s, new_text) is None and not safety.declared_elsewhere(s, obs)
    if mine and obs.link(s.bridge) is not None:
        changes.append(DeleteLink(s.bridge))
    changes += plan_remove(s, obs)
    changes += [DeleteRule(rule, obs.rules.count(rule)) for rule in obs.rules]
    warnings: list[str] = []
    if obs.pve_firewall:
        changes += _pve_changes(s, obs, [], warnings)
    return Plan(tuple(changes), tuple(warnings))


def _bridge_state(settings: Settings, obs: Observation) -> BridgeState:
    link = obs.link(settings.bridge)
    if link is None:
        return BridgeState(False)
    return BridgeState(True, link.up, tuple(str(a) for name, a in obs.addresses if name == settings.bridge),
                       tuple(port.name for port in obs.links if port.master == settings.bridge))


def _stanza(settings: Settings, text: str) -> interfaces.Stanza | None:
    """The bridge's stanza in the file (Proximity's or hand-written)."""
    return next((st for st in interfaces.parse_stanzas(text) if st.name == settings.bridge), None)


def _declared(settings: Settings, text: str, warnings: list[str]) -> str:
    """The interfaces file with the bridge declared: Proximity's stanza, or the admin's own if it matches."""
    s = settings
    # Only the inet stanza is compared: an inet6 one beside it (what Proxmox's GUI writes when IPv6 is
    # added to the bridge) is the admin's, kept as it is and merged by ifupdown2.
    hand = next((st for st in interfaces.parse_stanzas(text)
                 if st.name == s.bridge and not st.managed and st.family != "inet6"), None)
    if hand is None:
        return interfaces.merge_block(text, render.bridge_stanza(s))
    differences = interfaces.compare_bridge(hand, render.bridge_options(s), str(s.interfaces_file))
    if differences:
        raise SettingsError(
            f"{s.interfaces_file} already declares {s.bridge} by hand (line {hand.first_line}) and it differs from "
            "Proximity's settings:\n  " + "\n  ".join(differences)
            + f"\nMake that stanza match, or delete it and run `proximity up` to let Proximity manage {s.bridge}.")
    warnings.append(
        f"adopted the hand-written {s.bridge} stanza at {s.interfaces_file} line {hand.first_line}; the firewall "
        f"(NAT and isolation) is applied live, make sure a post-up line loads it at boot: "
        f"`post-up nft -f {s.ruleset_file}`")
    return interfaces.remove_block(text)
