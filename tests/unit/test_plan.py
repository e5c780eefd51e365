"""The planner and the reconciler over the in-memory host: drift is always seen, one apply converges,
and a failure at any step undoes every earlier one."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from proximity.errors import HostError
from proximity.network import interfaces, render
from proximity.network.firewall import Rule, comment, legacy_rules
from proximity.network.health import health
from proximity.network.plan import plan_down, plan_up
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.fakehost import FakeHost

BASE = """auto lo
iface lo inet loopback

iface eno1 inet manual

auto vmbr0
iface vmbr0 inet static
\taddress 198.51.100.2/24
\tgateway 198.51.100.1
\tbridge-ports eno1
\tbridge-stp off
\tbridge-fd 0

source /etc/network/interfaces.d/*
"""


def make_settings(**changes):
    return load_settings(**{
        "interfaces_file": "/fake/etc/network/interfaces", "dnsmasq_conf": "/fake/etc/proximity/dnsmasq.conf",
        "leases_file": "/fake/state/dnsmasq.leases", "state_dir": "/fake/state", "run_dir": "/fake/run",
        "netns": "fake", "upstream_dns": ["198.51.100.1"], **changes})


SETTINGS = make_settings()


def fresh_host() -> FakeHost:
    host = FakeHost(SETTINGS.bridge)
    host.files[str(SETTINGS.interfaces_file)] = BASE
    host.add_link("lo")
    host.add_link("eno1", master="vmbr0")
    host.add_link("vmbr0", kind="bridge", addresses=("198.51.100.2/24",))
    host.routes = [{"dst": "default", "gateway": "198.51.100.1", "dev": "vmbr0"},
                   {"dst": "198.51.100.0/24", "dev": "vmbr0"}]
    # A managed container that runs: its reservation, and its port (on no bridge before `up`).
    host.files[str(SETTINGS.reservations_db)] = json.dumps(
        [{"hostname": "web-01", "mac": "02:00:00:00:01:01", "ip": "10.10.0.100", "vmid": 101}])
    host.add_link("veth101i0")
    return host


def converged_host() -> FakeHost:
    host = fresh_host()
    NetworkManager(SETTINGS, host=host).up()
    return host


def plan_of(host: FakeHost, settings=SETTINGS):
    manager = NetworkManager(settings, host=host)
    return plan_up(settings, manager.observe())


def test_a_fresh_host_converges_in_one_up_and_the_second_is_a_no_op():
    host = fresh_host()
    report = NetworkManager(SETTINGS, host=host).up()
    assert "attach veth101i0 (CT 101 web-01) to prox-net" in report.actions
    assert host.links["veth101i0"].master == "prox-net"
    assert not plan_of(host)
    manager = NetworkManager(SETTINGS, host=host)
    assert health(SETTINGS, manager.observe(probe=True)).health_status == "healthy"
    host.commands.clear()
    assert manager.up().actions == [] and host.commands == []


# -- drift: each is something a real host does to us ---------------------------------------------
def _stale_rule(host):
    host.rules.append(Rule("nat", "POSTROUTING", ("-s", "10.10.0.0/24", "-o", "eno9", "-m", "comment",
                                                  "--comment", comment(SETTINGS), "-j", "MASQUERADE")))


DRIFT = {
    "bridge deleted": lambda h: h._delete_link("prox-net"),
    "bridge down": lambda h: "prox-net" in h.links and setattr(h.links["prox-net"], "up", False),
    "address removed": lambda h: "prox-net" in h.links and setattr(h.links["prox-net"], "addresses", []),
    "a table rule deleted by hand": lambda h: h.table and setattr(
        h, "table", h.table.replace("\t\toifname @bridges drop\n", "", 1)),
    "table deleted": lambda h: setattr(h, "table", None),
    "ruleset file edited": lambda h: h.files.update({str(SETTINGS.ruleset_file): "# edited\n"}),
    "a stale rule": _stale_rule,
    "the old release's iptables rules": lambda h: h.rules.extend(legacy_rules(SETTINGS, "eno1", False)),
    "docker's FORWARD drop": lambda h: h.chains.update({"FORWARD": "DROP", "DOCKER-USER": "-"}),
    "forwarding off": lambda h: h.sysctls.update({"net.ipv4.ip_forward": "0"}),
    "dnsmasq killed": lambda h: h.processes.clear(),
    "config edited": lambda h: h.files.update({str(SETTINGS.dnsmasq_conf): "# edited\n"}),
    "config written, dnsmasq not restarted": lambda h: h.files.update(
        {str(SETTINGS.dnsmasq_conf): render.dnsmasq_conf(make_settings(domain="lab.example"))}),
    "hosts file emptied": lambda h: h.files.update({str(SETTINGS.addn_hosts_file): ""}),
    "container port detached": lambda h: setattr(h.links["veth101i0"], "master", None),
    "stanza removed": lambda h: h.files.update(
        {str(SETTINGS.interfaces_file): interfaces.remove_block(h.files[str(SETTINGS.interfaces_file)])}),
}

drifts = st.lists(st.sampled_from(sorted(DRIFT)), min_size=1, max_size=5, unique=True)


def drifted(names: list[str]) -> FakeHost:
    host = converged_host()
    for name in names:
        DRIFT[name](host)
    host.commands.clear()
    return host


@given(drifts)
@hsettings(max_examples=150, deadline=None)
def test_every_drift_gives_a_plan_and_one_up_converges_it(names):
    host = drifted(names)
    assert plan_of(host), f"drift {names} went unseen"
    NetworkManager(SETTINGS, host=host).up()
    assert not plan_of(host), plan_of(host).describe()
    manager = NetworkManager(SETTINGS, host=host)
    assert health(SETTINGS, manager.observe(probe=True)).health_status == "healthy"


@given(drifts)
@hsettings(max_examples=60, deadline=None)
def test_heal_converges_without_ifreload(names):
    host = drifted(names)
    NetworkManager(SETTINGS, host=host).heal()
    assert not plan_of(host), plan_of(host).describe()
    assert not any(argv[0] == "ifreload" for argv in host.commands)


def test_changed_settings_give_a_plan():
    host = converged_host()
    for changed in (make_settings(domain="lab.example"), make_settings(lease_time="1h"),
                    make_settings(upstream_dns=["198.51.100.53"]), make_settings(uplink="eno1")):
        assert plan_of(host, changed), changed


@given(drifts, st.data())
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_failing_step_undoes_every_earlier_one(names, data):
    before = drifted(names)
    rehearsal = before.clone()
    NetworkManager(SETTINGS, host=rehearsal).up()
    probe = next(i for i, argv in enumerate(rehearsal.commands) if argv[:3] == ["ip", "netns", "add"])
    steps = probe  # the probe after a successful up is a check, outside the change
    assert steps > 0
    failing = data.draw(st.integers(0, steps - 1), label="failing step")
    host = before.clone()
    count = iter(range(10**6))
    host.fail = lambda argv: next(count) == failing
    with pytest.raises(HostError):
        NetworkManager(SETTINGS, host=host).up()
    assert host.state() == before.state(), f"step {failing} of {rehearsal.commands}"


def test_down_removes_everything_and_a_failure_undoes_it():
    host = converged_host()
    plan = plan_down(SETTINGS, NetworkManager(SETTINGS, host=host).observe())
    assert plan
    rehearsal = host.clone()
    NetworkManager(SETTINGS, host=rehearsal).down(purge=True, force=True)  # web-01 runs: cut off on purpose
    assert "prox-net" not in rehearsal.links and rehearsal.rules == [] and not rehearsal.processes
    assert rehearsal.files[str(SETTINGS.interfaces_file)] == BASE
    for failing in range(len(rehearsal.commands)):
        victim = host.clone()
        count = iter(range(10**6))
        victim.fail = lambda argv, failing=failing: next(count) == failing
        with pytest.raises(HostError):
            NetworkManager(SETTINGS, host=victim).down(purge=True, force=True)
        assert victim.state() == host.state(), f"step {failing} of {rehearsal.commands}"
