"""One zone's part of a plan: its bridge (stanza and link), its containers' ports, its dnsmasq.

Pure: a zone's view of the settings (:class:`proximity.spec.view.ZoneSettings`) and an observation
of the host with that zone's files in it. The default zone's stanza lives in the host's interfaces
file, as it always did; a further zone's in a file of Proximity's own under ``interfaces.d``.
"""

from __future__ import annotations

from proximity.network import interfaces, render, safety
from proximity.network.bridge_changes import ApplyInterfaces, AttachPort, BridgeState, DeleteLink
from proximity.network.changes import (Change, RemoveDir, RemoveFile,
                                       WriteFile)
from proximity.network.dns_changes import ReloadDns, RestartDns, StartDns, StopDns, WriteDnsConfig
from proximity.network.dnsmasq import content_hash
from proximity.network.observe import Observation
from proximity.network.reservations import render_addn_hosts, render_dhcp_hosts
from proximity.network.stanzas import is_sourced
from proximity.network.validate import check_subnet_free
from proximity.settings import SettingsError
from proximity.spec.view import ZoneSettings

ZONE_FILE_HEADER = ("# Proximity's own file: the stanza of one of its zones ('proximity up' rewrites it,\n"
                    "# 'proximity zone delete' removes it). Change the zone in proximity.toml instead.\n")


def zone_text(v: ZoneSettings, obs: Observation) -> str:
    """The zone's interfaces file as it is (a further zone's, not there yet: empty)."""
    text = obs.file(v.interfaces_file)
    if text is None and v.is_default:
        raise SettingsError(f"setting 'interfaces_file': {v.interfaces_file} does not exist; "
                            "point --interfaces-file at the host's interfaces file")
    return text or ""


def check_zone(v: ZoneSettings, obs: Observation, host_text: str) -> list[str]:
    """Why the zone cannot be built as it is (``[]``: it can); the host file's text without our stanzas."""
    if not v.is_default and not is_sourced(v.interfaces_file, obs.sources):
        host_file = v.host.interfaces_file
        return [f"{host_file} does not read {v.interfaces_file.parent}, where zone {v.zone}'s stanza goes: add the "
                f"line `source {v.interfaces_file.parent}/*` to {host_file} (Proxmox's own file has it), then run "
                "`proximity up`"]
    check_subnet_free(v, obs, host_text)
    # A further zone's bridge declared in the host's own file (which ``obs.sourced`` does not hold):
    # ifupdown2 would merge that stanza with the zone's, as safety.declared_elsewhere says of sourced files.
    theirs = [] if v.is_default else [st for st in interfaces.parse_stanzas(host_text, marked=False)
                                      if st.name == v.bridge]
    return [*(f"{v.host.interfaces_file} declares {v.bridge} (`iface {v.bridge} {st.family} ...`), the bridge of "
              f"zone {v.zone}: ifupdown2 would merge that stanza with the zone's, so the bridge is not Proximity's "
              f"alone. Delete or rename that stanza, or give the zone another name, then run `proximity up`"
              for st in theirs), *safety.refusals(v, obs)]


def plan_zone_up(v: ZoneSettings, obs: Observation, mode: str, warnings: list[str],
                 bridges: tuple[str, ...] = ()) -> list[Change]:
    """What makes one zone match its view; ``bridges``: every zone's (an ``ifreload -a`` takes their ports)."""
    text = zone_text(v, obs)
    changes: list[Change] = []
    new_text = declared(v, text, warnings)
    link = obs.link(v.bridge)
    live = link is not None and link.up and (v.bridge, v.gateway) in obs.addresses and (
        v.ipv6_gateway is None or (v.bridge, v.ipv6_gateway) in obs.addresses6)
    remake_bridge = False
    if new_text != text or not live:
        changes.append(ApplyInterfaces(v.interfaces_file, new_text, obs.file(v.interfaces_file), v.bridge,
                                       bridge_state(v, obs), obs.rules, whole_file=mode == "up",
                                       others=others(v, obs, bridges)))
        remake_bridge = link is None
    # Pending GUI changes: Proxmox moves interfaces.new over interfaces on "Apply Configuration" or
    # at the next boot, so the default zone's stanza goes there too (never applied from there by us).
    pending = obs.file(v.pending_interfaces_file) if v.is_default else None
    if pending is not None:
        wanted = declared(v, pending, [])
        if wanted != pending:
            changes.append(WriteFile(v.pending_interfaces_file, wanted, pending))
    # Managed containers' ports on the bridge (a re-created bridge has none; the next round sees it).
    if link is not None and not remake_bridge:
        changes += [AttachPort(a.port, v.bridge, a.vmid, a.hostname) for a in obs.attachments if a.master != v.bridge]
    return changes + _dns_up(v, obs, link, remake_bridge)


def _dns_up(v: ZoneSettings, obs: Observation, link, remake_bridge: bool) -> list[Change]:
    """dnsmasq's files, then dnsmasq itself: started, restarted when what it runs with is stale, or
    told to re-read the reservations."""
    conf = render.dnsmasq_conf(v, ipv6_default_route=obs.ipv6_default_route)
    hosts = reservation_files(v, obs.reservations)
    changes: list[Change] = [WriteFile(path, text, obs.file(path))
                             for path, text in {**hosts, **render.dns_unit_files(v, obs.systemd)}.items()
                             if obs.file(path) != text]
    if obs.file(v.dnsmasq_conf) != conf:
        changes.append(WriteDnsConfig(v.dnsmasq_conf, conf, obs.file(v.dnsmasq_conf)))
    dns = obs.dns
    if dns is None:
        changes.append(StartDns())
    elif dns.config != content_hash(conf):
        changes.append(RestartDns("its config changed" if dns.config else "it was not started by Proximity"))
    elif remake_bridge or (link is not None and dns.bridge_index != link.index):
        changes.append(RestartDns(f"{v.bridge} was re-created"))
    elif dns.hosts != content_hash(*hosts.values()):
        changes.append(ReloadDns())
    return changes


def reservation_files(v: ZoneSettings, reservations) -> dict:
    """dnsmasq's two files of the zone's reservations: dhcp-hosts (MAC, addresses, name) and hosts (names)."""
    return {v.dhcp_hosts_file: render_dhcp_hosts(list(reservations), v.subnet, v.ipv6_gateway),
            v.addn_hosts_file: render_addn_hosts(list(reservations), v.domain, v.subnet, v.ipv6_gateway)}


def plan_reservations(v: ZoneSettings, reservations, read, dns) -> list[Change]:
    """The zone's plan for a change of its reservations alone (``ct create``/``destroy`` apply it at once,
    under the reservations' lock): dnsmasq's two files, then a SIGHUP if dnsmasq runs with older ones.
    ``read``: a file's text now; ``dns``: the zone's dnsmasq (None: not running)."""
    files = reservation_files(v, reservations)
    changes: list[Change] = [WriteFile(path, text, read(path)) for path, text in files.items() if read(path) != text]
    if dns is not None and dns.hosts != content_hash(*files.values()):
        changes.append(ReloadDns())
    return changes


def plan_zone_down(v: ZoneSettings, obs: Observation, purge: bool, bridges: tuple[str, ...] = (),
                   template_stays: bool = False) -> list[Change]:
    """What removes one zone: its dnsmasq and files, its stanza (a further zone's whole file), its bridge.
    ``template_stays``: other further zones still run from the template unit, which is kept."""
    changes: list[Change] = []
    units = [path for path in render.dns_unit_files(v, obs.systemd) if obs.file(path) is not None]
    if obs.dns is not None or units:
        changes.append(StopDns(disable=bool(units)))
    removable = [*([] if template_stays and not v.is_default else units), v.dnsmasq_conf]
    if purge:
        removable += [v.leases_file, v.reservations_db, v.reservations_db.with_name(v.reservations_db.name + ".bak"),
                      v.dhcp_hosts_file, v.addn_hosts_file]
    changes += [RemoveFile(path, obs.file(path)) for path in removable if obs.file(path) is not None]
    if purge and not v.is_default:  # a further zone leaves no file behind: its log, its probe, its directory
        changes += [RemoveFile(path, obs.file(path)) for path in (v.dns_log_file, v.probe_file)
                    if obs.file(path) is not None]
        changes.append(RemoveDir(v.zone_dir))
    text = obs.file(v.interfaces_file)
    if v.is_default:
        pending = obs.file(v.pending_interfaces_file)
        if pending is not None and interfaces.remove_block(pending) != pending:
            changes.append(WriteFile(v.pending_interfaces_file,
                                     interfaces.remove_stanzas(interfaces.remove_block(pending), v.bridge), pending))
        if text is None:
            raise SettingsError(f"setting 'interfaces_file': {v.interfaces_file} does not exist; "
                                "point --interfaces-file at the host's interfaces file")
    new_text = interfaces.remove_block(text or "")
    if text is not None and new_text != text:  # no stanza of the bridge stays (Proxmox's GUI adds IPv6 as its own)
        new_text = interfaces.remove_stanzas(new_text, v.bridge)
        changes.append(ApplyInterfaces(v.interfaces_file, new_text if v.is_default else None, text, v.bridge,
                                       bridge_state(v, obs), obs.rules, check_bridge=False,
                                       others=others(v, obs, bridges)))
    mine = stanza(v, new_text) is None and not safety.declared_elsewhere(v, obs)
    if mine and obs.link(v.bridge) is not None:
        changes.append(DeleteLink(v.bridge))
    return changes


def bridge_state(v: ZoneSettings | str, obs: Observation) -> BridgeState:
    bridge = v if isinstance(v, str) else v.bridge
    link = obs.link(bridge)
    if link is None:
        return BridgeState(False)
    return BridgeState(True, link.up, tuple(str(a) for name, a in obs.addresses if name == bridge),
                       tuple(port.name for port in obs.links if port.master == bridge))


def others(v: ZoneSettings, obs: Observation, bridges: tuple[str, ...]) -> tuple[tuple[str, BridgeState], ...]:
    return tuple((b, bridge_state(b, obs)) for b in bridges if b != v.bridge and obs.link(b) is not None)


def stanza(v: ZoneSettings, text: str) -> interfaces.Stanza | None:
    """The bridge's stanza in the file (Proximity's or hand-written)."""
    return next((st for st in interfaces.parse_stanzas(text) if st.name == v.bridge), None)


def declared(v: ZoneSettings, text: str, warnings: list[str]) -> str:
    """The zone's file with the bridge declared: Proximity's stanza, or the admin's own if it matches."""
    # Only the inet stanza is compared: an inet6 one beside it (what Proxmox's GUI writes when IPv6 is
    # added to the bridge) is the admin's, kept as it is and merged by ifupdown2.
    hand = next((st for st in interfaces.parse_stanzas(text)
                 if st.name == v.bridge and not st.managed and st.family != "inet6"), None)
    if hand is None:
        merged = interfaces.merge_block(text or ("" if v.is_default else ZONE_FILE_HEADER), render.bridge_stanza(v))
        return interfaces.merge_inet6(merged, v.bridge, render.bridge_stanza6(v))
    differences = interfaces.compare_bridge(hand, render.bridge_options(v), str(v.interfaces_file))
    if differences:
        raise SettingsError(
            f"{v.interfaces_file} already declares {v.bridge} by hand (line {hand.first_line}) and it differs from "
            "Proximity's settings:\n  " + "\n  ".join(differences)
            + f"\nMake that stanza match, or delete it and run `proximity up` to let Proximity manage {v.bridge}.")
    warnings.append(
        f"adopted the hand-written {v.bridge} stanza at {v.interfaces_file} line {hand.first_line}; the firewall "
        f"(NAT and isolation) is applied live, make sure a post-up line loads it at boot: "
        f"`post-up nft -f {v.ruleset_file}`")
    return interfaces.remove_block(text)
