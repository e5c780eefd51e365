"""On a real sandbox host: what is not Proximity's stays so. An admin's prox-net stanza under
interfaces.d (bridged to a NIC), the inet6 stanza Proxmox's GUI writes, a symlinked interfaces file,
and DHCP clients that announce reserved names."""

from __future__ import annotations

import json
import os

import pytest

from proximity import sandbox as sandboxes
from proximity.host import wait_for
from proximity.sandbox.pve_host import ifreload  # waits out ifupdown2's machine-wide lock
from tests.integration.test_kill import dnsmasqs
from tests.integration.tools import proximity, resolve
from tests.unit.pve_rewrite import PveRewrite

ADMIN_STANZA = """\
auto prox-net
iface prox-net inet static
\taddress 192.168.77.1/24
\tbridge-ports eno2
\tbridge-stp off
\tbridge-fd 0
"""


def up(sb, check: bool = True):
    """`proximity up`, its messages unwrapped (a wide terminal) so that a path and its line stay together."""
    return proximity("up", "--sandbox", sb.name, check=check, env={"COLUMNS": "1000"})


def ns(sb, *argv: str, check: bool = True):
    return sandboxes.ns_run(sb.name, list(argv), check=check)


def status(sb) -> tuple[int, dict]:
    result = proximity("status", "--sandbox", sb.name, "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def bridge(sb) -> dict | None:
    result = ns(sb, "ip", "-j", "-d", "address", "show", "dev", "prox-net", check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def ports(sb) -> list[str]:
    links = json.loads(ns(sb, "ip", "-j", "link", "show", "master", "prox-net").stdout)
    return [link["ifname"] for link in links]


def addresses(link: dict) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"}


@pytest.fixture
def lan_nic(sandbox):
    """A second "NIC" of the host (a veth pair inside the sandbox) and the admin's stanza that bridges it."""
    sb = sandbox
    admin = sb.root / "etc/network/interfaces.d/lan-bridge"
    ns(sb, "ip", "link", "add", "eno2", "type", "veth", "peer", "name", "eno2peer")
    try:
        yield admin
    finally:
        admin.unlink(missing_ok=True)
        proximity("down", "--sandbox", sb.name, check=False)
        ifreload(sb.name)
        ns(sb, "ip", "link", "delete", "prox-net", check=False)
        ns(sb, "ip", "link", "delete", "eno2", check=False)


def test_up_refuses_a_prox_net_stanza_in_interfaces_d_and_down_keeps_the_admins_bridge(sandbox, lan_nic):
    sb, admin = sandbox, lan_nic
    original = sb.interfaces_file.read_bytes()
    admin.write_text(ADMIN_STANZA)
    result = up(sb, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert f"{admin} line 2" in out, out
    assert sb.interfaces_file.read_bytes() == original and dnsmasqs(sb) == []
    code, st = status(sb)
    assert st["health_status"] == "unhealthy"
    assert any(f"{admin} line 2" in reason for reason in st["reasons"]), st["reasons"]

    ifreload(sb.name)  # the admin applies their own bridge
    assert ports(sb) == ["eno2"]
    proximity("down", "--sandbox", sb.name)
    link = bridge(sb)
    assert link is not None and addresses(link) == {"192.168.77.1/24"} and ports(sb) == ["eno2"]
    assert dnsmasqs(sb) == []


def test_a_stanza_added_under_interfaces_d_after_up_is_named_and_down_leaves_the_admins_bridge(sandbox, lan_nic):
    sb, admin = sandbox, lan_nic
    proximity("up", "--sandbox", sb.name)
    admin.write_text(ADMIN_STANZA)
    ifreload(sb.name)  # ifupdown2 merges both stanzas: a bridge to eno2 with both addresses
    assert ports(sb) == ["eno2"]
    code, st = status(sb)
    assert st["health_status"] == "unhealthy", st
    assert any(f"{admin} line 2" in r for r in st["reasons"]) and any("eno2" in r for r in st["reasons"]), st
    doctor = proximity("doctor", "--sandbox", sb.name, "--json", check=False)
    failed = [check["detail"] for check in json.loads(doctor.stdout) if not check["ok"]]
    assert doctor.returncode != 0 and any(f"{admin} line 2" in detail for detail in failed), failed
    result = up(sb, check=False)
    assert result.returncode == 2 and f"{admin} line 2" in result.stdout + result.stderr
    proximity("down", "--sandbox", sb.name)
    link = bridge(sb)
    assert link is not None and addresses(link) == {"192.168.77.1/24"} and ports(sb) == ["eno2"]
    assert dnsmasqs(sb) == [] and "prox-net" not in sb.interfaces_file.read_text()


def test_dnsmasq_never_starts_on_a_bridge_with_a_lan_port(sandbox, lan_nic):
    sb = sandbox
    proximity("up", "--sandbox", sb.name)
    proximity("down", "--sandbox", sb.name)  # leaves no prox-net; an admin makes one by hand, with eno2
    ns(sb, "ip", "link", "add", "prox-net", "type", "bridge")
    ns(sb, "ip", "link", "set", "eno2", "master", "prox-net")
    result = up(sb, check=False)
    assert result.returncode != 0 and "eno2" in result.stdout + result.stderr
    assert dnsmasqs(sb) == []


def test_the_inet6_stanza_proxmox_writes_is_kept_by_up_and_removed_by_down(sandbox):
    sb = sandbox
    original = sb.interfaces_file.read_text()
    proximity("up", "--sandbox", sb.name)
    rewrite = PveRewrite()
    try:  # the GUI sets IPv6 on prox-net: Proxmox writes the whole file, the inet6 stanza its own
        written = rewrite(sb.interfaces_file.read_text() + "\niface prox-net inet6 static\n\taddress fd42:10::1/64\n")
    finally:
        rewrite.close()
    assert "iface prox-net inet6 static" in written
    sb.interfaces_file.write_text(written)
    ifreload(sb.name)  # "Apply Configuration"
    try:
        proximity("up", "--sandbox", sb.name)
        assert json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)["actions"] == []
        assert "iface prox-net inet6 static" in sb.interfaces_file.read_text()
        code, st = status(sb)
        assert st["health_status"] == "healthy", st["reasons"]
    finally:
        proximity("down", "--sandbox", sb.name)
    text = sb.interfaces_file.read_text()
    assert "prox-net" not in text and bridge(sb) is None
    sb.interfaces_file.write_text(original)


def test_a_symlinked_interfaces_file_stays_a_link_and_down_restores_its_target(sandbox):
    sb = sandbox
    managed = sb.root / "etc/cm"
    managed.mkdir(exist_ok=True)
    target = managed / "interfaces"
    target.write_bytes(sb.interfaces_file.read_bytes())
    original = target.read_bytes()
    sb.interfaces_file.unlink()
    sb.interfaces_file.symlink_to(target)
    try:
        proximity("up", "--sandbox", sb.name)
        assert sb.interfaces_file.is_symlink() and os.readlink(sb.interfaces_file) == str(target)
        assert "iface prox-net inet static" in target.read_text()
        assert [p.name for p in managed.iterdir()] == ["interfaces"]
        proximity("down", "--sandbox", sb.name)
        assert sb.interfaces_file.is_symlink() and target.read_bytes() == original
        assert bridge(sb) is None
    finally:
        proximity("down", "--sandbox", sb.name, check=False)
        sb.interfaces_file.unlink()
        sb.interfaces_file.write_bytes(original)


@pytest.mark.parametrize("reserved", ["wpad", "Gateway"])
def test_a_client_announcing_a_reserved_name_gets_a_lease_but_no_name(sandbox, reserved):
    sb = sandbox
    proximity("up", "--sandbox", sb.name)
    try:
        normal = sandboxes.attach_client(sb, "normal01")
        hostile = sandboxes.attach_client(sb, reserved)  # real udhcpc -x hostname:NAME
        try:
            gateway = "10.10.0.1"
            assert resolve(normal.ns, "normal01.prox.local", gateway) == [normal.ip]
            assert hostile.ip not in resolve(normal.ns, f"{reserved.lower()}.prox.local", gateway)
            leases = (sb.leases_file.read_text()).splitlines()
            assert any(f" {hostile.ip} " in line for line in leases)  # a lease, still
            assert not any(reserved.lower() in line.lower() for line in leases)
        finally:
            sandboxes.detach_client(sb, reserved)
            sandboxes.detach_client(sb, "normal01")
    finally:
        proximity("down", "--sandbox", sb.name)
    wait_for(lambda: dnsmasqs(sb) == [], 5)
