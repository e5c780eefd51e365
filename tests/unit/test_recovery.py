"""The recovery decisions, pure: what an interrupted create or destroy, or an outside change, leaves,
and which repair settles each."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from proximity.containers.base import Container
from proximity.containers.recovery import ADOPT, KEEP, LINK, RELEASE, REMOVE, plan_repairs
from proximity.host import Host
from proximity.network.reservations import AdmissionError, Intent, Reservation, Reservations
from proximity.owner import Owner
from proximity.settings import load_settings

BRIDGE = "prox-net"
MAC = "02:00:00:00:00:01"


def ct(vmid: int, hostname: str, mac: str | None = MAC, state: str = "stopped", bridge: str = BRIDGE) -> Container:
    net0 = f"name=eth0,bridge={bridge},ip=dhcp" + (f",hwaddr={mac.upper()}" if mac else "")
    return Container(vmid, hostname, state, net0, "lxc")


def intent(op: str, alive: bool, start: bool = False) -> Intent:
    return Intent(op, pid=1 if alive else 0, pid_start=0, since=0.0, start=start)


def plan(reservations, containers=(), strays=(), interrupted_only=False):
    return [(r.kind, r.reservation.hostname if r.reservation else None, r.container.vmid if r.container else None,
             r.start) if r.kind != REMOVE else (REMOVE, str(r.path))
            for r in plan_repairs(reservations, containers, bridge=BRIDGE, alive=lambda i: i.pid == 1,
                                  strays=strays, interrupted_only=interrupted_only)]


@pytest.mark.parametrize("interrupted_only", [True, False])
def test_interrupted_create_is_finished_when_the_container_exists_and_undone_when_not(interrupted_only):
    pending = Reservation("web", MAC, "10.10.0.100", None, intent("create", alive=False, start=True))
    # Killed before the backend made the container: undo.
    assert plan([pending], interrupted_only=interrupted_only) == [(RELEASE, "web", None, False)]
    # Killed after: link it, and start it as the create would have.
    assert plan([pending], [ct(101, "web")], interrupted_only=interrupted_only) == [(LINK, "web", 101, True)]
    # Killed after it started (already linked, intent not yet cleared): link, no second start.
    linked = Reservation("web", MAC, "10.10.0.100", 101, intent("create", alive=False, start=True))
    assert plan([linked], [ct(101, "web", state="running")], interrupted_only=interrupted_only) == [
        (LINK, "web", 101, False)]
    # A create that was not asked to start stays stopped.
    no_start = Reservation("web", MAC, "10.10.0.100", None, intent("create", alive=False))
    assert plan([no_start], [ct(101, "web")], interrupted_only=interrupted_only) == [(LINK, "web", 101, False)]


def test_an_operation_whose_process_runs_is_left_alone():
    running = Reservation("web", MAC, "10.10.0.100", None, intent("create", alive=True))
    assert plan([running]) == []
    assert plan([running], [ct(101, "web")]) == []  # its container is not adopted either
    unknown = Reservation("web", MAC, "10.10.0.100", 101, intent("migrate", alive=False))
    assert plan([unknown], []) == []  # an operation recovery does not know is not its to settle


def test_interrupted_destroy_keeps_a_container_that_is_still_there_and_releases_one_that_is_gone():
    destroying = Reservation("web", MAC, "10.10.0.100", 101, intent("destroy", alive=False))
    assert plan([destroying], [ct(101, "web")]) == [(KEEP, "web", 101, False)]
    assert plan([destroying], []) == [(RELEASE, "web", None, False)]
    # The destroy had stopped a running container: it is started again, as it was.
    was_running = Reservation("web", MAC, "10.10.0.100", 101, intent("destroy", alive=False, start=True))
    assert plan([was_running], [ct(101, "web")]) == [(KEEP, "web", 101, True)]
    assert plan([was_running], [ct(101, "web", state="running")]) == [(KEEP, "web", 101, False)]


def test_recovery_leaves_orphans_that_no_command_interrupted_to_gc():
    orphan = Reservation("gone", "02:00:00:00:00:09", "10.10.0.109", 109)
    stranger = ct(120, "stranger", mac="02:00:00:00:00:20")
    unlinked = Reservation("web", MAC, "10.10.0.100", None)
    assert plan([orphan, unlinked], [stranger, ct(101, "web")], interrupted_only=True) == []
    assert plan([orphan, unlinked], [stranger, ct(101, "web")]) == [
        (RELEASE, "gone", None, False), (LINK, "web", 101, False), (ADOPT, None, 120, False)]


def test_gc_adopts_only_containers_on_the_bridge_with_a_mac_and_removes_strays():
    others = [ct(130, "on-vmbr0", mac="02:00:00:00:00:30", bridge="vmbr0"), ct(131, "no-mac", mac=None)]
    assert plan([], others) == []
    assert plan([], [], strays=[Path("/x/lxc/105")]) == [(REMOVE, "/x/lxc/105")]
    assert plan([], [], strays=[Path("/x/lxc/105")], interrupted_only=True) == [(REMOVE, "/x/lxc/105")]


def test_a_reservation_follows_its_mac_not_a_reused_vmid():
    r = Reservation("web", MAC, "10.10.0.100", 101)
    assert plan([r], [ct(101, "web")]) == []  # converged
    # CT 101 was destroyed outside Proximity and the id reused by another container:
    assert plan([r], [ct(101, "other", mac="02:00:00:00:00:77")])[0] == (RELEASE, "web", None, False)


def test_owner_tells_a_live_process_from_a_dead_one_with_the_same_pid():
    me = Owner.me()
    assert me.alive() and me.pid == os.getpid()
    assert not Owner(me.pid, me.start + 1).alive()  # the pid reused by a later process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not Owner(child.pid, 0).alive()
    assert Intent.begin("create").alive()


def test_an_intent_survives_the_database_and_blocks_admission_with_a_clear_message(tmp_path):
    reservations = Reservations(load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run")), Host())
    dead = intent("create", alive=False, start=True)
    reservations.reserve("web", [], intent=dead)
    assert reservations.find(hostname="web").intent == dead
    with pytest.raises(AdmissionError, match="interrupted create by pid 0 .* `proximity gc`"):
        reservations.reserve("web", [])
    reservations.assign("web", 101)
    reservations.set_intent("web", None)
    assert reservations.find(hostname="web") == Reservation("web", reservations.find(hostname="web").mac,
                                                            "10.10.0.100", 101, None)


# -- properties: over any mix of reservations, containers and strays --------------------------------

INTENTS = st.sampled_from([None, ("create", False, False), ("create", False, True), ("create", True, False),
                           ("destroy", False, False), ("destroy", False, True), ("destroy", True, False)])


@st.composite
def hosts(draw):
    """Reservations r0.. (each maybe with an intent and maybe with its container), strangers, strays."""
    reservations, containers = [], []
    for i in range(draw(st.integers(0, 6))):
        mac = f"02:00:00:00:01:{i:02x}"
        kind = draw(INTENTS)
        made = draw(st.booleans())
        vmid = 100 + i
        linked = made and draw(st.booleans())
        it = Intent(kind[0], 1 if kind[1] else 0, 0, 0.0, kind[2]) if kind else None
        reservations.append(Reservation(f"r{i}", mac, f"10.10.0.{100 + i}", vmid if linked else None, it))
        if made:
            containers.append(ct(vmid, f"r{i}", mac=mac, state=draw(st.sampled_from(["running", "stopped"]))))
    for j in range(draw(st.integers(0, 3))):
        bridge = draw(st.sampled_from([BRIDGE, "vmbr0"]))
        mac = draw(st.sampled_from([f"02:00:00:00:02:{j:02x}", None]))
        containers.append(ct(200 + j, f"s{j}", mac=mac, bridge=bridge))
    strays = [Path(f"/x/lxc/{300 + k}") for k in range(draw(st.integers(0, 2)))]
    return reservations, containers, strays


def apply_model(reservations, containers, strays, repairs):
    """What ContainerManager._apply does, on plain data."""
    by_host = {r.hostname: r for r in reservations}
    running = {c.vmid: c.state for c in containers}
    for repair in repairs:
        r, c = repair.reservation, repair.container
        if repair.kind in (LINK, KEEP):
            by_host[r.hostname] = replace(r, vmid=c.vmid, intent=None)
        elif repair.kind == RELEASE:
            del by_host[r.hostname]
        elif repair.kind == ADOPT:
            by_host[c.hostname] = Reservation(c.hostname, c.net0.split("hwaddr=")[1].lower(), "10.10.0.250", c.vmid)
        elif repair.kind == REMOVE:
            strays = [s for s in strays if s != repair.path]
        if repair.start:
            running[c.vmid] = "running"
    containers = [replace(c, state=running[c.vmid]) for c in containers]
    return list(by_host.values()), containers, strays


@hsettings(max_examples=300, deadline=None)
@given(hosts())
def test_gc_converges_in_one_pass_and_never_touches_a_live_operation_or_a_container(host):
    reservations, containers, strays = host
    alive = lambda i: i.pid == 1  # noqa: E731
    repairs = plan_repairs(reservations, containers, bridge=BRIDGE, alive=alive, strays=strays)
    assert not [r for r in repairs if r.reservation and r.reservation.intent and alive(r.reservation.intent)]
    after = apply_model(reservations, containers, strays, repairs)
    assert [c.vmid for c in after[1]] == [c.vmid for c in containers]  # no container is ever destroyed
    assert plan_repairs(*after[:2], bridge=BRIDGE, alive=alive, strays=after[2]) == []
    # Crash recovery alone settles every interrupted operation and leaves the other orphans to gc.
    recovered = apply_model(reservations, containers, strays, plan_repairs(
        reservations, containers, bridge=BRIDGE, alive=alive, strays=strays, interrupted_only=True))
    assert not [r for r in recovered[0] if r.intent and not alive(r.intent)]
    assert [(r.hostname, r.vmid) for r in recovered[0] if not r.intent and r in reservations] == [
        (r.hostname, r.vmid) for r in reservations if not r.intent]


def test_across_zones_a_mac_is_one_container():
    """MACs are unique across the host: a container on another zone's bridge is that zone's. Its MAC reserved
    there is not adopted here, and a reservation left here by an interrupted `ct move` is released by gc."""
    moved = ct(101, "app", bridge="pz-db")
    left = Reservation("app", MAC, "10.10.0.100", 101)
    repairs = plan_repairs([left], [moved], bridge=BRIDGE, alive=lambda i: True, other_bridges={"pz-db"})
    assert [(r.kind, r.elsewhere) for r in repairs] == [(RELEASE, "pz-db")]
    assert "another zone's bridge" in repairs[0].describe() and "pz-db" in repairs[0].orphan
    assert plan_repairs([left], [moved], bridge=BRIDGE, alive=lambda i: True, other_bridges={"pz-db"},
                        interrupted_only=True) == []  # crash recovery leaves it to gc
    here = ct(102, "web", mac="02:00:00:00:00:02")  # on prox-net, its MAC reserved in zone web
    assert plan_repairs([], [here], bridge=BRIDGE, alive=lambda i: True,
                        reserved_elsewhere={"02:00:00:00:00:02"}) == []
    assert [r.kind for r in plan_repairs([], [here], bridge=BRIDGE, alive=lambda i: True)] == [ADOPT]
