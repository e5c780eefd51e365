"""What a real Proxmox host does to Proximity, in a sandbox: pending GUI changes (interfaces.new)
and an enabled host firewall (pve-firewall's PVEFW-HOST-IN, fed by the API double's host rules)."""

from __future__ import annotations

import json

import pytest

from proximity import sandbox as sandboxes
from proximity.host import wait_for
from proximity.network import interfaces
from proximity.sandbox.pvefw import PveFirewall
from tests.integration.tools import proximity, resolve
from tests.pve_double.server import MemoryRealizer, PveDouble

GATEWAY = "10.10.0.1"
TOKEN = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000009")


def status(sb, env=None) -> dict:
    return json.loads(proximity("status", "--sandbox", sb.name, "--json", env=env, check=False).stdout)


def stanzas(text: str) -> int:
    return sum(1 for st in interfaces.parse_stanzas(text) if st.name == "prox-net")


def test_pending_gui_changes_keep_the_stanza_and_are_not_applied(sandbox):
    sb = sandbox
    original = sb.interfaces_file.read_text()
    pending = sb.interfaces_file.with_name("interfaces.new")
    admin_edit = original + "\nauto eno9\niface eno9 inet manual\n"  # staged in the GUI, not applied
    pending.write_text(admin_edit)
    try:
        proximity("up", "--sandbox", sb.name)
        assert stanzas(sb.interfaces_file.read_text()) == 1 and stanzas(pending.read_text()) == 1
        assert "eno9" in pending.read_text() and "eno9" not in sb.interfaces_file.read_text()
        assert json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)["actions"] == []

        # "Apply Configuration": Proxmox renames interfaces.new over interfaces and reloads.
        proximity("sandbox", "apply", sb.name)
        assert not pending.exists() and stanzas(sb.interfaces_file.read_text()) == 1
        assert status(sb)["health_status"] == "healthy"

        # Pending changes again: down removes the stanza from both files.
        pending.write_text(sb.interfaces_file.read_text())
        proximity("down", "--sandbox", sb.name)
        assert stanzas(sb.interfaces_file.read_text()) == 0 and stanzas(pending.read_text()) == 0
    finally:
        pending.unlink(missing_ok=True)
        proximity("down", "--purge", "--sandbox", sb.name, check=False)
        sb.interfaces_file.write_text(original)


@pytest.fixture
def pve(sandbox):
    """The API double for node 'pve', with its host firewall compiled into the sandbox by a pve-firewall stand-in."""
    firewall = PveFirewall(sandbox.name, sync_every=0.5).start()
    cluster_fw = sandbox.root / "etc/pve/firewall/cluster.fw"
    cluster_fw.parent.mkdir(parents=True, exist_ok=True)
    cluster_fw.write_text("[OPTIONS]\n\nenable: 1\n")
    with PveDouble(MemoryRealizer(delay=0.01), token=TOKEN, tls=True) as double:
        double.firewall_enabled = True
        double.on_host_rules = firewall.set_rules
        try:
            yield double, firewall
        finally:
            proximity("down", "--purge", "--sandbox", sandbox.name, check=False, env=api_env(double))
            firewall.stop()
            cluster_fw.unlink()
            for client in sandboxes.clients(sandbox):
                sandboxes.detach_client(sandbox, client.hostname)


def api_env(double: PveDouble, token: bool = True) -> dict[str, str]:
    env = {"PROXIMITY_PROXMOX_HOST": "127.0.0.1", "PROXIMITY_PROXMOX_PORT": str(double.port),
           "PROXIMITY_PROXMOX_NODE": "pve", "PROXIMITY_PROXMOX_CA_FILE": double.ca_file}
    if token:
        env |= {"PROXIMITY_PROXMOX_TOKEN_ID": TOKEN[0], "PROXIMITY_PROXMOX_TOKEN_SECRET": TOKEN[1]}
    return env


def test_an_enabled_proxmox_firewall_is_opened_through_the_api(sandbox, pve):
    sb, (double, firewall) = sandbox, pve

    # Without a token, up sets the network up, cannot open the firewall, and says what to add by hand.
    no_token = api_env(double, token=False)
    result = proximity("up", "--sandbox", sb.name, env=no_token)
    assert "pvesh create /nodes/pve/firewall/rules" in result.stderr
    blocked = status(sb, no_token)
    assert blocked["health_status"] != "healthy"
    assert any("PVEFW-HOST-IN" in reason for reason in blocked["reasons"]), blocked["reasons"]
    doctor = proximity("doctor", "--sandbox", sb.name, "--json", check=False, env=no_token)
    probe = next(c for c in json.loads(doctor.stdout) if c["name"] == "end-to-end probe")
    assert doctor.returncode == 1 and not probe["ok"] and "PVEFW-HOST-IN" in probe["detail"]
    assert sb.interfaces_file.read_text().count("iface prox-net") == 1  # not rolled back

    # An admin's own host rule, which down must leave alone.
    double.host_rules.append({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "9100",
                              "comment": "node exporter", "enable": 1})
    # With the token, up adds the host rules through the API; pve-firewall compiles them.
    env = api_env(double)
    report = json.loads(proximity("up", "--sandbox", sb.name, "--json", env=env).stdout)
    assert sum("Proxmox host firewall rule" in action for action in report["actions"]) == 2, report
    assert status(sb, env)["health_status"] == "healthy"
    syncs = firewall.syncs
    assert wait_for(lambda: firewall.syncs >= syncs + 2, timeout=10)  # its chains were rewritten since
    client = sandboxes.attach_client(sb, "fresh-01")
    assert client.ip and client.ip.startswith("10.10.0.")
    assert resolve(client.ns, "fresh-01.prox.local", GATEWAY) == [client.ip]
    assert json.loads(proximity("up", "--sandbox", sb.name, "--json", env=env).stdout)["actions"] == []

    # down removes exactly Proximity's rules.
    proximity("down", "--sandbox", sb.name, env=env)
    assert [rule["comment"] for rule in double.host_rules] == ["node exporter"]
