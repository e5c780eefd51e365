"""kill -9 at random points of `up` and `down`, then the same command again: the host ends fully
converged (after up) or exactly as before (after down), with nothing orphaned."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from proximity import sandbox as sandboxes
from proximity.host import pid_cmdline, wait_for
from proximity.sandbox.processes import ns_ids, pids_in_ns
from tests.integration.tools import nft_table, proximity

IFUPDOWN = ("ifreload", "ifup", "ifdown", "ifquery")


def own_rules(sb) -> list[str]:
    saved = sandboxes.ns_run(sb.name, ["iptables-save"]).stdout
    return [line for line in saved.splitlines() if "proximity:prox-net" in line]


def dnsmasqs(sb) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline").read()
        except OSError:
            continue
        if f"--conf-file={sb.dnsmasq_conf}" in cmdline:
            found.append(int(pid))
    return found


def temp_files(sb) -> list[str]:
    return [str(p) for p in sb.root.rglob("*.proximity-tmp")]


def run_killed(sb, verb: str, after: float) -> None:
    """Start `proximity VERB`, kill -9 it after ``after`` seconds (or let it finish if it is faster)."""
    proc = subprocess.Popen([sys.executable, "-m", "proximity", verb, "--sandbox", sb.name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it was running (ifreload, ...)
        proc.wait()


def orphans(sb) -> list[int]:
    """ifupdown2 runs the killed command left behind: Proximity starts each command in a session of
    its own (so that a timeout can kill it whole), so `kill -9` of its group does not reach them."""
    found = []
    for pid in pids_in_ns(ns_ids([sb.name])):
        argv = pid_cmdline(pid) or []
        if any(os.path.basename(arg) in IFUPDOWN for arg in argv[:3]):
            found.append(pid)
    return found


def settled(sb) -> None:
    """Wait until the killed run's orphans have finished, so that the checks see the end state.

    The command run again right after the kill is NOT made to wait: it races the orphans on purpose
    (an orphan's post-down line deletes a rule between Proximity's check and its `iptables -D`, which
    used to fail `down` with "Bad rule"); deleting what is already gone must be converged."""
    assert wait_for(lambda: not orphans(sb), 60), f"ifupdown2 still running after 60 s: {orphans(sb)}"


def timed(sb, verb: str) -> float:
    start = time.monotonic()
    proximity(verb, "--sandbox", sb.name)
    return time.monotonic() - start


def test_kill_9_at_random_points_of_up_and_down(sandbox):
    sb = sandbox
    original = sb.interfaces_file.read_bytes()
    up_time, down_time = timed(sb, "up"), timed(sb, "down")
    rng = random.Random(20261201)
    try:
        for _ in range(4):
            run_killed(sb, "up", rng.uniform(0.1, up_time))
            left = nft_table(sb.name)  # the table as the kill left it: none (as before) or the whole new one
            proximity("up", "--sandbox", sb.name)
            assert left in (None, nft_table(sb.name)), left
            settled(sb)
            status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
            assert status["health_status"] == "healthy", status["reasons"]
            assert sb.interfaces_file.read_text().count("iface prox-net inet static") == 1
            assert own_rules(sb) == [] and nft_table(sb.name).count(" masquerade\n") == 2
            assert len(dnsmasqs(sb)) == 1
            assert temp_files(sb) == []
            assert json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)["actions"] == []

            run_killed(sb, "down", rng.uniform(0.1, down_time))
            proximity("down", "--sandbox", sb.name)
            settled(sb)
            assert sb.interfaces_file.read_bytes() == original
            assert sandboxes.ns_run(sb.name, ["ip", "link", "show", "prox-net"], check=False).returncode != 0
            assert own_rules(sb) == [] and nft_table(sb.name) is None
            assert dnsmasqs(sb) == [] and temp_files(sb) == []
    finally:
        proximity("down", "--purge", "--sandbox", sb.name, check=False)
