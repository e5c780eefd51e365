"""The Proxmox backend against the API double, switched into each failure mode of a real cluster.

proxmoxer speaks HTTPS only, so the double serves TLS; its containers live in a MemoryRealizer.
Every request the backend makes is validated against the official schema by the double: the
tests check at the end that none was refused with 400.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from proximity.containers.base import ContainerLocked, ContainerSpec
from proximity.containers.proxmox import (
    PermissionDenied,
    ProxmoxBackend,
    ProxmoxBackendError,
    ProxmoxConfig,
    TaskFailed,
    TaskTimeout,
)
from proximity.errors import InputError, ProxmoxError
from proximity.host import wait_for

from .schema import Schema
from .server import LVM_INSTALL, ZFS_INSTALL, MemoryRealizer, PveDouble

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NET0 = "name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=02:aa:bb:cc:dd:ee"
LEGACY_NET0 = "name=eth0,bridge=vmbr0,ip=198.51.100.61/24,gw=198.51.100.1,tag=20"
TOKEN = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000002")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load()


@pytest.fixture
def realizer() -> MemoryRealizer:
    return MemoryRealizer(delay=0.01, hold_timeout=10)


@pytest.fixture
def double(realizer: MemoryRealizer, schema: Schema) -> Iterator[PveDouble]:
    with PveDouble(realizer, schema=schema, token=TOKEN, tls=True) as running:
        yield running
        refused = [r for r in running.requests if r["status"] == 400]
        assert refused == [], f"requests the schema refuses: {refused}"


def backend_for(double: PveDouble, **overrides) -> ProxmoxBackend:
    config = {"host": "127.0.0.1", "port": double.port, "node": "pve", "token_id": TOKEN[0],
              "token_secret": TOKEN[1], "bridge": "prox-net", "ca_file": double.ca_file, "template": TEMPLATE,
              "task_timeout": 10.0, **overrides}
    return ProxmoxBackend(ProxmoxConfig(**config))


@pytest.fixture
def backend(double: PveDouble) -> ProxmoxBackend:
    return backend_for(double)


def calls(double: PveDouble, method: str, suffix: str) -> list[dict]:
    return [r for r in double.requests if r["method"] == method and r["path"].endswith(suffix)]


def create(backend: ProxmoxBackend, hostname: str = "web-01", net0: str = NET0) -> int:
    return backend.create(ContainerSpec(hostname, net0)).vmid


# ------------------------------------------------------------------ 1. the vmid race


def test_an_id_claimed_by_another_creator_is_retried_with_a_fresh_one(double, backend):
    double.claim_next_ids = 2  # the GUI takes 100, then Terraform takes 101
    container = backend.create(ContainerSpec("web-01", NET0))
    assert container.vmid == 102 and container.hostname == "web-01"
    refused = [r for r in calls(double, "POST", "/nodes/pve/lxc") if r["status"] == 500]
    assert [r["params"]["vmid"] for r in refused] == ["100", "101"]


def test_the_retry_is_bounded(double):
    backend = backend_for(double, id_attempts=3)
    double.claim_next_ids = 3
    with pytest.raises(ProxmoxError, match="CT 102 already exists"):
        backend.create(ContainerSpec("web-01", NET0))
    assert len(calls(double, "POST", "/nodes/pve/lxc")) == 3


def test_concurrent_creates_all_succeed_with_distinct_ids(double, realizer):
    backends = [backend_for(double) for _ in range(4)]
    results: dict[str, object] = {}
    gate = threading.Barrier(len(backends))

    def run(index: int) -> None:
        gate.wait()
        try:
            results[f"ct-{index}"] = backends[index].create(ContainerSpec(f"ct-{index}", NET0)).vmid
        except Exception as exc:  # reported by the assertion below
            results[f"ct-{index}"] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(backends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(v, int) for v in results.values()), results
    assert sorted(results.values()) == [100, 101, 102, 103]
    # the race did happen: some creates were refused because the id was taken meanwhile
    assert any(r["status"] == 500 for r in calls(double, "POST", "/nodes/pve/lxc"))
    assert {c[2]["hostname"] for c in realizer.calls_of("create")} == {f"ct-{i}" for i in range(4)}


# ------------------------------------------------------------------ 3. tasks


@pytest.mark.parametrize("kind", ["reset", 595, 596])
def test_a_failed_poll_does_not_abort_the_wait(double, backend, kind):
    double.inject(kind, "GET", r"/tasks/[^/]+/status$", times=2)
    vmid = create(backend)
    assert backend.status(vmid).state == "stopped"
    assert [r["status"] for r in calls(double, "GET", "/status")][:2] == [kind if kind != "reset" else "reset"] * 2


def test_a_failed_task_shows_its_final_task_error_line_even_after_a_long_log(double, backend):
    vmid = create(backend)
    double.task_log_noise = 600  # longer than any fixed page of the log
    double.fail_next["start"] = f"startup for container '{vmid}' failed"
    with pytest.raises(TaskFailed) as caught:
        backend.start(vmid)
    message = str(caught.value)
    assert message.rstrip().endswith(f"TASK ERROR: startup for container '{vmid}' failed")
    assert "progress line 600" in message and "progress line 500" not in message


def test_a_timeout_says_the_task_goes_on_and_undoes_nothing(double, realizer):
    backend = backend_for(double, task_timeout=0.3)
    vmid = create(backend)
    held = realizer.hold("start")
    try:
        with pytest.raises(TaskTimeout, match="does not stop a Proxmox task") as caught:
            backend.start(vmid)
        assert "Nothing was undone" in str(caught.value)
        assert double.task(caught.value.upid).status == "running"
    finally:
        held.set()
    assert wait_for(lambda: double.container(vmid)["status"] == "running", 5)
    assert [c[0] for c in realizer.calls] == ["create", "start"]  # no stop, no destroy raced it


def test_a_create_is_followed_past_the_task_timeout_to_its_end(double, realizer):
    backend = backend_for(double, task_timeout=0.2, create_timeout=10)
    held = realizer.hold("create")
    polls_before = len(calls(double, "GET", "/status"))

    def release_after_the_task_timeout() -> None:
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 0.5 and len(calls(double, "GET", "/status")) > polls_before + 3,
                 10, interval=0.05)
        held.set()

    releaser = threading.Thread(target=release_after_the_task_timeout)
    releaser.start()
    try:
        assert backend.create(ContainerSpec("slow-01", NET0)).vmid == 100
    finally:
        held.set()
        releaser.join(10)


# ------------------------------------------------------------------ 2. and 4. stopping, HA


def test_ha_managed_start_and_shutdown_wait_for_the_real_state(double, backend):
    vmid = create(backend)
    double.make_ha_managed(vmid)
    double.ha_delay = 0.4
    backend.start(vmid)
    assert double.container(vmid)["status"] == "running"
    backend.shutdown(vmid)
    assert double.container(vmid)["status"] == "stopped"
    upids = [r for r in double.requests if r["method"] == "POST" and "/status/" in r["path"]]
    assert len(upids) == 2
    assert {t.type for t in double._tasks.values()} >= {"hastart", "hastop"}


def test_destroy_purges_so_ha_and_jobs_keep_no_reference(double, backend):
    vmid = create(backend)
    double.make_ha_managed(vmid)
    backend.destroy(vmid)
    assert double.container(vmid) is None
    destroy = calls(double, "DELETE", f"/lxc/{vmid}")[0]
    assert (destroy["params"]["purge"], destroy["params"]["destroy-unreferenced-disks"]) == ("1", "1")


# ------------------------------------------------------------------ 4. digest and locks


def test_set_net0_sends_the_digest_and_retries_once_after_a_concurrent_edit(double, backend):
    vmid = create(backend)
    double.edit_after_get = 1  # the GUI writes the config between our GET and our PUT, once
    backend.set_net0(vmid, "name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=02:AA:BB:CC:DD:01")
    puts = calls(double, "PUT", "/config")
    assert [r["status"] for r in puts] == [500, 200] and all(r["params"].get("digest") for r in puts)
    assert "02:AA:BB:CC:DD:01" in double.container(vmid)["config"]["net0"]


def test_a_digest_mismatch_twice_is_reported(double, backend):
    vmid = create(backend)
    double.edit_after_get = 2
    with pytest.raises(ProxmoxBackendError, match="changed by someone else twice"):
        backend.set_net0(vmid, NET0)
    assert [r["status"] for r in calls(double, "PUT", "/config")] == [500, 500]


@pytest.mark.parametrize("lock", ["backup", "snapshot", "migrate"])
def test_a_lock_is_named_before_acting(double, backend, lock):
    vmid = create(backend)
    with double._state:
        double._cts[vmid].config["lock"] = lock
    assert backend.status(vmid).lock == lock
    with pytest.raises(ContainerLocked, match=rf"CT {vmid} is locked \({lock}\).*pct unlock {vmid}"):
        backend.set_net0(vmid, NET0)
    with pytest.raises(ContainerLocked, match=rf"locked \({lock}\)"):
        backend.start(vmid)
    assert [r for r in calls(double, "PUT", "/config")] == []


def test_a_change_left_pending_on_a_running_container_is_reported(double, backend):
    vmid = create(backend)
    backend.start(vmid)
    double.hotplug = False
    with pytest.raises(ProxmoxBackendError, match="not in effect.*pending"):
        backend.set_net0(vmid, "name=eth0,bridge=prox-net,ip=dhcp,hwaddr=02:AA:BB:CC:DD:01")
    double.hotplug = True
    backend.set_net0(vmid, "name=eth0,bridge=prox-net,ip=dhcp,hwaddr=02:AA:BB:CC:DD:02")
    assert "02:AA:BB:CC:DD:02" in double.container(vmid)["config"]["net0"]


# ------------------------------------------------------------------ 5. snapshots


def test_storage_without_snapshots_is_detected(double, backend):
    double.storages = {**LVM_INSTALL, "nfs-raw": {"type": "nfs", "content": "images,rootdir"}}
    on_lvm = backend.create(ContainerSpec("thin-01", NET0)).vmid
    assert backend.can_snapshot(on_lvm)
    on_nfs = backend_for(double, storage="nfs-raw").create(ContainerSpec("nfs-01", NET0)).vmid
    assert not backend.can_snapshot(on_nfs)
    with pytest.raises(TaskFailed, match="snapshot feature is not available"):
        backend.snapshot(on_nfs, "before")


# ------------------------------------------------------------------ 6. listing


def test_list_is_one_cluster_call_filtered_on_lxc_and_this_node(double, backend, realizer):
    first, second = create(backend, "web-01"), create(backend, "web-02")
    double.other_resources = [
        {"id": "qemu/300", "vmid": 300, "type": "qemu", "node": "pve", "name": "windows", "status": "running"},
        {"id": "lxc/400", "vmid": 400, "type": "lxc", "node": "pve2", "name": "elsewhere", "status": "running"},
    ]
    with double._state:
        double._cts[second].config["lock"] = "backup"
    held = realizer.hold("destroy")
    destroying = threading.Thread(target=backend.destroy, args=(first,))
    destroying.start()
    try:
        wait_for(lambda: realizer.calls_of("destroy"), 5)
        before = len(double.requests)
        listed = backend.list()
        assert [(c.vmid, c.hostname, c.lock) for c in listed] == [(first, "web-01", None), (second, "web-02", "backup")]
        # The destroy's own DELETE may be recorded after `before` (the double records a request once
        # answered) and its task polls run on: neither is the listing's.
        ours = [(r["method"], r["path"]) for r in double.requests[before:]
                if "/tasks/" not in r["path"] and (r["method"], r["path"]) != ("DELETE", f"/nodes/pve/lxc/{first}")]
        assert ours == [("GET", "/cluster/resources")]
    finally:
        held.set()
        destroying.join(10)
    assert [c.vmid for c in backend.list()] == [second]  # deleted meanwhile: gone, and no error


# ------------------------------------------------------------------ 8. create


def test_create_sets_nesting_on_unprivileged_containers(double, backend):
    vmid = create(backend)
    config = double.container(vmid)["config"]
    assert (config["unprivileged"], config["features"]) == (1, "nesting=1")


def test_a_missing_storage_is_refused_naming_those_that_would_work(double, realizer):
    double.storages = ZFS_INSTALL  # no local-lvm on ZFS installs
    backend = backend_for(double, storage="local-lvm")
    with pytest.raises(InputError, match=r"'local-lvm' does not exist.*would work: local-zfs"):
        create(backend)
    with pytest.raises(InputError, match=r"'local' does not hold container root disks.*would work: local-zfs"):
        create(backend_for(double, storage="local"))
    assert realizer.calls_of("create") == [] and calls(double, "POST", "/nodes/pve/lxc") == []
    assert create(backend_for(double, storage="local-zfs")) == 100


# ------------------------------------------------------------------ 9. permissions


def test_a_privsep_token_without_rights_is_named_once_not_an_empty_list(double, backend):
    create(backend)
    double.set_access(privsep=True, acl={})
    fresh = backend_for(double)
    with pytest.raises(PermissionDenied) as caught:
        fresh.list()
    message = str(caught.value)
    assert "VM.Audit" in message and "on /vms" in message and "Datastore.Audit on /storage/local-lvm" in message
    assert "SDN.Use on /sdn/zones/localnetwork/prox-net" in message and "README" in message
    assert len(calls(double, "GET", "/access/permissions")) == 2  # once per backend


def test_enough_rights_pass_the_check_and_a_403_names_privilege_path_and_readme(double, backend):
    vmid = create(backend)
    everything = {"VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory",
                  "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback"}
    acl = {"/vms": everything, "/storage": {"Datastore.AllocateSpace", "Datastore.Audit"},
           "/sdn/zones/localnetwork": {"SDN.Use"}}
    double.set_access(privsep=True, acl=acl)
    restricted = backend_for(double)
    assert [c.vmid for c in restricted.list()] == [vmid]
    double.set_access(privsep=True, acl={**acl, "/vms": everything - {"VM.PowerMgmt"}})  # an admin revokes one
    with pytest.raises(PermissionDenied, match=rf"Permission check failed \(/vms/{vmid}, VM.PowerMgmt\).*README"):
        restricted.start(vmid)
