"""The network's troubleshooting checks, each with what was observed and the whole fix for this host.

`proximity doctor` (proximity.doctor) runs these with the checks that need the containers too.
"""

from __future__ import annotations

from proximity.network import interfaces
from proximity.network.firewall import accept_chain, filter_chains
from proximity.network.health import Check
from proximity.network.probe import list_ruleset
from proximity.network.reconciler import NetworkManager
from proximity.network.trace import suspects

# Where another table's drop policy stops what a zone sends to the host (DHCP, DNS, RS, ND, DHCPv6) or through it.
ZONE_HOOKS = {family: {"prerouting", "input", "forward"} for family in ("inet", "ip", "ip6", "bridge")}


def network_checks(manager: NetworkManager) -> list[Check]:
    """Status's checks, with a fresh end-to-end probe, and those only doctor runs."""
    s = manager.settings
    bridge = any(link.get("ifname") == s.bridge for link in manager.host.ip_json("link", "show"))
    replaced = None
    if not bridge:
        replaced = Check("end_to_end_probe", "end-to-end probe", False, f"skipped: {s.bridge} does not exist",
                         f"run `{s.command('up')}`")
    else:
        try:
            manager.run_probe()
        except Exception as exc:  # a check, not a change: say it could not run
            replaced = Check("end_to_end_probe", "end-to-end probe", False,
                             f"the end-to-end probe could not run: {exc}", "see the message")
    obs = manager.observe(probe=True)
    st = manager.verdict(obs)
    checks = [replaced if replaced is not None and c.id == replaced.id else c for c in st.checks]
    checks.append(_leases_check(manager))
    checks += _port_checks(manager, obs)
    checks += _firewall_policy_checks(manager, st.isolation_configured)
    checks.append(_other_tables_check(manager))
    checks += _interfaces_file_checks(manager)
    return checks + zone_checks(manager)


def zone_checks(manager: NetworkManager) -> list[Check]:
    """Every further zone's status checks, each after a fresh end-to-end probe of that zone's own bridge."""
    from dataclasses import replace

    from proximity.network.probe import probe, save
    from proximity.network.zone_status import zone_statuses

    obs = manager.observe()
    _, zones, _ = manager.zone_views(obs)
    down = obs.intent.zones_down if obs.intent else ()
    for view, zone_obs in zones:
        if view.zone not in down and zone_obs.link(view.bridge) is not None:
            try:
                save(manager.host, view, probe(manager.host, view))
            except Exception:  # noqa: BLE001 - a check, not a change: its status says the probe is missing or old
                pass
    return [replace(check, zone=view.zone, name=f"zone {view.zone}: {check.name}")
            for view, status in zone_statuses(manager)[1:] for check in status.checks]


def _leases_check(manager: NetworkManager) -> Check:
    path = manager.settings.leases_file
    if manager.host.read_text(path, errors="replace") is None:  # a bad byte is the leases' own warning
        return Check("leases_file", "leases", False, f"{path} does not exist yet (no DHCP client has asked)",
                     "none needed: dnsmasq writes it at the first lease", "warning")
    leases, warnings = manager.leases()
    detail = f"{len(leases)} lease(s) in {path}"
    if warnings:
        return Check("leases_file", "leases", False, detail + "; " + "; ".join(warnings),
                     f"remove the malformed lines from {path}", "warning")
    return Check("leases_file", "leases", True, detail)


def _port_checks(manager: NetworkManager, obs) -> list[Check]:
    own_pid = obs.dns.pid if obs.dns else None
    holders = [h for h in (obs.probes.port_holders if obs.probes else ()) if h.pid != own_pid]
    if not holders:
        return [Check("ports_free", "ports 53/67", True,
                      f"nothing else holds DNS or DHCP on {manager.settings.gateway.ip}")]
    return [Check("ports_free", "ports 53/67", False, "another process holds DNS or DHCP: " + "; ".join(map(str, holders)),
                  f"stop those processes or make them bind elsewhere (bind-interfaces, "
                  f"except-interface={manager.settings.bridge})")]


def _firewall_policy_checks(manager: NetworkManager, own_rules_ok: bool) -> list[Check]:
    s, checks = manager.settings, []
    chains = filter_chains(manager.host.query(["iptables-save", "-t", "filter"]).stdout)
    forward = chains.get("FORWARD")
    if forward == "DROP":
        checks.append(Check(
            "forward_policy", "FORWARD policy", own_rules_ok,
            "FORWARD policy is DROP (Docker sets this), which Proximity's nftables table cannot override; its "
            f"iptables ACCEPT rules for the bridge (in {accept_chain(chains)}) "
            + ("are in place" if own_rules_ok else "are missing, so containers cannot reach out"),
            "" if own_rules_ok else f"run `{s.command('up')}`", "warning" if own_rules_ok else "error"))
    else:
        checks.append(Check("forward_policy", "FORWARD policy", True, f"FORWARD policy is {forward or 'unknown'}"))
    if chains.get("INPUT") == "DROP":
        allow = s.host_command(f"iptables -I INPUT -i {s.bridge} -p udp -m multiport --dports 53,67 -j ACCEPT",
                               f"iptables -I INPUT -i {s.bridge} -p tcp --dport 53 -j ACCEPT")
        checks.append(Check(
            "input_policy", "INPUT policy", False,
            f"INPUT policy is DROP (ufw/firewalld?): DHCP (udp 67) and DNS (53) to {s.bridge} may be blocked",
            f"if the end-to-end probe fails, allow them: `{allow}`", "warning"))
    return checks


def _other_tables_check(manager: NetworkManager) -> Check:
    """Other nftables tables whose base chains drop by policy where a zone's traffic passes (iptables' own
    tables are the policy checks above). The end-to-end probe traces which of them drops its packets."""
    s = manager.settings
    listing, error = list_ruleset(manager.host)
    if error:
        return Check("other_nft_tables", "other nftables tables", False, f"cannot read the ruleset: {error}",
                     "install nftables (`apt install nftables`)", "warning")
    dropping = [c for c in suspects(listing, ZONE_HOOKS, with_iptables=False) if c.policy == "drop"]
    if not dropping:
        return Check("other_nft_tables", "other nftables tables", True,
                     "no other nftables table drops by policy at prerouting, input or forward")
    named = "; ".join(f"{c.where} (hook {c.hook}, policy drop, {c.rules} rule(s))" for c in dropping)
    return Check("other_nft_tables", "other nftables tables", False,
                 f"{named}: an accept in Proximity's table cannot cancel another table's drop, so DHCP, DNS, "
                 f"router solicitations, neighbour discovery and DHCPv6 from {s.bridge} pass only if that table "
                 "accepts them", "if the end-to-end probe fails, it names the chain that dropped its packets: "
                 f"let them through in the tool that owns it (for the Proxmox firewall, `{s.command('up')}` "
                 "with the Proxmox API token set adds host rules)", "warning")


def _interfaces_file_checks(manager: NetworkManager) -> list[Check]:
    path = manager.settings.interfaces_file
    text = manager.host.read_text(path) or ""
    checks = []
    has_source = any(
        line.split()[:1] == ["source"] and "interfaces.d" in line for line in text.splitlines()
    ) or any(line.split()[:1] == ["source-directory"] for line in text.splitlines())
    checks.append(Check(
        "source_interfaces_d", "source interfaces.d", has_source,
        f"{path} " + ("reads" if has_source else "does not read") + " /etc/network/interfaces.d/*",
        "" if has_source else f"add the line `source /etc/network/interfaces.d/*` to {path} (Proxmox's default)",
        "warning"))
    pending = path.with_name(path.name + ".new")
    if manager.host.read_text(pending) is not None:
        checks.append(Check("pending_proxmox_changes", "pending Proxmox changes", False,
                            f"{pending} holds network changes staged in the Proxmox GUI",
                            "apply or revert them in the GUI (Network > Apply Configuration)", "warning"))
    try:
        interfaces.find_block(text)
    except interfaces.InterfacesFileError as exc:
        checks.append(Check("managed_block", "managed block", False, str(exc), f"fix the marker lines in {path} by hand"))
    return checks
