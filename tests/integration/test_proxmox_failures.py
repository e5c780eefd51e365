"""Migration, stop and create through the Proxmox backend when the cluster misbehaves.

A real sandbox host runs Proximity's network (bridge, dnsmasq, reservations); Proxmox is the
API double, switched into one failure mode per test. Its containers are in memory (a
container that never takes a lease makes the verification fail, which is what a rollback
test needs), except where a migration must succeed: there they are real LXC containers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from proximity.containers.base import ContainerLocked, ContainerSpec
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager, MigrationError
from proximity.containers.proxmox import ProxmoxBackend, ProxmoxConfig
from proximity.errors import ProximityError
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.lxc_realizer import LxcRealizer
from tests.integration.tools import proximity
from tests.pve_double.server import LVM_INSTALL, MemoryRealizer, PveDouble

TEMPLATE = "local:vztmpl/busybox-proximity.tar.gz"
TOKEN = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000003")
LEGACY_NET0 = "name=eth0,bridge=vmbr0,ip=198.51.100.71/24,gw=198.51.100.1,tag=20"
BRIDGES = {"vmbr0": {"ports": ["eno1"]}, "prox-net": {"ports": []}}  # prox-net: no physical port


@pytest.fixture
def realizer() -> MemoryRealizer:
    return MemoryRealizer(delay=0.01, hold_timeout=20)


@pytest.fixture
def double(realizer) -> Iterator[PveDouble]:
    with PveDouble(realizer, token=TOKEN, tls=True) as running:
        running.bridges = BRIDGES
        yield running
        assert [r for r in running.requests if r["status"] == 400] == []  # the schema accepts every call


def manager_for(network, double: PveDouble, **config) -> ContainerManager:
    settings = load_settings(**network.settings_overrides())
    backend = ProxmoxBackend(ProxmoxConfig(
        host="127.0.0.1", port=double.port, node="pve", token_id=TOKEN[0], token_secret=TOKEN[1],
        ca_file=double.ca_file, template=TEMPLATE, bridge=settings.bridge, **{"task_timeout": 20.0, **config}))
    return ContainerManager(NetworkManager(settings), backend)


@pytest.fixture
def manager(network, double) -> Iterator[ContainerManager]:
    manager = manager_for(network, double)
    yield manager
    for reservation in manager.reservations.all():
        manager.reservations.release(reservation.hostname)


def legacy(manager: ContainerManager, hostname: str, net0: str = LEGACY_NET0, start: bool = True) -> int:
    vmid = manager.backend.create(ContainerSpec(hostname, net0)).vmid
    if start:
        manager.backend.start(vmid)
    return vmid


def ops(realizer: MemoryRealizer) -> list[str]:
    return [c[0] for c in realizer.calls if c[0] != "interfaces"]


# ------------------------------------------------------------------ 5. migration edge cases


def test_migration_drops_a_vlan_tag_and_names_an_fqdn_by_its_first_label(network, double):
    """Real containers: the migration must succeed on a bridge with no ports."""
    lxc = LxcBackend(network.name, network.state_dir / "lxc")
    with PveDouble(LxcRealizer(lxc), token=TOKEN, tls=True) as real:
        real.bridges = BRIDGES
        manager = manager_for(network, real)
        vmid = legacy(manager, "legacy-04.example.com")
        steps: list[str] = []
        try:
            report = manager.migrate(vmid, timeout=20, progress=steps.append)
            assert report.dns_name == "legacy-04.prox.local" and report.rollback == "snapshot"
            assert any("VLAN tag=20 dropped" in s for s in steps)
            assert any("FQDN: its name on prox-net is legacy-04" in s for s in steps)
            net0 = manager.backend.get_net0(vmid)
            assert "bridge=prox-net" in net0 and "tag=" not in net0
            assert manager.lookup("legacy-04.prox.local") == [report.ip]
            assert manager.info(vmid).dns_name == "legacy-04.prox.local"
        finally:
            manager.destroy(str(vmid))
        assert [r for r in real.requests if r["status"] == 400] == []


def test_the_bridge_check_refuses_a_tag_on_a_bridge_without_ports(manager, double):
    vmid = legacy(manager, "legacy-05", start=False)
    manager.backend.set_net0(vmid, "name=eth0,bridge=prox-net,ip=dhcp,tag=20")
    with pytest.raises(ProximityError, match="no physical interface on bridge 'prox-net'"):
        manager.backend.start(vmid)


def test_storage_without_snapshots_gets_a_config_only_rollback_and_says_so(manager, double, realizer):
    double.storages = {**LVM_INSTALL, "nfs": {"type": "nfs", "content": "images,rootdir"}}
    backend = ProxmoxBackend(replace(manager.backend.config, storage="nfs"))
    vmid = backend.create(ContainerSpec("legacy-06", LEGACY_NET0)).vmid
    backend.start(vmid)
    plan = manager.migrate(vmid, dry_run=True)
    assert plan.rollback == "config-only" and plan.snapshot is None
    assert any("rollback is config-only" in s for s in plan.steps)
    double.fail_next["start"] = f"startup for container '{vmid}' failed"
    with pytest.raises(MigrationError, match="config-only rollback: the old net0 is written back and the container"):
        manager.migrate(vmid, timeout=5)
    assert "snapshot" not in ops(realizer) and "rollback" not in ops(realizer)
    net0 = manager.backend.get_net0(vmid)
    assert "bridge=vmbr0" in net0 and "tag=20" in net0
    assert double.container(vmid)["status"] == "running"
    assert manager.reservations.find(hostname="legacy-06") is None


# ------------------------------------------------------------------ 2. and 4. stopping, HA, locks


def test_a_shutdown_that_does_not_finish_is_followed_by_a_forced_stop_and_said(manager, double, realizer):
    vmid = legacy(manager, "legacy-07")
    realizer.errors["shutdown"] = "container did not stop"
    info = manager.stop(str(vmid))
    assert info.state == "stopped" and "stopped by force" in info.note and "container did not stop" in info.note
    assert ops(realizer)[-2:] == ["shutdown", "stop"]
    manager.backend.start(vmid)
    del realizer.errors["shutdown"]
    assert manager.stop(str(vmid)).note == "shut down cleanly"


def test_an_ha_managed_container_is_really_stopped_before_net0_changes(manager, double, realizer):
    vmid = legacy(manager, "legacy-08")
    double.make_ha_managed(vmid)
    double.ha_delay = 0.5
    with pytest.raises(MigrationError, match="rolled back to snapshot"):
        manager.migrate(vmid, timeout=1)  # in-memory containers take no lease
    order = ops(realizer)
    assert order.index("shutdown") < order.index("set_config")  # the HA manager stopped it first
    assert {t.type for t in double._tasks.values()} >= {"hastop", "hastart"}
    assert wait_for(lambda: double.container(vmid)["status"] == "running", 5)
    assert "bridge=vmbr0" in manager.backend.get_net0(vmid)


@pytest.mark.parametrize("lock", ["backup", "snapshot", "migrate"])
def test_a_locked_container_is_refused_naming_the_lock(manager, double, realizer, lock):
    vmid = legacy(manager, f"legacy-{lock}")
    with double._state:
        double._cts[vmid].config["lock"] = lock
    before = ops(realizer)
    with pytest.raises(ContainerLocked, match=rf"CT {vmid} is locked \({lock}\)"):
        manager.migrate(vmid)
    assert ops(realizer) == before and manager.reservations.find(hostname=f"legacy-{lock}") is None


# ------------------------------------------------------------------ 3. timeouts


def test_a_timed_out_task_is_not_raced_by_a_rollback(network, double, realizer):
    manager = manager_for(network, double, task_timeout=0.5)
    vmid = legacy(manager, "legacy-09")
    held = realizer.hold("start")
    try:
        with pytest.raises(MigrationError, match="Not rolled back.*is kept.*pct rollback") as caught:
            manager.migrate(vmid, timeout=5)
        assert "does not stop a Proxmox task" in str(caught.value)
        assert "rollback" not in ops(realizer)
        assert manager.reservations.find(hostname="legacy-09") is not None
    finally:
        held.set()
        manager.reservations.release("legacy-09")


# ------------------------------------------------------------------ 10. after start fails


def test_a_container_that_does_not_start_is_destroyed_and_its_reservation_released(manager, double):
    double.fail_next["start"] = "startup for container '100' failed"
    with pytest.raises(ProximityError, match="did not start; it was destroyed and its reservation released"):
        manager.create("web-01")
    assert double.container(100) is None
    assert manager.reservations.find(hostname="web-01") is None


def test_if_it_cannot_be_destroyed_it_is_kept_with_its_reservation(manager, double, realizer):
    double.fail_next["start"] = "startup for container '100' failed"
    realizer.errors["destroy"] = "rbd: sysfs write failed"
    with pytest.raises(ProximityError, match="could not be destroyed.*kept with its reservation") as caught:
        manager.create("web-02")
    reservation = manager.reservations.find(hostname="web-02")
    assert reservation is not None and reservation.vmid == 100
    assert reservation.mac.lower() in double.container(100)["config"]["net0"].lower()
    assert "proximity ct destroy web-02" in str(caught.value)


def test_a_create_that_outlives_its_timeout_keeps_its_reservation(network, double, realizer):
    manager = manager_for(network, double, create_timeout=0.5)
    held = realizer.hold("create")
    try:
        with pytest.raises(ProximityError, match="reservation of web-03 .* is kept"):
            manager.create("web-03")
        assert manager.reservations.find(hostname="web-03") is not None
        assert ops(realizer) == ["create"]  # nothing undone while the task runs
    finally:
        held.set()
        manager.reservations.release("web-03")
    assert double.wait_tasks(10)


# ------------------------------------------------------------------ what a user sees


def cli(network, double: PveDouble, *args: str):
    env = {"PROXIMITY_BACKEND": "proxmox", "PROXIMITY_PROXMOX_HOST": "127.0.0.1",
           "PROXIMITY_PROXMOX_PORT": str(double.port), "PROXIMITY_PROXMOX_NODE": "pve",
           "PROXIMITY_PROXMOX_TOKEN_ID": TOKEN[0], "PROXIMITY_PROXMOX_TOKEN_SECRET": TOKEN[1],
           "PROXIMITY_PROXMOX_CA_FILE": double.ca_file, "PROXIMITY_PROXMOX_TEMPLATE": TEMPLATE}
    return proximity(*args, "--sandbox", network.name, check=False, env=env)


def test_the_cli_names_missing_rights_once_and_exits_1(network, manager, double):
    legacy(manager, "legacy-10", start=False)
    double.set_access(privsep=True, acl={"/vms": {"VM.Audit"}})
    result = cli(network, double, "ct", "list")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "lacks VM.Allocate" in text and "on /vms" in text and "VM.Audit," not in text
    assert "section 'Proxmox permissions'" in text


def test_the_cli_says_when_a_stop_had_to_be_forced(network, manager, double, realizer):
    vmid = legacy(manager, "legacy-11")
    realizer.errors["shutdown"] = "container did not stop"
    result = cli(network, double, "ct", "stop", str(vmid))
    assert result.returncode == 0, result.stderr
    assert "stopped by force" in " ".join(result.stdout.split())
