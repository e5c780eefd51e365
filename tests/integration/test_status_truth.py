"""Status tells the truth on a real sandbox host: a drop rule after a passing probe, a full pool, and
fixes that name the sandbox instead of acting on the machine."""

from __future__ import annotations

import json

import pytest

from proximity import sandbox as sandboxes
from proximity.api.status import StatusSnapshot
from proximity.doctor import run_doctor
from proximity.host import Host
from proximity.network.probe import load as load_probe
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from tests.integration.tools import proximity

DROPS = (["-p", "udp", "-m", "multiport", "--dports", "53,67"], ["-p", "tcp", "--dport", "53"])


def checks_of(data: dict) -> dict[str, dict]:
    return {check["id"]: check for check in data["checks"]}


def drop_dns_and_dhcp(sb, op: str = "-I") -> None:
    for match in DROPS:
        sandboxes.ns_run(sb.name, ["iptables", "-w", "5", op, "INPUT", "-i", "prox-net", *match, "-j", "DROP"])


def test_a_drop_rule_after_a_passing_probe_is_not_healthy(network):
    sb = network
    settings = load_settings(**sb.settings_overrides())
    manager = NetworkManager(settings)
    assert manager.run_probe().ok
    passing = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
    assert passing["health_status"] == "healthy", passing["reasons"]

    snapshot = StatusSnapshot(manager, full_every=3600, recheck_every=3600)
    try:
        assert snapshot.get().health_status == "healthy"
        drop_dns_and_dhcp(sb)
        try:
            # The service's snapshot: the probe passed under other rules, so it is unverified, not healthy.
            snapshot.invalidate()
            seen = snapshot.get()
            assert seen.health_status == "degraded", seen.reasons
            probe = next(c for c in seen.checks if c.id == "end_to_end_probe")
            assert not probe.ok and "unverified" in probe.observed, seen.reasons

            # The CLI probes again and names the rule, with a fix inside the sandbox's namespace.
            status = proximity("status", "--sandbox", sb.name, "--json", check=False)
            data = json.loads(status.stdout)
            assert status.returncode == 1, data  # degraded or unhealthy
            assert data["health_status"] != "healthy", data["reasons"]
            probe = checks_of(data)["end_to_end_probe"]
            assert not probe["ok"]
            assert "drops" in probe["observed"] and "-j DROP" in probe["observed"], probe
            assert f"ip netns exec {sb.name} iptables -I INPUT -i prox-net" in probe["fix"], probe
            assert not load_probe(Host(), settings).ok

            # `up` changes nothing, yet says containers are blocked (it probes again: the rules changed).
            drop_dns_and_dhcp(sb, "-D")
            sandboxes.ns_run(sb.name, ["iptables", "-w", "5", "-I", "INPUT", "-i", "prox-net", "-p", "udp",
                                       "--dport", "67", "-j", "DROP"])
            up = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
            assert not up["actions"] and any("cannot get a lease" in w for w in up["warnings"]), up
            sandboxes.ns_run(sb.name, ["iptables", "-w", "5", "-D", "INPUT", "-i", "prox-net", "-p", "udp",
                                       "--dport", "67", "-j", "DROP"])
        finally:
            for match in DROPS:
                sandboxes.ns_run(sb.name, ["iptables", "-w", "5", "-D", "INPUT", "-i", "prox-net", *match, "-j", "DROP"],
                                 check=False)
        healed = json.loads(proximity("status", "--sandbox", sb.name, "--json").stdout)
        assert healed["health_status"] == "healthy", healed["reasons"]
    finally:
        snapshot.close()


def test_the_service_probes_again_when_the_rules_change(network):
    from proximity.api.app import Context

    sb = network
    context = Context(load_settings(**sb.settings_overrides()), reconcile_every=3600, probe_every=3600)
    try:
        assert context.network.run_probe().ok
        context.status.get()
        before = load_probe(Host(), context.settings)
        context._last_probe -= 10  # the last probe was a while ago, well inside probe_every
        context._probe_when_due(changed=False)
        assert load_probe(Host(), context.settings).time == before.time  # same rules: no new probe
        drop_dns_and_dhcp(sb)
        try:
            context.status.invalidate()  # what GET /api/v1/system/network/status serves: unverified at once
            served = json.loads(context.status_json(wait=True))["data"]
            assert served["health_status"] == "degraded", served["reasons"]
            assert "unverified" in checks_of(served)["end_to_end_probe"]["observed"]
            context._probe_when_due(changed=False)
            after = load_probe(Host(), context.settings)
            assert after.time > before.time and not after.ok and after.cause == "firewall_drop", after
        finally:
            drop_dns_and_dhcp(sb, "-D")
    finally:
        context.status.close()


def test_fixes_on_a_sandbox_name_the_sandbox(network):
    sb = network
    sandboxes.ns_run(sb.name, ["sysctl", "-w", "net.ipv4.ip_forward=0"])
    try:
        data = json.loads(proximity("status", "--sandbox", sb.name, "--json", check=False).stdout)
        assert data["reasons"] and all("sysctl -w" not in reason for reason in data["reasons"]), data["reasons"]
        forward = checks_of(data)["ip_forward"]
        assert not forward["ok"] and forward["fix"] == f"run `proximity up --sandbox {sb.name}`"
        doctor = json.loads(proximity("doctor", "--sandbox", sb.name, "--json", check=False).stdout)
        for check in doctor:
            assert set(check) >= {"id", "name", "ok", "severity", "observed", "fix"}
            if not check["ok"]:
                assert "sysctl -w" not in check["fix"] and "iptables -t nat -A" not in check["fix"], check
                assert sb.name in check["fix"] or "proximity" not in check["fix"], check
    finally:
        proximity("up", "--sandbox", sb.name)


@pytest.fixture
def small_pool(network):
    """The network with a pool of two addresses (10.10.0.100-101); the default range again after."""
    sb = network
    settings = load_settings(**sb.settings_overrides(), dhcp_start="10.10.0.100", dhcp_end="10.10.0.101")
    NetworkManager(settings).up()
    yield sb, settings
    for client in sandboxes.clients(sb):
        sandboxes.detach_client(sb, client.hostname)
    Host().write_text(settings.reservations_db, "[]\n")
    settings.leases_file.unlink(missing_ok=True)
    NetworkManager(load_settings(**sb.settings_overrides())).down()
    proximity("up", "--sandbox", sb.name)


def test_a_pool_full_of_strangers_is_named_by_doctor(small_pool):
    sb, settings = small_pool
    for name in ("spoof-1", "spoof-2"):  # clients without a reservation take every address
        sandboxes.attach_client(sb, name)
    checks = {c.id: c for c in run_doctor(NetworkManager(settings), sb)}
    probe, pool = checks["end_to_end_probe"], checks["dhcp_pool"]
    assert not probe.ok and "pool is full" in probe.observed and "no firewall rule" not in probe.observed, probe
    assert not pool.ok and pool.severity == "warning" and "2 leased to clients without a reservation" in pool.observed
    assert f"proximity leases --sandbox {sb.name}" in pool.fix


def test_every_address_reserved_is_a_full_pool_not_broken_dhcp(small_pool):
    sb, settings = small_pool
    client = sandboxes.attach_client(sb, "kept")
    mac = json.loads(sandboxes.ns_run(client.ns, ["ip", "-json", "link", "show", "eth0"]).stdout)[0]["address"]
    reservations = Reservations(settings, Host(sb.name))
    with reservations.locked():  # one address for the client's MAC, the other for a container not yet up
        kept = reservations.reserve("kept-ct", [], mac)
        reservations.reserve("other", [], "02:00:00:aa:bb:01")
    manager = NetworkManager(settings)
    probe = manager.run_probe()  # its client has no reservation: no address left for it
    assert not probe.ok and probe.cause == "pool_full" and "2 reserved" in probe.reason, probe
    status = manager.status(reprobe=True)
    checks = {c.id: c for c in status.checks}
    assert status.health_status == "degraded", status.reasons
    assert not checks["dhcp_pool"].ok and "2 reserved" in checks["dhcp_pool"].observed
    assert not any("cannot get a lease" in reason for reason in status.reasons), status.reasons
    assert not checks["end_to_end_probe"].ok and checks["end_to_end_probe"].severity == "warning"
    # ... and the reserved container does get its address.
    renew = sandboxes.ns_run(client.ns, ["busybox", "udhcpc", "-i", "eth0", "-q", "-n", "-t", "3", "-T", "1",
                                         "-s", "/bin/true"], check=False, timeout=15)
    assert f"lease of {kept.ip} obtained" in renew.stdout + renew.stderr, renew
