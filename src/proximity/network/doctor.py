"""The network's troubleshooting checks (the seed's troubleshooting section), each with its fix.

`proximity doctor` (proximity.doctor) runs these with the checks that need the containers too.
"""

from __future__ import annotations

import re

from proximity.network import interfaces
from proximity.network.health import health
from proximity.network.reconciler import Check, NetworkManager


def network_checks(manager: NetworkManager, sandbox_name: str | None = None) -> list[Check]:
    s, host = manager.settings, manager.host
    obs = manager.observe(probe=True)
    st = health(s, obs)
    up_cmd = "proximity up" + (f" --sandbox {sandbox_name}" if sandbox_name else "")
    logs = f"tail {s.dns_log_file}" if not host.has_systemd else f"journalctl -u {s.service_name} -n 50"
    checks = [
        Check("bridge", st.bridge_exists and st.bridge_up and st.gateway_assigned,
              f"{s.bridge} exists={st.bridge_exists} up={st.bridge_up} address {s.gateway} assigned={st.gateway_assigned}",
              up_cmd),
        Check("NAT rule", st.nat_configured,
              f"MASQUERADE of {s.subnet} out of {st.uplink or '(no uplink)'}",
              f"{up_cmd}  (or: iptables -t nat -A POSTROUTING -s {s.subnet} -o {st.uplink or 'vmbr0'} -j MASQUERADE)"),
        Check("isolation rules", st.isolation_configured,
              f"new connections from outside into {s.bridge} are dropped", up_cmd),
        Check("ip_forward", st.ip_forward, "net.ipv4.ip_forward = " + ("1" if st.ip_forward else "0"),
              "sysctl -w net.ipv4.ip_forward=1"),
        Check("dnsmasq running", st.dhcp_service_running,
              f"{manager.dns.describe()}" + (f", pid {st.dns_pid}" if st.dns_pid else ""),
              f"systemctl restart {s.service_name}" if host.has_systemd else up_cmd),
        Check("DNS answering", st.dns_answering, f"a DNS query to {s.gateway.ip}:53",
              f"check the dnsmasq log: {logs}"),
        Check("DHCP served", st.dhcp_served, f"dnsmasq holds udp port 67 on {s.bridge}, range {st.dhcp_range}",
              f"check the dnsmasq log: {logs}"),
        Check("dnsmasq config current", st.dns_config_current or not st.dhcp_service_running,
              "dnsmasq runs with the config on disk and the bridge of now", up_cmd),
        Check("container ports", not st.detached_ports,
              f"{st.container_ports} managed container port(s)"
              + (f"; not on {s.bridge}: {', '.join(st.detached_ports)}" if st.detached_ports else ""), up_cmd),
    ]
    checks.append(_probe_check(manager, st))
    checks.append(_leases_check(manager))
    checks += [Check("disk space", False, f"the file system of {d} is full ({free // 1024} KiB free): dnsmasq cannot "
                     "record its leases", f"free some space there (`df -h {d}`), then `{up_cmd}`")
               for d, free in obs.full_disks] or [Check("disk space", True, "room to spare for the state and the leases")]
    checks += _port_checks(manager, obs)
    checks += _firewall_policy_checks(manager, st.isolation_configured)
    checks += _interfaces_file_checks(manager)
    return checks


def _probe_check(manager: NetworkManager, st) -> Check:
    """End to end: a throwaway client on the bridge must get a lease and resolve a name."""
    if not st.bridge_exists:
        return Check("end-to-end probe", False, f"skipped: {manager.settings.bridge} does not exist", "proximity up")
    result = manager.run_probe()
    if result.ok:
        return Check("end-to-end probe", True, f"a client got {result.lease} and a DNS answer from "
                                               f"{manager.settings.gateway.ip}")
    return Check("end-to-end probe", False, result.reason, result.fix)


def _leases_check(manager: NetworkManager) -> Check:
    path = manager.settings.leases_file
    if not path.exists():
        return Check("leases", False, f"{path} does not exist yet (no DHCP client has asked)", "", warning=True)
    leases, warnings = manager.leases()
    detail = f"{len(leases)} lease(s) in {path}"
    if warnings:
        return Check("leases", False, detail + "; " + "; ".join(warnings), "remove the malformed lines", warning=True)
    return Check("leases", True, detail)


def _port_checks(manager: NetworkManager, obs) -> list[Check]:
    own_pid = obs.dns.pid if obs.dns else None
    holders = [h for h in (obs.probes.port_holders if obs.probes else ()) if h.pid != own_pid]
    if not holders:
        return [Check("ports 53/67", True, f"nothing else holds DNS or DHCP on {manager.settings.gateway.ip}")]
    return [Check("ports 53/67", False, "; ".join(map(str, holders)),
                  f"stop those processes or make them bind elsewhere (bind-interfaces, "
                  f"except-interface={manager.settings.bridge})")]


def _policy(manager: NetworkManager, chain: str) -> str | None:
    result = manager.host.query(["iptables", "-w", "5", "-S", chain])
    match = re.match(rf"-P {chain} (\w+)", result.stdout)
    return match.group(1) if match else None


def _firewall_policy_checks(manager: NetworkManager, own_rules_ok: bool) -> list[Check]:
    checks = []
    forward = _policy(manager, "FORWARD")
    if forward == "DROP":
        checks.append(Check(
            "FORWARD policy", own_rules_ok,
            "FORWARD policy is DROP (Docker sets this); Proximity's ACCEPT rules for the bridge "
            + ("are in place" if own_rules_ok else "are missing, so containers cannot reach out"),
            "proximity up", warning=own_rules_ok))
    else:
        checks.append(Check("FORWARD policy", True, f"FORWARD policy is {forward or 'unknown'}"))
    if _policy(manager, "INPUT") == "DROP":
        checks.append(Check(
            "INPUT policy", False,
            f"INPUT policy is DROP (ufw/firewalld?): DHCP (udp 67) and DNS (53) to {manager.settings.bridge} may be blocked",
            f"iptables -I INPUT -i {manager.settings.bridge} -p udp -m multiport --dports 53,67 -j ACCEPT; "
            f"iptables -I INPUT -i {manager.settings.bridge} -p tcp --dport 53 -j ACCEPT",
            warning=True))
    return checks


def _interfaces_file_checks(manager: NetworkManager) -> list[Check]:
    path = manager.settings.interfaces_file
    text = manager.host.read_text(path) or ""
    checks = []
    has_source = any(
        line.split()[:1] == ["source"] and "interfaces.d" in line for line in text.splitlines()
    ) or any(line.split()[:1] == ["source-directory"] for line in text.splitlines())
    checks.append(Check(
        "source interfaces.d", has_source,
        f"{path} " + ("reads" if has_source else "does not read") + " /etc/network/interfaces.d/*",
        f"add the line `source /etc/network/interfaces.d/*` to {path} (Proxmox's default)", warning=True))
    pending = path.with_name(path.name + ".new")
    if manager.host.read_text(pending) is not None:
        checks.append(Check("pending Proxmox changes", False,
                             f"{pending} holds network changes staged in the Proxmox GUI",
                             "apply or revert them in the GUI (Network > Apply Configuration)", warning=True))
    try:
        interfaces.find_block(text)
    except interfaces.InterfacesFileError as exc:
        checks.append(Check("managed block", False, str(exc), "fix the marker lines by hand"))
    return checks
