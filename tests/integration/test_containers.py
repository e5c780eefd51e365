"""Containers on prox-net for real: the lxc backend, and the proxmox backend against the API double."""

from __future__ import annotations

import json

import pytest

from proximity import sandbox as sandboxes
from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager, MigrationError
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.tools import Listener, proximity, resolve

GATEWAY = "10.10.0.1"


@pytest.fixture
def lxc(network):
    backend = LxcBackend(network.name, network.state_dir / "lxc")
    yield backend
    manager = manager_of(network, backend)
    for container in backend.list():
        manager.destroy(str(container.vmid))  # frees reservations and leases too
    for reservation in manager.reservations.all():
        manager.reservations.release(reservation.hostname)


def manager_of(sb, backend, **overrides) -> ContainerManager:
    return ContainerManager(NetworkManager(load_settings(**{**sb.settings_overrides(), **overrides})), backend)


def leased(sb, mac: str) -> str | None:
    text = sb.leases_file.read_text() if sb.leases_file.exists() else ""
    return next((line.split()[2] for line in text.splitlines() if f" {mac} " in line), None)


def ct_json(sb, *args):
    return json.loads(proximity("ct", *args, "--sandbox", sb.name, "--json").stdout)


def in_ct(backend, vmid, *argv) -> str:
    result = backend.exec(vmid, list(argv), timeout=15)
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_on_network(sb, backend, server: dict, client: dict) -> None:
    """What every container on prox-net must get: its reserved address, DNS, route, names, NAT."""
    for ct in (server, client):
        assert wait_for(lambda ct=ct: leased(sb, ct["mac"]) == ct["ip"], timeout=20)
        assert f"inet {ct['ip']}/24" in in_ct(backend, ct["vmid"], "ip", "-4", "-o", "addr", "show", "eth0")
    vmid = client["vmid"]
    assert "nameserver 10.10.0.1" in in_ct(backend, vmid, "cat", "/etc/resolv.conf")
    assert in_ct(backend, vmid, "ip", "route", "show", "default").startswith("default via 10.10.0.1")
    page = in_ct(backend, vmid, "wget", "-qO-", f"http://{server['hostname']}.prox.local")
    assert page.strip() == f"hello from {server['hostname']}"
    with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 8090) as internet:
        in_ct(backend, vmid, "sh", "-c", f"echo hi | nc {sandboxes.INTERNET_HOST} 8090")
        assert internet.next_peer() == "198.51.100.2"


def test_lxc_containers_get_stable_names_and_addresses(network, lxc):
    sb = network
    peer = sandboxes.attach_client(sb, "peer")
    try:
        nginx = ct_json(sb, "create", "nginx-01", "--no-start")
        assert nginx["state"] == "stopped" and nginx["dns_name"] == "nginx-01.prox.local"
        # The name resolves as soon as create returns, before the container has booted.
        assert resolve(peer.ns, "nginx-01.prox.local", GATEWAY) == [nginx["ip"]]
        proximity("ct", "start", "nginx-01", "--sandbox", sb.name)
        wordpress = ct_json(sb, "create", "wordpress-02")
        check_on_network(sb, lxc, nginx, wordpress)
        assert resolve(peer.ns, "nginx-01.prox.local", GATEWAY) == [nginx["ip"]]

        doctor = json.loads(proximity("doctor", "--sandbox", sb.name, "--json").stdout)
        resolv = {c["name"]: c for c in doctor if c["name"].startswith("resolv.conf of ")}
        assert resolv["resolv.conf of nginx-01"]["ok"] and resolv["resolv.conf of wordpress-02"]["ok"], resolv

        listed = {c["hostname"]: c for c in ct_json(sb, "list")}
        assert listed["nginx-01"]["ip"] == nginx["ip"] and listed["nginx-01"]["state"] == "running"
        assert listed["wordpress-02"]["mac"] == wordpress["mac"] and listed["wordpress-02"]["backend"] == "lxc"

        # Same address after a restart.
        proximity("ct", "stop", "nginx-01", "--sandbox", sb.name)
        proximity("ct", "start", str(nginx["vmid"]), "--sandbox", sb.name)
        assert wait_for(lambda: f"inet {nginx['ip']}/24" in in_ct(lxc, nginx["vmid"], "ip", "-4", "-o", "addr"), 20)

        # Destroy frees the name, the reservation and the lease.
        proximity("ct", "destroy", "nginx-01", "--force", "--sandbox", sb.name)
        assert wait_for(lambda: leased(sb, nginx["mac"]) is None, timeout=10)
        assert resolve(peer.ns, "nginx-01.prox.local", GATEWAY) == []
        assert nginx["mac"] not in sb.state_dir.joinpath("dhcp-hosts").read_text()
    finally:
        sandboxes.detach_client(sb, "peer")


def test_admission_refuses_before_anything_is_created(network, lxc):
    sb = network
    for bad in ("bad-", "under_score", "x" * 64):
        result = proximity("ct", "create", bad, "--sandbox", sb.name, check=False)
        assert result.returncode == 2 and "RFC 1123" in result.stderr and "Traceback" not in result.stderr
    ct_json(sb, "create", "app-1", "--no-start")
    duplicate = proximity("ct", "create", "app-1", "--sandbox", sb.name, check=False)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    # A pool of two addresses, one of them taken: the second container fits, the third does not.
    small = {"PROXIMITY_DHCP_START": "10.10.0.100", "PROXIMITY_DHCP_END": "10.10.0.101"}
    proximity("ct", "create", "app-2", "--no-start", "--sandbox", sb.name, env=small)
    full = proximity("ct", "create", "app-3", "--no-start", "--sandbox", sb.name, check=False, env=small)
    assert full.returncode == 2 and "no free address" in full.stderr
    assert sorted(c.hostname for c in lxc.list()) == ["app-1", "app-2"]
    plan = json.loads(proximity("ct", "create", "app-4", "--dry-run", "--json", "--sandbox", sb.name).stdout)
    assert plan["net0"].startswith("name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=02:")
    assert sorted(c.hostname for c in lxc.list()) == ["app-1", "app-2"]


def test_migrate_from_vmbr0(network, lxc):
    sb = network
    old = lxc.create(ContainerSpec("legacy-01", "name=eth0,bridge=vmbr0,ip=198.51.100.60/24,gw=198.51.100.1"))
    lxc.start(old.vmid)
    plan = json.loads(proximity("migrate", str(old.vmid), "--dry-run", "--json", "--sandbox", sb.name).stdout)
    assert plan["dry_run"] and lxc.get_net0(old.vmid).startswith("name=eth0,bridge=vmbr0")
    report = json.loads(proximity("migrate", str(old.vmid), "--json", "--sandbox", sb.name).stdout)
    assert report["ip"] and report["dns_name"] == "legacy-01.prox.local"
    assert "bridge=prox-net,ip=dhcp,firewall=1" in lxc.get_net0(old.vmid)
    assert lxc.status(old.vmid).state == "running"
    mac = [p for p in lxc.get_net0(old.vmid).split(",") if p.startswith("hwaddr=")][0].split("=")[1].lower()
    assert leased(sb, mac) == report["ip"]
    assert report["snapshot"] in lxc.snapshots(old.vmid)


def test_failed_migration_rolls_back(network, lxc):
    sb = network
    old = lxc.create(ContainerSpec("legacy-02", "name=eth0,bridge=vmbr0,ip=198.51.100.61/24,gw=198.51.100.1"))
    lxc.start(old.vmid)
    manager = manager_of(sb, lxc)
    # A real fault: the container takes no lease because its bridge port is cut.
    original_start = lxc.start

    def start_without_network(vmid, timeout=30):
        original_start(vmid, timeout)
        if "prox-net" in lxc.get_net0(vmid):
            sandboxes.ns_run(sb.name, ["ip", "link", "set", f"veth{vmid}i0", "down"])

    lxc.start = start_without_network
    try:
        with pytest.raises(MigrationError, match="rolled back"):
            manager.migrate(old.vmid, timeout=3)
    finally:
        lxc.start = original_start
    assert lxc.get_net0(old.vmid).startswith("name=eth0,bridge=vmbr0,ip=198.51.100.61/24")
    assert lxc.status(old.vmid).state == "running"
    assert "inet 198.51.100.61/24" in in_ct(lxc, old.vmid, "ip", "-4", "-o", "addr", "show", "eth0")
    assert manager.reservations.find(hostname="legacy-02") is None


@pytest.fixture
def proxmox(network, lxc):
    """The Proxmox backend, talking HTTPS to the API double whose containers are real LXC ones."""
    from proximity.containers.factory import backend_for
    from tests.integration.lxc_realizer import LxcRealizer
    from tests.pve_double.server import PveDouble

    token = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000001")
    with PveDouble(LxcRealizer(lxc), node="pve", token=token, tls=True) as double:
        settings = load_settings(**{
            **network.settings_overrides(), "backend": "proxmox", "proxmox_host": "127.0.0.1",
            "proxmox_port": double.port, "proxmox_node": "pve", "proxmox_token_id": token[0],
            "proxmox_token_secret": token[1], "proxmox_ca_file": double.ca_file,
            "proxmox_template": "local:vztmpl/busybox-proximity.tar.gz",
        })
        yield double, ContainerManager(NetworkManager(settings), backend_for(settings))


def test_proxmox_backend_end_to_end(network, lxc, proxmox):
    double, manager = proxmox
    nginx = manager.create("nginx-01").as_dict()
    wordpress = manager.create("wordpress-02").as_dict()
    assert nginx["backend"] == "proxmox" and nginx["state"] == "running"
    check_on_network(network, lxc, nginx, wordpress)
    create = next(r for r in double.requests if r["method"] == "POST" and r["path"] == "/nodes/pve/lxc")
    assert create["params"]["net0"] == f"name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr={nginx['mac']}"
    assert create["params"]["hostname"] == "nginx-01" and str(create["params"]["unprivileged"]) == "1"
    assert all(r["status"] < 400 for r in double.requests), [r for r in double.requests if r["status"] >= 400]


def test_proxmox_failed_task_is_reported_and_migration_rolls_back(network, lxc, proxmox):
    double, manager = proxmox
    legacy = manager.backend.create(ContainerSpec(
        "legacy-03", "name=eth0,bridge=vmbr0,ip=198.51.100.62/24,gw=198.51.100.1"))
    manager.backend.start(legacy.vmid)
    double.fail_next["start"] = "startup for container '%d' failed" % legacy.vmid
    with pytest.raises(MigrationError) as caught:
        manager.migrate(legacy.vmid, timeout=10)
    message = str(caught.value)
    assert "startup for container" in message and "TASK ERROR" in message and "rolled back" in message
    assert "bridge=vmbr0" in manager.backend.get_net0(legacy.vmid)
    assert manager.backend.status(legacy.vmid).state == "running"
    assert "inet 198.51.100.62/24" in in_ct(lxc, legacy.vmid, "ip", "-4", "-o", "addr", "show", "eth0")
    assert manager.reservations.find(hostname="legacy-03") is None
