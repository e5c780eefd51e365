"""kill -9 during `proximity ct create`, orphans in `doctor`, and `proximity gc`: real LXC containers in a sandbox.

A create is killed at each of its milestones (the reservation written, the container's directory
claimed, the container built, the container linked and starting), watched on the files it writes.
The next `ct` command finishes or undoes it; the same create run again then converges, and
nothing is left orphaned.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import CREATING, META, LxcBackend
from proximity.host import Host, wait_for
from proximity.network.reservations import Reservations
from proximity.owner import Owner, start_time
from proximity.settings import load_settings
from tests.integration.test_containers import proxmox  # noqa: F401 (a fixture: the Proxmox API double)
from tests.integration.tools import PROXIMITY, proximity, resolve

pytestmark = pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed: apt-get install lxc")

GATEWAY = "10.10.0.1"


@pytest.fixture
def lxc(network):
    """The sandbox's LXC backend; every container, directory and reservation is removed afterwards."""
    backend = LxcBackend(network.name, network.state_dir / "lxc")
    yield backend
    for path in backend.lxcpath.iterdir() if backend.lxcpath.is_dir() else []:
        if path.name.isdigit():
            backend.destroy(int(path.name))
    db = Reservations(load_settings(**network.settings_overrides()), Host(network.name))
    with db.locked():
        for r in db.all():
            db.release(r.hostname)


def reservations_file(sb):
    return sb.state_dir / "reservations.json"


def reservations(sb) -> dict[str, dict]:
    path = reservations_file(sb)
    return {r["hostname"]: r for r in json.loads(path.read_text())} if path.exists() else {}


def ct_dirs(backend: LxcBackend) -> dict[str, bool]:
    """Container directories: name -> whether it is complete (has its meta file)."""
    if not backend.lxcpath.is_dir():
        return {}
    return {p.name: (p / META).exists() for p in backend.lxcpath.iterdir() if p.name.isdigit()}


def doctor(sb) -> tuple[int, dict[str, dict]]:
    result = proximity("doctor", "--sandbox", sb.name, "--json", check=False)
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)}


def listed(sb) -> tuple[dict[str, dict], str]:
    result = proximity("ct", "list", "--sandbox", sb.name, "--json")
    return {c["hostname"]: c for c in json.loads(result.stdout)}, result.stderr


def poll(predicate, timeout: float):
    """Check ``predicate`` every millisecond (a milestone may last only tens of milliseconds)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        time.sleep(0.001)
    return result


def leased(sb, mac: str) -> str | None:
    text = sb.leases_file.read_text() if sb.leases_file.exists() else ""
    return next((line.split()[2] for line in text.splitlines() if f" {mac} " in line), None)


def dead_owner() -> Owner:
    """A process that ran and was killed: the owner of an interrupted operation."""
    crashed = subprocess.Popen(["sleep", "60"])
    owner = Owner(crashed.pid, start_time(crashed.pid))
    crashed.kill()
    crashed.wait()
    return owner


def tree(path) -> dict[str, str]:
    """Every file and directory under ``path`` with a hash of its content (directories: "dir")."""
    found = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            found[os.path.join(root, d)] = "dir"
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                found[full] = hashlib.sha256(fh.read()).hexdigest() if os.path.isfile(full) else "special"
    return found


def assert_converged(sb, backend: LxcBackend, name: str) -> dict:
    """``name`` runs, is linked to its reservation, resolves; no orphan, no half-built directory."""
    containers, _ = listed(sb)
    info = containers[name]
    assert info["state"] == "running" and info["ip"] and info["dns_name"] == f"{name}.prox.local", info
    r = reservations(sb)[name]
    assert (r["vmid"], r["mac"], r["ip"], r["intent"]) == (info["vmid"], info["mac"], info["ip"], None), r
    assert all(ct_dirs(backend).values()), ct_dirs(backend)
    assert [c for c in containers.values() if c["hostname"] == name] == [info]
    assert wait_for(lambda: leased(sb, info["mac"]) == info["ip"], 20)
    wait_for(lambda: doctor(sb)[0] == 0, 20)  # a container that just started may not have its resolv.conf yet
    code, checks = doctor(sb)
    assert checks["orphans"]["ok"] and not [n for n in checks if n.startswith("orphan: ")], checks
    assert code == 0, {n: c for n, c in checks.items() if not c["ok"] and not c["warning"]}
    status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
    assert status["health_status"] == "healthy", status["reasons"]
    assert resolve(sb.name, info["dns_name"], GATEWAY) == [info["ip"]]
    return info


# Each milestone is seen "at or after" the point it names; the create is killed right there (after
# a small delay drawn from a seeded generator, so a run is repeatable), and must still be running.
MILESTONES = {
    "reserved": lambda sb, backend, name, before: name in reservations(sb),
    "claimed": lambda sb, backend, name, before: set(ct_dirs(backend)) - before,
    "built": lambda sb, backend, name, before: any(ct_dirs(backend).get(d) for d in set(ct_dirs(backend)) - before),
    "linked": lambda sb, backend, name, before: (reservations(sb).get(name) or {}).get("vmid") is not None,
}


@pytest.mark.parametrize("milestone", list(MILESTONES))
def test_kill_9_during_ct_create_is_finished_or_undone(network, lxc, milestone):
    sb, name = network, f"kill-{milestone}"
    before = set(ct_dirs(lxc))
    create = subprocess.Popen([*PROXIMITY, "ct", "create", name, "--sandbox", sb.name, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reached = poll(lambda: MILESTONES[milestone](sb, lxc, name, before) or create.poll() is not None, 60)
        assert reached and create.poll() is None, f"create ended before {milestone}: {create.communicate()}"
        delay = random.Random(milestone).uniform(0, 0.02)
        wait_for(lambda: create.poll() is not None, delay)  # a seeded pause; the kill is what is tested
        create.send_signal(signal.SIGKILL)
    finally:
        create.wait(30)
    assert create.returncode == -signal.SIGKILL, create.communicate()
    # The next `ct` command must finish the create if the container was made, and undo it if not.
    # Up to "claimed" the kill may land before or after that point; from "built" on, it is after.
    made = any(ct_dirs(lxc).get(d) for d in set(ct_dirs(lxc)) - before)
    assert made or milestone in ("reserved", "claimed")

    # The doctor sees what was left (read-only), before anything repairs it.
    code, checks = doctor(sb)
    orphans = {n: c for n, c in checks.items() if n.startswith("orphan: ")}
    assert code == 1 and f"orphan: {name}" in orphans and "interrupted create" in orphans[f"orphan: {name}"]["detail"]
    assert "proximity gc" in orphans[f"orphan: {name}"]["fix"]

    # The next `ct` command settles it.
    containers, stderr = listed(sb)
    assert "recovered an interrupted command" in stderr
    if not made:
        assert name not in containers and name not in reservations(sb) and set(ct_dirs(lxc)) == before, stderr
    else:
        assert containers[name]["ip"] == reservations(sb)[name]["ip"] and containers[name]["dns_name"], stderr
        assert containers[name]["state"] == "running"  # as the create asked
    assert reservations(sb).get(name, {}).get("intent") is None
    assert all(ct_dirs(lxc).values())

    # The same command again, then everything reads converged.
    again = proximity("ct", "create", name, "--sandbox", sb.name, "--json", check=False)
    if not made:
        assert again.returncode == 0, again.stderr
    else:
        error = json.loads(again.stdout)["error"]  # under --json an error is JSON on stdout
        assert again.returncode == 2 and error["code"] == "conflict" and "already exists" in error["message"], error
    assert_converged(sb, lxc, name)


def test_doctor_lists_orphans_and_gc_repairs_them(network, lxc):
    sb = network
    gone = json.loads(proximity("ct", "create", "gone-1", "--no-start", "--sandbox", sb.name, "--json").stdout)
    kept = json.loads(proximity("ct", "create", "kept-1", "--sandbox", sb.name, "--json").stdout)
    lxc.destroy(gone["vmid"])  # destroyed outside Proximity: its reservation stays
    stranger = lxc.create(ContainerSpec("stranger-1", "name=eth0,bridge=prox-net,ip=dhcp,hwaddr=02:5a:00:00:00:01"))
    lxc.start(stranger.vmid)  # on the bridge with a dynamic lease, no reservation
    outside = lxc.create(ContainerSpec("outside-1", "name=eth0,bridge=vmbr0,ip=198.51.100.70/24"))
    half = lxc.lxcpath / "150"  # a build interrupted before it wrote its meta file
    (half / "rootfs/bin").mkdir(parents=True)
    building = lxc.lxcpath / "151"  # a build in progress: its owner (this test) runs
    building.mkdir()
    me = Owner.me()
    (building / CREATING).write_text(json.dumps({"pid": me.pid, "start": me.start}))

    code, checks = doctor(sb)
    orphans = {n: c for n, c in checks.items() if n.startswith("orphan: ")}
    assert code == 1
    assert set(orphans) == {"orphan: gone-1", f"orphan: CT {stranger.vmid}", "orphan: directory 150"}, orphans
    assert not orphans["orphan: gone-1"]["ok"] and not orphans["orphan: gone-1"]["warning"]
    assert "has no container" in orphans["orphan: gone-1"]["detail"]
    assert orphans[f"orphan: CT {stranger.vmid}"]["warning"]  # it works, but has no stable name
    assert "half-built" in orphans["orphan: directory 150"]["detail"]
    # The name is blocked, and `ct create` says so.
    blocked = proximity("ct", "create", "gone-1", "--sandbox", sb.name, check=False)
    assert blocked.returncode == 2 and "already in use" in blocked.stderr

    # A dry run prints the plan and changes nothing, not even a directory.
    snapshot = tree(sb.state_dir)
    plan = json.loads(proximity("gc", "--dry-run", "--json", "--sandbox", sb.name).stdout)
    assert plan["dry_run"] and len(plan["actions"]) == 3, plan
    assert any("release the reservation of gone-1" in a for a in plan["actions"])
    assert any(f"CT {stranger.vmid}" in a and "reserve" in a for a in plan["actions"])
    assert any(str(half) in a for a in plan["actions"])
    assert tree(sb.state_dir) == snapshot
    text = proximity("gc", "--dry-run", "--sandbox", sb.name).stdout
    assert "would: release the reservation of gone-1" in text and "nothing was changed" in text

    done = json.loads(proximity("gc", "--json", "--sandbox", sb.name).stdout)
    assert len(done["actions"]) == 3 and not [a for a in done["actions"] if a.startswith("could not")], done
    assert not half.exists() and building.is_dir()  # the build in progress is left alone
    assert "gone-1" not in reservations(sb)
    adopted = reservations(sb)["stranger-1"]
    assert (adopted["vmid"], adopted["mac"]) == (stranger.vmid, "02:5a:00:00:00:01")
    assert reservations(sb)["kept-1"]["vmid"] == kept["vmid"]
    assert resolve(sb.name, "stranger-1.prox.local", GATEWAY) == [adopted["ip"]]
    assert lxc.status(outside.vmid).state == "stopped"  # a container off the bridge is not ours: untouched

    code, checks = doctor(sb)
    assert checks["orphans"]["ok"], checks
    assert not [n for n in checks if n.startswith("orphan: ")]
    again = proximity("gc", "--sandbox", sb.name)
    assert "Nothing to do" in again.stdout
    proximity("ct", "create", "gone-1", "--no-start", "--sandbox", sb.name)  # the name is free again


def test_ct_destroy_releases_a_reservation_whose_container_is_gone(network, lxc):
    sb = network
    gone = json.loads(proximity("ct", "create", "gone-2", "--no-start", "--sandbox", sb.name, "--json").stdout)
    lxc.destroy(gone["vmid"])
    plan = proximity("ct", "destroy", "gone-2", "--dry-run", "--sandbox", sb.name)
    assert "release gone-2's reservation" in plan.stdout and "gone-2" in reservations(sb)
    proximity("ct", "destroy", "gone-2", "--sandbox", sb.name)
    assert "gone-2" not in reservations(sb)
    missing = proximity("ct", "destroy", "gone-2", "--sandbox", sb.name, check=False)
    assert missing.returncode == 2 and "no container" in missing.stderr


@pytest.mark.parametrize("milestone", ["recorded", "stopped"])
def test_kill_9_during_ct_destroy_is_settled(network, lxc, milestone):
    """Killed once the destroy is recorded on the reservation, or once it has stopped the container."""
    sb = network
    info = json.loads(proximity("ct", "create", "doomed-1", "--sandbox", sb.name, "--json").stdout)
    init = lxc.container_pid(info["vmid"])
    reached = {
        "recorded": lambda: (reservations(sb).get("doomed-1") or {}).get("intent"),
        "stopped": lambda: not os.path.exists(f"/proc/{init}"),
    }[milestone]
    destroy = subprocess.Popen([*PROXIMITY, "ct", "destroy", "doomed-1", "--force", "--sandbox", sb.name],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert poll(lambda: reached() or destroy.poll() is not None, 60)
        assert destroy.poll() is None, destroy.communicate()
        destroy.send_signal(signal.SIGKILL)
    finally:
        destroy.wait(30)
    containers, stderr = listed(sb)
    if "doomed-1" in containers:  # killed before the container went: it is kept as it was, running
        assert reservations(sb)["doomed-1"]["intent"] is None and containers["doomed-1"]["ip"] == info["ip"]
        assert containers["doomed-1"]["state"] == "running", stderr
        proximity("ct", "destroy", "doomed-1", "--force", "--sandbox", sb.name)
    assert "doomed-1" not in reservations(sb) and "doomed-1" not in listed(sb)[0]
    assert all(ct_dirs(lxc).values()) and str(info["vmid"]) not in ct_dirs(lxc)
    code, checks = doctor(sb)
    assert checks["orphans"]["ok"] and code == 0, checks


def test_the_service_lists_orphans_and_recovers_an_interrupted_create(network, lxc):
    from fastapi.testclient import TestClient

    from proximity.api.app import Context, create_app
    from proximity.network.reservations import Intent

    sb = network
    owner = dead_owner()
    context = Context(load_settings(**sb.settings_overrides()))
    with TestClient(create_app(context, start_background=False)) as client:  # recover() by hand first
        client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
        db = context.containers.reservations
        with db.locked():
            db.reserve("ghost-1", [], intent=Intent("create", owner.pid, owner.start, time.time(), start=True))
        checks = {c["name"]: c for c in client.get("/api/v1/system/network/doctor").json()["data"]}
        assert not checks["orphan: ghost-1"]["ok"] and "interrupted create" in checks["orphan: ghost-1"]["detail"]
        done = context.containers.recover()  # what the service's reconcile loop calls
        assert len(done) == 1 and done[0].startswith("release the reservation of ghost-1"), done
        assert context.containers.recover() == [] and "ghost-1" not in reservations(sb)
        checks = {c["name"]: c for c in client.get("/api/v1/system/network/doctor").json()["data"]}
        assert checks["orphans"]["ok"], checks

    # The running service's reconcile loop does the same on its own.
    with db.locked():
        db.reserve("ghost-2", [], intent=Intent("create", owner.pid, owner.start, time.time(), start=True))
    running = Context(load_settings(**sb.settings_overrides()), reconcile_every=0.2)
    with TestClient(create_app(running)):
        assert wait_for(lambda: "ghost-2" not in reservations(sb), timeout=30)


def test_a_failed_create_undoes_every_step(network, lxc):
    """A step that fails (here: the start) undoes the earlier ones, newest first: no container, no reservation."""
    from proximity.containers.base import BackendError
    from proximity.containers.manager import ContainerManager
    from proximity.network.reconciler import NetworkManager

    sb = network
    manager = ContainerManager(NetworkManager(load_settings(**sb.settings_overrides())), lxc)
    before = set(ct_dirs(lxc))
    real_start = lxc.start

    def failing_start(vmid, timeout=30):
        assert reservations(sb)["doomed-2"]["vmid"] == vmid  # created and linked by now
        raise BackendError(f"CT {vmid} did not start (test)")

    lxc.start = failing_start
    try:
        with pytest.raises(BackendError, match="did not start"):
            manager.create("doomed-2")
    finally:
        lxc.start = real_start
    assert set(ct_dirs(lxc)) == before and "doomed-2" not in reservations(sb)
    assert manager.plan_repairs() == []


def test_recovery_and_gc_with_the_proxmox_backend(network, lxc, proxmox):
    """Proxmox's view (net0 from the CT's config, its own MAC spelling) settles the same way."""
    from proximity.network.reservations import Intent

    double, manager = proxmox
    owner = dead_owner()
    with manager.reservations.locked():  # a create killed after Proxmox made the container
        r = manager.reservations.reserve("pve-ghost", manager.network.leases()[0],
                                         intent=Intent("create", owner.pid, owner.start, time.time(), start=True))
    net0 = f"{manager.network.get_container_network_config('pve-ghost')},hwaddr={r.mac.upper()}"
    made = manager.backend.create(ContainerSpec("pve-ghost", net0))
    listed = {c.hostname: c for c in manager.list()}  # list() recovers first
    assert (listed["pve-ghost"].vmid, listed["pve-ghost"].ip, listed["pve-ghost"].state) == (made.vmid, r.ip, "running")
    assert manager.reservations.find(hostname="pve-ghost").intent is None
    assert manager.plan_repairs() == []
    # Destroyed in Proxmox's GUI: the reservation is an orphan, and gc releases it.
    manager.backend.stop(made.vmid)
    manager.backend.destroy(made.vmid)
    assert [repair.orphan for repair in manager.plan_repairs()] == [
        f"a reservation of pve-ghost ({r.ip}, {r.mac}) has no container"]
    assert manager.collect_garbage() == [
        f"release the reservation of pve-ghost ({r.ip}, {r.mac}) and its lease: no container holds it"]
    assert manager.reservations.find(hostname="pve-ghost") is None
    assert all(req["status"] < 400 for req in double.requests), [req for req in double.requests if req["status"] >= 400]
