"""The network core for real: ifupdown2, nftables, dnsmasq and DHCP clients in a sandbox host."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys

import dns.exception
import pytest

from proximity import sandbox as sandboxes
from proximity.host import ETC_NETNS, Host, pid_cmdline, wait_for
from proximity.network import interfaces, render
from proximity.network.reconciler import ConvergeError, NetworkManager
from proximity.sandbox import pve_host
from proximity.settings import load_settings

from tests.integration.tools import Listener, connect, proximity, resolve

GATEWAY = "10.10.0.1"


def settings_of(sb, **overrides):
    return load_settings(**{**sb.settings_overrides(), **overrides})


def own_rules(sb) -> list[str]:
    """Proximity's iptables rules (none, unless a FORWARD policy drops)."""
    saved = sandboxes.ns_run(sb.name, ["iptables-save"]).stdout
    return [line for line in saved.splitlines() if "proximity:prox-net" in line]


def table(sb) -> str | None:
    """``table inet proximity`` as nft lists it (None: there is none)."""
    result = sandboxes.ns_run(sb.name, ["nft", "list", "table", "inet", "proximity"], check=False)
    return result.stdout if result.returncode == 0 else None


def bridge_mac(sb) -> str:
    with Host(sb.name).iproute() as ipr:
        return ipr.get_links(ifname="prox-net")[0].get("IFLA_ADDRESS")


def bridge_exists(sb) -> bool:
    return sandboxes.ns_run(sb.name, ["ip", "link", "show", "prox-net"], check=False).returncode == 0


@pytest.fixture
def host(sandbox):
    """The sandbox host, brought back to its pre-`up` state after each test."""
    original = sandbox.interfaces_file.read_bytes()
    yield sandbox
    for client in sandboxes.clients(sandbox):
        sandboxes.detach_client(sandbox, client.hostname)
    for extra in (sandbox.root / "etc/network/interfaces.d").iterdir():
        extra.unlink()
    proximity("down", "--purge", "--sandbox", sandbox.name)
    assert sandbox.interfaces_file.read_bytes() == original


def test_up_builds_the_seed_network_and_down_restores_the_file(host):
    sb = host
    original = sb.interfaces_file.read_bytes()
    report = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
    assert report["changed"] and not report["dry_run"]

    # Declared in the interfaces file, applied and checked by ifupdown2 itself.
    text = sb.interfaces_file.read_text()
    assert interfaces.remove_block(text) == original.decode() and "iface prox-net inet static" in text
    assert sandboxes.ns_run(sb.name, ["ifquery", "-a", "--check"]).returncode == 0
    status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
    assert status["health_status"] == "healthy", status["reasons"]
    assert (status["bridge_up"], status["nat_configured"], status["dhcp_service_running"]) == (True, True, True)
    assert status["dhcp_range"] == "10.10.0.100-10.10.0.250" and status["uplink"] == "vmbr0"

    # Real DHCP clients get leases in the range, with their hostnames.
    nginx = sandboxes.attach_client(sb, "nginx-01")
    wordpress = sandboxes.attach_client(sb, "wordpress-02")
    for client in (nginx, wordpress):
        assert ipaddress.ip_address("10.10.0.100") <= ipaddress.ip_address(client.ip) <= ipaddress.ip_address("10.10.0.250")
    leases = json.loads(proximity("leases", "--sandbox", sb.name, "--json").stdout)
    assert {(lease["hostname"], lease["ip"]) for lease in leases} == {("nginx-01", nginx.ip), ("wordpress-02", wordpress.ip)}
    assert all(lease["mac"].count(":") == 5 for lease in leases)
    resolv = (ETC_NETNS / wordpress.ns / "resolv.conf").read_text()
    assert f"nameserver {GATEWAY}" in resolv

    # The gateway keeps its own MAC when ports come and go (a Linux bridge otherwise takes its
    # lowest port MAC, and peers lose the gateway until their ARP entry expires).
    assert bridge_mac(sb) == render.bridge_mac(load_settings())
    sandboxes.detach_client(sb, "nginx-01")
    assert bridge_mac(sb) == render.bridge_mac(load_settings())
    nginx = sandboxes.attach_client(sb, "nginx-01")

    # Names resolve from a peer; the upstream (the LAN's DNS server) answers the rest.
    assert resolve(wordpress.ns, "nginx-01.prox.local", GATEWAY) == [nginx.ip]
    assert resolve(nginx.ns, "wordpress-02.prox.local", GATEWAY) == [wordpress.ip]
    assert resolve(nginx.ns, sandboxes.INTERNET_NAME, GATEWAY) == [sandboxes.INTERNET_HOST]

    # Both reach the gateway, and each other by name.
    for client in (nginx, wordpress):
        assert sandboxes.ns_run(client.ns, ["busybox", "ping", "-c", "1", "-W", "2", GATEWAY]).returncode == 0
    with Listener(nginx.ns, "0.0.0.0", 80) as web:
        assert connect(wordpress.ns, nginx.ip, 80).stdout.strip() == "hello from 0.0.0.0"
        assert web.next_peer() == wordpress.ip
        # The outside cannot reach containers, even a LAN host that routes the subnet via the host.
        sandboxes.ns_run(sb.lan_ns, ["ip", "route", "replace", "10.10.0.0/24", "via", "198.51.100.2"])
        try:
            assert connect(sb.lan_ns, nginx.ip, 80, timeout=2).returncode != 0
        finally:
            sandboxes.ns_run(sb.lan_ns, ["ip", "route", "del", "10.10.0.0/24"])

    # Through NAT to the internet test host: it sees the host's uplink address, not the container's.
    with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 8080) as internet:
        for client in (nginx, wordpress):
            assert connect(client.ns, sandboxes.INTERNET_HOST, 8080).returncode == 0
            assert internet.next_peer() == "198.51.100.2"

    # dnsmasq answers neither DNS nor DHCP on the uplink.
    with pytest.raises(dns.exception.Timeout):
        resolve(sb.lan_ns, "nginx-01.prox.local", "198.51.100.2", timeout=1.0)
    probe = sandboxes.ns_run(
        sb.lan_ns, ["busybox", "udhcpc", "-i", "lan0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true"], check=False
    )
    assert probe.returncode != 0, probe.stdout + probe.stderr

    # A second `up` changes nothing: no write, no reload, no restart.
    watched = [sb.interfaces_file, sb.dnsmasq_conf]
    mtimes = [path.stat().st_mtime_ns for path in watched]
    pid = status["dns_pid"]
    again = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
    assert again["changed"] is False and again["actions"] == []
    assert [path.stat().st_mtime_ns for path in watched] == mtimes
    assert json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)["dns_pid"] == pid
    plan = json.loads(proximity("up", "--sandbox", sb.name, "--json", "--dry-run").stdout)
    assert plan["files"] == [] and plan["commands"] == []
    assert table(sb).count(" masquerade\n") == 2 and own_rules(sb) == []  # IPv4 and IPv6, in the one table

    # `down` puts the interfaces file back byte for byte and removes what `up` made.
    proximity("down", "--sandbox", sb.name)
    assert sb.interfaces_file.read_bytes() == original
    assert not bridge_exists(sb) and own_rules(sb) == [] and table(sb) is None
    assert not settings_of(sb).ruleset_file.exists() and not settings_of(sb).ruleset_state_file.exists()
    assert not sb.dnsmasq_conf.exists() and sb.leases_file.exists()  # leases kept without --purge


def test_dry_run_shows_the_plan_and_changes_nothing(host):
    sb = host
    before = sb.interfaces_file.read_bytes()
    plan = json.loads(proximity("up", "--sandbox", sb.name, "--dry-run", "--json").stdout)
    paths = {change["path"] for change in plan["files"]}
    assert str(sb.interfaces_file) in paths and str(sb.dnsmasq_conf) in paths
    new_conf = next(c for c in plan["files"] if c["path"] == str(sb.dnsmasq_conf))
    assert new_conf["before"] == "" and "interface=prox-net" in new_conf["after"]
    assert ["ip", "netns", "exec", sb.name, "ifreload", "-a"] in plan["commands"]
    ruleset = str(settings_of(sb).ruleset_file)
    assert ["ip", "netns", "exec", sb.name, "nft", "-f", ruleset] in plan["commands"]
    assert "masquerade" in next(c for c in plan["files"] if c["path"] == ruleset)["after"]
    human = proximity("up", "--sandbox", sb.name, "--dry-run").stdout
    assert "+iface prox-net inet static" in human and "would run:" in human
    assert sb.interfaces_file.read_bytes() == before
    assert not sb.dnsmasq_conf.exists() and not bridge_exists(sb) and own_rules(sb) == [] and table(sb) is None


def _assert_untouched(sb, original: bytes) -> None:
    assert sb.interfaces_file.read_bytes() == original
    assert not bridge_exists(sb)
    assert own_rules(sb) == [] and table(sb) is None and not settings_of(sb).ruleset_file.exists()
    assert NetworkManager(settings_of(sb)).dns.running_pid() is None


@pytest.mark.parametrize("fault", ["hang", "fail"])
def test_ifreload_failure_leaves_file_and_live_state(host, fault):
    sb = host
    original = sb.interfaces_file.read_bytes()
    command = "sleep 600" if fault == "hang" else "false"
    (sb.root / "etc/network/interfaces.d/fault").write_text(
        f"auto fault0\niface fault0 inet manual\n\tlink-type dummy\n\tpost-up {command}\n"
    )
    manager = NetworkManager(settings_of(sb, ifreload_timeout=3))
    with pytest.raises(ConvergeError) as caught:
        manager.up()
    message = str(caught.value)
    assert "ifreload -a" in message and ("timed out" in message if fault == "hang" else "exited with" in message)
    _assert_untouched(sb, original)


def test_port_held_by_another_process_is_named(host):
    sb = host
    original = sb.interfaces_file.read_bytes()
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", sb.name, sys.executable, "-c",
         "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53));"
         "print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert squatter.stdout.readline().strip() == "ready"
        result = proximity("up", "--sandbox", sb.name, check=False)
        assert result.returncode == 1
        assert f"pid {squatter.pid}" in result.stderr and "python" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        squatter.kill()
        squatter.wait()
    _assert_untouched(sb, original)


def test_killed_mid_up_then_up_again_converges(host):
    sb = host
    slow = sb.root / "etc/network/interfaces.d/slow"
    slow.write_text("auto slow0\niface slow0 inet manual\n\tlink-type dummy\n\tpost-up sleep 2\n")
    victim = subprocess.Popen([sys.executable, "-m", "proximity", "up", "--sandbox", sb.name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: "prox-net" in sb.interfaces_file.read_text(), timeout=30)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    slow.unlink()
    proximity("up", "--sandbox", sb.name)
    status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
    assert status["health_status"] == "healthy", status["reasons"]
    assert sb.interfaces_file.read_text().count(interfaces.MARKER) == 1


def test_two_ups_at_once_do_not_corrupt_anything(host):
    sb = host
    runs = [subprocess.Popen([sys.executable, "-m", "proximity", "up", "--sandbox", sb.name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert [code for code, _ in results] == [0, 0], results
    assert sb.interfaces_file.read_text().count(interfaces.MARKER) == 1
    assert table(sb).count("table inet proximity") == 1
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    # A process may end between the listing and the read (pid_cmdline is then None).
    dnsmasqs = [p for p in pids if f"--conf-file={sb.dnsmasq_conf}" in (pid_cmdline(p) or [])]
    assert len(dnsmasqs) == 1
    assert NetworkManager(settings_of(sb)).status().health_status == "healthy"


def test_bad_input_is_a_clear_error_and_changes_nothing(host):
    sb = host
    original = sb.interfaces_file.read_bytes()
    for args, needle in [
        (["--uplink", "nope0"], "uplink"),
        (["--interfaces-file", str(sb.root / "missing")], "interfaces_file"),
    ]:
        result = proximity("up", "--sandbox", sb.name, *args, check=False)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    clash = proximity("up", "--sandbox", sb.name, check=False, env={"PROXIMITY_GATEWAY": "198.51.100.77/24",
                                                                     "PROXIMITY_DHCP_START": "198.51.100.100",
                                                                     "PROXIMITY_DHCP_END": "198.51.100.200"})
    assert clash.returncode == 2 and "vmbr0" in clash.stderr and "overlaps" in clash.stderr
    _assert_untouched(sb, original)


def test_hand_written_bridge_is_adopted_or_refused(host):
    sb = host
    original = sb.interfaces_file.read_bytes()
    differing = original + b"\nauto prox-net\niface prox-net inet static\n\taddress 10.10.0.1/24\n\tbridge-ports none\n\tbridge-stp on\n\tbridge-fd 0\n"
    sb.interfaces_file.write_bytes(differing)
    try:
        result = proximity("up", "--sandbox", sb.name, check=False)
        assert result.returncode != 0 and "bridge-stp" in result.stderr and "line" in result.stderr
        assert sb.interfaces_file.read_bytes() == differing
        matching = differing.replace(b"bridge-stp on", b"bridge_stp off")
        sb.interfaces_file.write_bytes(matching)
        result = proximity("up", "--sandbox", sb.name)
        assert "adopted" in result.stderr
        assert sb.interfaces_file.read_bytes() == matching
        assert NetworkManager(settings_of(sb)).status().health_status == "healthy"
    finally:
        proximity("down", "--sandbox", sb.name, check=False)
        sb.interfaces_file.write_bytes(original)
        if bridge_exists(sb):
            pve_host.ifreload(sb.name)
            sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"], check=False)


def test_doctor_finds_drift_and_up_repairs_only_that(host):
    sb = host
    proximity("up", "--sandbox", sb.name)
    checks = json.loads(proximity("doctor", "--sandbox", sb.name, "--json").stdout)
    assert all(check["ok"] or check["warning"] for check in checks), checks
    names = {check["name"] for check in checks}
    assert {"NAT rule", "ip_forward", "dnsmasq running", "DNS answering", "ports 53/67", "FORWARD policy",
            "source interfaces.d", "leases"} <= names

    # Someone deletes the NAT rule from the table by hand and sets the FORWARD policy to DROP.
    listing = json.loads(sandboxes.ns_run(sb.name, ["nft", "-j", "list", "chain", "inet", "proximity",
                                                    "postrouting"]).stdout)
    handle = next(item["rule"]["handle"] for item in listing["nftables"] if "rule" in item)
    sandboxes.ns_run(sb.name, ["nft", "delete", "rule", "inet", "proximity", "postrouting", "handle", str(handle)])
    sandboxes.ns_run(sb.name, ["iptables", "-P", "FORWARD", "DROP"])
    try:
        result = proximity("doctor", "--sandbox", sb.name, "--json", check=False)
        assert result.returncode == 1
        failed = {c["name"]: c for c in json.loads(result.stdout) if not c["ok"]}
        assert "proximity up" in failed["NAT rule"]["fix"] and "differs" in failed["NAT rule"]["detail"]
        assert "DROP" in failed["FORWARD policy"]["detail"]
        status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
        assert status["health_status"] == "degraded" and any("NAT" in r for r in status["reasons"])

        repair = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
        assert "nftables table inet proximity" in repair["actions"][0]
        assert all("add filter rule -A FORWARD" in action for action in repair["actions"][1:]), repair["actions"]
        assert table(sb).count(" masquerade\n") == 2
        # With FORWARD on DROP, Proximity's own iptables ACCEPT rules still let containers out.
        client = sandboxes.attach_client(sb, "web-1")
        with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 8081) as internet:
            assert connect(client.ns, sandboxes.INTERNET_HOST, 8081).returncode == 0
            assert internet.next_peer() == "198.51.100.2"
    finally:
        sandboxes.ns_run(sb.name, ["iptables", "-P", "FORWARD", "ACCEPT"])


def test_proxmox_firewall_gets_the_conntrack_zone_rule(host):
    sb = host
    proximity("up", "--sandbox", sb.name, env={"PROXIMITY_PROXMOX_FIREWALL": "on"})
    assert 'iifname "fwbr*" ct zone set 1' in table(sb)
    assert "ct zone set 1" in settings_of(sb).ruleset_file.read_text()  # and again at boot, from post-up
    assert f"post-up nft -f {settings_of(sb).ruleset_file}" in sb.interfaces_file.read_text()
    # Turning it off again removes exactly that rule.
    proximity("up", "--sandbox", sb.name, env={"PROXIMITY_PROXMOX_FIREWALL": "off"})
    assert "ct zone" not in table(sb) and "masquerade" in table(sb)
