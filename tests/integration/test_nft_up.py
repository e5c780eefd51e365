"""``up`` and the nftables table in a sandbox host: converged means nothing to do, drift is planned
back, Docker's FORWARD drop is met with iptables accepts, and the upgrade from the iptables rules
keeps a NAT flow alive."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from proximity import sandbox as sandboxes
from proximity.network import interfaces, render
from proximity.network.firewall import legacy_rules
from proximity.sandbox import pve_host
from proximity.settings import load_settings
from tests.integration.tools import Listener, connect, delete_nft_rule, nft_table, proximity

ECHO = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(4)
print("ready", flush=True)
def serve(conn):
    for line in conn.makefile():
        conn.sendall(line.encode())
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
FLOW = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
reader = s.makefile()
print("connected", flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    print(reader.readline().strip(), flush=True)
"""


def settings_of(sb):
    return load_settings(**sb.settings_overrides())


def own_rules(sb) -> list[str]:
    saved = sandboxes.ns_run(sb.name, ["iptables-save"]).stdout
    return [line for line in saved.splitlines() if "proximity:prox-net" in line]


def up(sb, *args: str) -> dict:
    return json.loads(proximity("up", "--sandbox", sb.name, "--json", *args).stdout)


@pytest.fixture
def client(network):
    yield sandboxes.attach_client(network, "web-nft")
    sandboxes.detach_client(network, "web-nft")


def test_a_converged_host_plans_nothing_and_runs_no_nft(network):
    sb = network
    ruleset = settings_of(sb).ruleset_file
    mtime, listing = ruleset.stat().st_mtime_ns, nft_table(sb.name)
    handle = json.loads(sandboxes.ns_run(sb.name, ["nft", "-j", "list", "table", "inet", "proximity"]).stdout)
    plan = up(sb, "--dry-run")
    assert plan["actions"] == [] and plan["commands"] == [] and plan["files"] == []
    assert up(sb)["actions"] == []
    again = json.loads(sandboxes.ns_run(sb.name, ["nft", "-j", "list", "table", "inet", "proximity"]).stdout)
    assert again == handle  # same handles: the table was not loaded again
    assert ruleset.stat().st_mtime_ns == mtime and nft_table(sb.name) == listing


def test_a_rule_deleted_by_hand_is_planned_back_in_one_transaction(network, client):
    sb = network
    with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 8082) as internet:
        delete_nft_rule(sb.name, "forward", "bridges")  # the drop of new connections into the zone
        plan = up(sb, "--dry-run")
        assert len(plan["actions"]) == 1 and "nftables table inet proximity" in plan["actions"][0]
        writes = [argv for argv in plan["commands"] if "nft" in argv]
        assert writes == [["ip", "netns", "exec", sb.name, "nft", "-f", str(settings_of(sb).ruleset_file)]]
        assert up(sb)["actions"] == plan["actions"] and up(sb)["actions"] == []
        assert "oifname @bridges drop" in nft_table(sb.name)
        # End to end as before: out through NAT, and the LAN cannot reach in.
        assert connect(client.ns, sandboxes.INTERNET_HOST, 8082).returncode == 0
        assert internet.next_peer() == "198.51.100.2"
    with Listener(client.ns, "0.0.0.0", 80):
        sandboxes.ns_run(sb.lan_ns, ["ip", "route", "replace", "10.10.0.0/24", "via", "198.51.100.2"])
        try:
            assert connect(sb.lan_ns, client.ip, 80, timeout=2).returncode != 0
        finally:
            sandboxes.ns_run(sb.lan_ns, ["ip", "route", "del", "10.10.0.0/24"])


def _docker(sb, on: bool) -> None:
    """A stand-in for Docker: FORWARD policy DROP, and its DOCKER-USER chain jumped from FORWARD."""
    steps = ([["-N", "DOCKER-USER"], ["-A", "DOCKER-USER", "-j", "RETURN"], ["-I", "FORWARD", "-j", "DOCKER-USER"],
              ["-P", "FORWARD", "DROP"]] if on else
             [["-P", "FORWARD", "ACCEPT"], ["-D", "FORWARD", "-j", "DOCKER-USER"], ["-F", "DOCKER-USER"],
              ["-X", "DOCKER-USER"]])
    for step in steps:
        sandboxes.ns_run(sb.name, ["iptables", "-w", "5", *step], check=on)


def test_docker_forward_drop_gets_proximitys_accepts_in_docker_user(network, client):
    sb = network
    _docker(sb, True)
    try:
        report = up(sb)
        assert len(report["actions"]) == 3 and all("-A DOCKER-USER" in a for a in report["actions"]), report
        with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 8083) as internet:
            assert connect(client.ns, sandboxes.INTERNET_HOST, 8083).returncode == 0
            assert internet.next_peer() == "198.51.100.2"
            # Without them, Docker's drop wins over the nft table's accepts: the test can fail.
            for rule in own_rules(sb):
                sandboxes.ns_run(sb.name, ["iptables", "-D", *rule.replace('"', "").split()[1:]])
            assert connect(client.ns, sandboxes.INTERNET_HOST, 8083, timeout=2).returncode != 0
            status = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
            failed = {c["id"]: c for c in status["checks"] if not c["ok"]}
            assert "DOCKER-USER" in failed["isolation_rules"]["observed"], status["checks"]
            assert len(up(sb)["actions"]) == 3
            assert connect(client.ns, sandboxes.INTERNET_HOST, 8083).returncode == 0
        proximity("down", "--force", "--sandbox", sb.name)
        assert own_rules(sb) == [] and nft_table(sb.name) is None
    finally:
        _docker(sb, False)
        proximity("up", "--sandbox", sb.name)


def _old_release(sb) -> None:
    """The host as today's release left it: the iptables rules, in the stanza's post-up lines and live."""
    s = settings_of(sb)
    rules = legacy_rules(s, sandboxes.UPLINK, False)
    stanza = [line for line in render.bridge_stanza(s) if "nft -f" not in line]
    stanza += [f"\tpost-up {rule.ensure_shell()}" for rule in rules]
    stanza += [f"\tpost-down {rule.remove_shell()}" for rule in rules]
    sandboxes.ns_run(sb.name, ["nft", "delete", "table", "inet", "proximity"])
    s.ruleset_file.unlink()
    s.ruleset_state_file.unlink()
    sb.interfaces_file.write_text(interfaces.merge_block(sb.interfaces_file.read_text(), stanza))
    pve_host.ifreload(sb.name)  # retried: ifupdown2's lock is machine-wide, other tests reload too
    assert len(own_rules(sb)) == 4 and nft_table(sb.name) is None


def test_the_upgrade_from_iptables_keeps_a_nat_flow_alive_and_leaves_no_old_rule(network):
    sb = network
    _old_release(sb)
    client = sandboxes.attach_client(sb, "flow")
    echo = subprocess.Popen(["ip", "netns", "exec", sb.lan_ns, sys.executable, "-c", ECHO,
                             sandboxes.INTERNET_HOST, "9000"], stdout=subprocess.PIPE, text=True)
    flow = None
    try:
        assert echo.stdout.readline().strip() == "ready"
        flow = subprocess.Popen(["ip", "netns", "exec", client.ns, sys.executable, "-c", FLOW,
                                 sandboxes.INTERNET_HOST, "9000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert flow.stdout.readline().strip() == "connected"

        def say(word: str) -> str:
            flow.stdin.write(word + "\n")
            flow.stdin.flush()
            return flow.stdout.readline().strip()

        assert say("before") == "before"
        # New connections all through the upgrade: there is no moment without NAT.
        failures, done = [], threading.Event()

        def keep_connecting() -> None:
            while not done.is_set():
                result = connect(client.ns, sandboxes.INTERNET_HOST, 9001, timeout=3)
                if result.returncode != 0:
                    failures.append(result.stderr.strip().splitlines()[-1:])

        with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 9001):
            worker = threading.Thread(target=keep_connecting)
            worker.start()
            try:
                report = up(sb)
            finally:
                done.set()
                worker.join(timeout=30)
        actions = report["actions"]
        table = next(i for i, a in enumerate(actions) if "nftables table" in a)
        removed = [i for i, a in enumerate(actions) if a.startswith("remove ") and " rule -A " in a]
        assert len(removed) == 4 and table < min(removed), actions  # the table first, the old rules after
        assert say("after") == "after"  # the same TCP connection, across the upgrade
        assert failures == []
        assert own_rules(sb) == [] and nft_table(sb.name).count(" masquerade\n") == 2
        assert "iptables" not in sb.interfaces_file.read_text()
        assert up(sb)["actions"] == []
    finally:
        for proc in (flow, echo):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=5)
        sandboxes.detach_client(sb, "flow")
