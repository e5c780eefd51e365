"""The recovery decisions, pure: what an interrupted create or destroy, or an outside change, leaves,
and which repair settles each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
