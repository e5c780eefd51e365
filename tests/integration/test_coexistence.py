"""Coexistence with another nftables firewall on a real sandbox host: a stand-in for proxmox-firewall
(its two tables, with a DROP input policy) is named by doctor and status, table and chain, through a
trace of the probe's own packets; `up` still converges and leaves it alone; without it, healthy again.
A probe killed while it traces leaves no monitor behind, and the next probe deletes its table."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from proximity import sandbox as sandboxes
from proximity.host import Host
from proximity.network.probe import list_ruleset
from proximity.network.probe import load as load_probe
from proximity.network.trace import PREFIX
from proximity.settings import load_settings
from tests.integration.tools import proximity, wait_or_fail

# proxmox-firewall's skeleton as it names things (field-facts §2): input runs lo and conntrack first, then
# the host rules (management ports), then the datacenter policy_in: DROP. The guests' bridge table
# accepts (no firewalled NIC here), so the trace must name input, not a chain the packets only passed.
STAND_IN = """
table inet proxmox-firewall {
    chain host-in {
        tcp dport { 22, 8006 } accept
    }
    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state vmap { established : accept, related : accept, invalid : drop }
        jump host-in
    }
    chain output {
        type filter hook output priority filter; policy accept;
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state vmap { established : accept, related : accept, invalid : drop }
    }
}
table bridge proxmox-firewall-guests {
    chain vm-out {
        type filter hook prerouting priority 0; policy accept;
    }
    chain vm-in {
        type filter hook postrouting priority 0; policy accept;
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
    }
}
"""


def stand_in(sb, present: bool) -> None:
    if present:
        load(sb, STAND_IN)
    else:
        for table in (["inet", "proxmox-firewall"], ["bridge", "proxmox-firewall-guests"]):
            sandboxes.ns_run(sb.name, ["nft", "delete", "table", *table], check=False)


def load(sb, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", sb.name, "nft", "-f", "-"], input=text, text=True, check=True, timeout=10)


def tables(sb) -> list[str]:
    return sandboxes.ns_run(sb.name, ["nft", "list", "tables"]).stdout.split("\n")


def by_id(checks: list[dict]) -> dict[str, dict]:
    return {check["id"]: check for check in checks}


def test_a_proxmox_firewall_stand_in_is_named_and_nothing_else_breaks(network):
    sb = network
    before = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert before["health_status"] == "healthy", before["reasons"]
    stand_in(sb, True)
    try:
        doctor = proximity("doctor", "--sandbox", sb.name, "--json", check=False)
        checks = by_id(json.loads(doctor.stdout))
        probe = checks["end_to_end_probe"]
        assert not probe["ok"] and "table inet proxmox-firewall, chain input" in probe["observed"], probe
        assert "DHCP" in probe["observed"] and "policy drop" in probe["observed"], probe
        assert "router solicitation" in probe["observed"], probe  # the probe client's IPv6 is traced too
        assert "Proxmox API token" in probe["fix"], probe
        other = checks["other_nft_tables"]
        assert not other["ok"] and "table inet proxmox-firewall, chain input" in other["observed"], other
        assert "proxmox-firewall-guests" not in other["observed"], other  # it accepts: not a suspect

        status = proximity("status", "--sandbox", sb.name, "--json", check=False)
        data = json.loads(status.stdout)
        assert status.returncode != 0 and data["health_status"] != "healthy", data
        assert any("proxmox-firewall" in r and "chain input" in r for r in data["reasons"]), data["reasons"]
        saved = load_probe(Host(), load_settings(**sb.settings_overrides()))
        assert saved is not None and saved.blocked_by == "inet proxmox-firewall input", saved

        # Nothing else breaks: `up` plans nothing, leaves the stand-in alone, and its own table stays.
        listed = sandboxes.ns_run(sb.name, ["nft", "list", "table", "inet", "proxmox-firewall"]).stdout
        up = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
        assert not up["actions"], up
        assert sandboxes.ns_run(sb.name, ["nft", "list", "table", "inet", "proxmox-firewall"]).stdout == listed
        names = tables(sb)
        assert "table inet proximity" in names and not any(PREFIX in t for t in names), names
    finally:
        stand_in(sb, False)
    healed = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert healed["health_status"] == "healthy", healed["reasons"]
    doctor = by_id(json.loads(proximity("doctor", "--sandbox", sb.name, "--json", check=False).stdout))
    assert doctor["end_to_end_probe"]["ok"] and doctor["other_nft_tables"]["ok"], doctor


TRACER = """
import sys, time
from proximity.host import Host
from proximity.network.trace import Trace
with Trace(Host(sys.argv[1]), "prox-net", "pxpkilled", "02:00:00:00:00:01") as trace:
    print(trace.error or trace._proc.pid, flush=True)
    time.sleep(60)
"""


def test_a_probe_killed_while_it_traces_leaves_nothing_behind(network):
    sb = network
    stand_in(sb, True)
    try:
        proc = subprocess.Popen([sys.executable, "-c", TRACER, sb.name], stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline().strip()
            assert first.isdigit(), f"the trace did not start: {first}"
            monitor = int(first)
            assert f"table inet {PREFIX}{proc.pid}" in tables(sb)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        wait_or_fail(lambda: not Host().alive(monitor), 10, "the killed probe's `nft monitor` to exit")
        assert f"table inet {PREFIX}{proc.pid}" in tables(sb)  # left behind: the next probe removes it
    finally:
        stand_in(sb, False)
    doctor = by_id(json.loads(proximity("doctor", "--sandbox", sb.name, "--json", check=False).stdout))  # it probes
    assert doctor["end_to_end_probe"]["ok"], doctor["end_to_end_probe"]
    listing = list_ruleset(Host(sb.name))[0]
    assert not [item for item in listing["nftables"] if PREFIX in json.dumps(item)], "a trace table is left"
    status = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert status["health_status"] == "healthy", status["reasons"]


@pytest.mark.parametrize("family", ["inet", "ip"])
def test_another_tables_rule_that_drops_dns_is_named_with_its_rule(network, family):
    sb = network
    text = (f'table {family} other-fw {{\n chain input {{\n  type filter hook input priority 10; policy accept;\n'
            f'  iifname "prox-net" udp dport 53 drop\n  iifname "prox-net" tcp dport 53 drop\n }}\n}}\n')
    load(sb, text)
    try:
        data = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
        probe = by_id(data["checks"])["end_to_end_probe"]
        assert not probe["ok"] and f"table {family} other-fw, chain input" in probe["observed"], probe
        assert "DNS" in probe["observed"] and "udp dport 53 drop" in probe["observed"], probe
        assert f"ip netns exec {sb.name} nft insert rule {family} other-fw input" in probe["fix"], probe
        # The fix, as printed, works.
        subprocess.run(["bash", "-c", probe["fix"].split("`")[-2]], check=True, timeout=10)
        fixed = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
        assert fixed["health_status"] == "healthy", fixed["reasons"]
    finally:
        sandboxes.ns_run(sb.name, ["nft", "delete", "table", family, "other-fw"], check=False)
    healed = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert healed["health_status"] == "healthy", healed["reasons"]


def test_without_a_trace_the_drop_policy_is_still_named(network, monkeypatch):
    """`nft monitor` cannot run (here: made to fail): the probe names the chains whose policy drops."""
    from proximity.network import trace
    from proximity.network.reconciler import NetworkManager

    def refuse(self):
        raise RuntimeError("`nft monitor` exited at once (status 1)")

    sb = network
    monkeypatch.setattr(trace.Trace, "_start", refuse)
    stand_in(sb, True)
    try:
        result = NetworkManager(load_settings(**sb.settings_overrides())).run_probe()
        assert not result.ok and result.cause == "firewall_drop", result
        assert "table inet proxmox-firewall, chain input: policy drop" in result.reason, result
        assert "could not trace" in result.reason and "exited at once" in result.reason, result
        assert not any(PREFIX in t for t in tables(sb))
    finally:
        stand_in(sb, False)
    healed = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert healed["health_status"] == "healthy", healed["reasons"]
