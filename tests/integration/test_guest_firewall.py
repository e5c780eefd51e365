"""DHCP through a Proxmox guest firewall: create and migrate set ``dhcp: 1`` (and nothing else), a refusal
leaves the container working with the fix named, and the doctor names the containers it blocks.

This kernel has no bridge conntrack, so no real guest firewall filters here: Proxmox is the API
double (every request validated against the schema), Proximity's network is a real sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.doctor import run_doctor
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.lxc_realizer import LxcRealizer
from tests.integration.test_proxmox_failures import BRIDGES, LEGACY_NET0, TOKEN, cli, legacy, manager_for
from tests.pve_double.server import MemoryRealizer, PveDouble

OPTIONS = "/firewall/options"
DENIED = "Permission check failed (/vms/{vmid}, VM.Config.Network)\n"


@pytest.fixture
def double() -> Iterator[PveDouble]:
    with PveDouble(MemoryRealizer(delay=0.01, hold_timeout=20), token=TOKEN, tls=True) as running:
        running.bridges = BRIDGES
        yield running
        assert [r for r in running.requests if r["status"] == 400] == []  # the schema accepts every call


@pytest.fixture
def manager(network, double) -> Iterator[ContainerManager]:
    manager = manager_for(network, double)
    yield manager
    for reservation in manager.reservations.all():
        manager.reservations.release(reservation.hostname)


def order(double: PveDouble, vmid: int) -> list[str]:
    """The writes to CT ``vmid``, in order: 'create', 'net0', 'dhcp', 'start'."""
    seen = []
    for r in double.requests:
        path, method = r["path"], r["method"]
        if method == "POST" and path == "/nodes/pve/lxc" and str(r["params"].get("vmid")) == str(vmid):
            seen.append("create")
        elif not path.startswith(f"/nodes/pve/lxc/{vmid}/"):
            continue
        elif method == "PUT" and path.endswith(OPTIONS):
            seen.append("dhcp" if r["params"] == {"dhcp": "1"} else f"options {r['params']}")
        elif method == "PUT" and path.endswith("/config") and "net0" in r["params"]:
            seen.append("net0")
        elif method == "POST" and path.endswith("/status/start"):
            seen.append("start")
    return seen


def test_create_allows_dhcp_before_the_first_start_and_leaves_the_firewall_itself_alone(manager, double):
    info = manager.create("web-01")
    assert info.state == "running" and info.note is None
    assert double.guest_firewall(info.vmid) == {"dhcp": 1}  # only dhcp: enable stays the admin's
    assert order(double, info.vmid) == ["create", "dhcp", "start"]


def test_a_refused_option_keeps_the_create_and_names_the_fix(network, manager, double):
    double.inject(403, "PUT", rf"/lxc/100{OPTIONS}$", message=DENIED.format(vmid=100))
    info = manager.create("web-02")
    assert info.vmid == 100 and info.state == "running"
    assert manager.reservations.find(hostname="web-02").vmid == 100
    assert double.guest_firewall(100) == {}
    assert "403 Permission check failed (/vms/100, VM.Config.Network)" in info.note
    assert "`pvesh set /nodes/pve/lxc/100/firewall/options --dhcp 1`" in info.note
    assert "once its firewall is enabled, CT 100 gets no DHCP lease" in info.note


def test_the_cli_shows_the_refusal_and_the_fix_and_exits_0(network, manager, double):
    double.inject(403, "PUT", rf"/lxc/100{OPTIONS}$", message=DENIED.format(vmid=100))
    result = cli(network, double, "ct", "create", "web-03")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "CT 100 web-03" in text and "note:" in text
    assert "pvesh set /nodes/pve/lxc/100/firewall/options --dhcp 1" in text
    dry = cli(network, double, "ct", "create", "web-04", "--dry-run")
    assert dry.returncode == 0 and "allow DHCP through its guest firewall (dhcp: 1)" in " ".join(dry.stdout.split())


def test_migrate_allows_dhcp_between_net0_and_the_start(network):
    """Real containers: the migration must get its lease. The admin had the guest firewall on already."""
    lxc = LxcBackend(network.name, network.state_dir / "lxc")
    with PveDouble(LxcRealizer(lxc), token=TOKEN, tls=True) as real:
        real.bridges = BRIDGES
        manager = manager_for(network, real)
        vmid = legacy(manager, "legacy-21")
        real.set_guest_firewall(vmid, enable=1, policy_in="DROP")
        try:
            dry = manager.migrate(vmid, dry_run=True)
            assert f"allow DHCP through CT {vmid}'s guest firewall (option dhcp: 1; the firewall itself is left as " \
                   "it is)" in dry.steps
            assert real.guest_firewall(vmid) == {"enable": 1, "policy_in": "DROP"}  # a dry run changes nothing
            report = manager.migrate(vmid, timeout=20)
            assert f"DHCP allowed through CT {vmid}'s guest firewall (dhcp: 1)" in report.steps
            assert real.guest_firewall(vmid) == {"enable": 1, "policy_in": "DROP", "dhcp": 1}
            assert order(real, vmid)[-3:] == ["net0", "dhcp", "start"]
            assert manager.lookup("legacy-21.prox.local") == [report.ip]
        finally:
            manager.destroy(str(vmid))
        assert [r for r in real.requests if r["status"] == 400] == []


def guest_checks(network, manager: ContainerManager, **settings) -> list:
    net = NetworkManager(load_settings(**{**network.settings_overrides(), **settings}))
    return [c for c in run_doctor(net, containers=lambda: manager) if c.id.startswith("guest_firewall")]


def test_the_doctor_names_each_container_whose_guest_firewall_blocks_dhcp(network, manager, double):
    ours = manager.create("web-05")  # dhcp: 1 set by Proximity
    gui = manager.backend.create(ContainerSpec("gui-06", "name=eth0,bridge=prox-net,ip=dhcp,firewall=1")).vmid
    off = manager.backend.create(ContainerSpec("gui-07", "name=eth0,bridge=prox-net,ip=dhcp,firewall=1")).vmid
    plain = manager.backend.create(ContainerSpec("gui-08", "name=eth0,bridge=prox-net,ip=dhcp,firewall=0")).vmid
    other = legacy(manager, "legacy-09", LEGACY_NET0.replace("tag=20", "firewall=1"), start=False)  # on vmbr0
    for vmid in (ours.vmid, gui, plain, other):
        double.set_guest_firewall(vmid, enable=1)  # the admin turns guest firewalls on; gui-07's stays off
    checks = guest_checks(network, manager)
    failing = [c for c in checks if not c.ok]
    assert [c.name for c in failing] == ["guest firewall of gui-06"]
    assert f"CT {gui} (gui-06) has firewall=1 on prox-net" in failing[0].observed
    assert "blocks DHCP (dhcp is not 1): it gets no DHCP lease" in failing[0].observed
    assert failing[0].fix == f"`pvesh set /nodes/pve/lxc/{gui}/firewall/options --dhcp 1` on the Proxmox host"
    assert failing[0].severity == "error" and off != gui

    manager.backend.allow_guest_dhcp(gui)  # the fix, as pvesh would make it
    checks = guest_checks(network, manager)
    assert [(c.ok, c.observed) for c in checks] == [
        (True, "3 container(s) on prox-net with firewall=1; no enabled guest firewall blocks DHCP")]


def test_with_ipv6_the_doctor_also_names_a_guest_whose_ndp_was_turned_off(network, manager, double):
    info = manager.create("web-10")
    double.set_guest_firewall(info.vmid, enable=1, ndp=0)
    assert [c.ok for c in guest_checks(network, manager)] == [True]  # IPv4 only: ndp does not matter
    [check] = guest_checks(network, manager, ipv6="auto")
    assert not check.ok and "blocks IPv6 router advertisements and neighbour discovery (ndp is 0)" in check.observed
    assert "it gets no IPv6 address" in check.observed
    assert check.fix == f"`pvesh set /nodes/pve/lxc/{info.vmid}/firewall/options --ndp 1` on the Proxmox host"


def test_the_lxc_backend_has_no_guest_firewall_check(network):
    manager = ContainerManager(NetworkManager(load_settings(**network.settings_overrides())),
                               LxcBackend(network.name, network.state_dir / "lxc"))
    assert guest_checks(network, manager) == []
