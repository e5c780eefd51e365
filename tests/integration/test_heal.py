"""The faults the reconciler must see and heal, each tried as a user would, in a real sandbox host."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from fastapi.testclient import TestClient

from proximity import sandbox as sandboxes
from proximity.api.app import Context, create_app
from proximity.containers.lxc import LxcBackend
from proximity.host import wait_for
from proximity.network import intent as intents
from proximity.network import render
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from tests.integration.tools import proximity, resolve

GATEWAY = "10.10.0.1"


def settings_of(sb, **overrides):
    return load_settings(**{**sb.settings_overrides(), **overrides})


def status(sb, env=None) -> dict:
    return json.loads(proximity("status", "--sandbox", sb.name, "--json", env=env, check=False).stdout)


@pytest.fixture
def host(sandbox):
    """The sandbox with prox-net up; everything Proximity made is removed afterwards."""
    proximity("up", "--sandbox", sandbox.name)
    yield sandbox
    for client in sandboxes.clients(sandbox):
        sandboxes.detach_client(sandbox, client.hostname)
    lxc = LxcBackend(sandbox.name, sandbox.state_dir / "lxc")
    for container in lxc.list():
        proximity("ct", "destroy", str(container.vmid), "--force", "--sandbox", sandbox.name, check=False)
    proximity("down", "--purge", "--force", "--sandbox", sandbox.name)


def test_a_deleted_bridge_is_recovered_by_up(host):
    sb = host
    old_pid = status(sb)["dns_pid"]
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    broken = status(sb)
    assert broken["health_status"] == "unhealthy" and not broken["bridge_exists"]

    report = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
    assert any("restart dnsmasq" in action for action in report["actions"]), report["actions"]
    healed = status(sb)
    assert healed["health_status"] == "healthy", healed["reasons"]
    assert healed["dns_pid"] != old_pid
    client = sandboxes.attach_client(sb, "after-01")  # a new client gets a lease on the new bridge
    assert client.ip and client.ip.startswith("10.10.0.")


@pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed")
def test_down_then_up_reattaches_running_containers(host):
    sb = host
    created = json.loads(proximity("ct", "create", "web-01", "--sandbox", sb.name, "--json").stdout)
    vmid, port = created["vmid"], f"veth{created['vmid']}i0"
    backend = LxcBackend(sb.name, sb.state_dir / "lxc")

    def pings_gateway() -> bool:
        return backend.exec(vmid, ["ping", "-c", "1", "-W", "1", GATEWAY], timeout=10).returncode == 0

    assert wait_for(pings_gateway, timeout=30)

    # A port knocked off the bridge is seen: status and doctor say so, by name.
    sandboxes.ns_run(sb.name, ["ip", "link", "set", "dev", port, "nomaster"])
    cut = status(sb)
    assert cut["health_status"] == "unhealthy" and cut["detached_ports"] == [port]
    doctor = proximity("doctor", "--sandbox", sb.name, "--json", check=False)
    assert doctor.returncode == 1
    assert any(c["name"] == "container ports" and not c["ok"] for c in json.loads(doctor.stdout))
    proximity("up", "--sandbox", sb.name)
    assert wait_for(pings_gateway, timeout=30)

    # down --force + up: the container keeps running, and up puts its port back on the new bridge.
    proximity("down", "--force", "--sandbox", sb.name)
    assert backend.status(vmid).state == "running"
    report = json.loads(proximity("up", "--sandbox", sb.name, "--json").stdout)
    assert f"attach {port} (CT {vmid} web-01) to prox-net" in report["actions"], report["actions"]
    healed = status(sb)
    assert healed["health_status"] == "healthy", healed["reasons"]
    assert healed["container_ports"] == 1 and healed["detached_ports"] == []
    assert wait_for(pings_gateway, timeout=30)


def test_a_crash_between_writing_the_config_and_restarting_is_healed(host):
    sb = host
    reservations = Reservations(settings_of(sb), NetworkManager(settings_of(sb)).host)
    with reservations.locked():
        web = reservations.reserve("web", [])
    # dnsmasq re-reads its hosts files on the SIGHUP the reservation sent, in its own time.
    assert wait_for(lambda: resolve(sb.name, "web.prox.local", GATEWAY) == [web.ip], timeout=10)

    # The config of a new domain is written, then the run dies before dnsmasq is restarted.
    env = {"PROXIMITY_DOMAIN": "lab.example"}
    new = settings_of(sb, domain="lab.example")
    sb.dnsmasq_conf.write_text(render.dnsmasq_conf(new))
    stale = status(sb, env)
    assert stale["health_status"] != "healthy" and not stale["dns_config_current"]
    assert any("old config" in reason for reason in stale["reasons"])

    plan = json.loads(proximity("up", "--sandbox", sb.name, "--json", "--dry-run", env=env).stdout)
    assert any("restart dnsmasq" in action for action in plan["actions"]), plan["actions"]
    proximity("up", "--sandbox", sb.name, env=env)
    assert status(sb, env)["health_status"] == "healthy"
    # The names follow the domain: the addn-hosts file is rewritten, old names stop resolving.
    assert resolve(sb.name, "web.lab.example", GATEWAY) == [web.ip]
    assert resolve(sb.name, "web.prox.local", GATEWAY) == []
    assert "web.lab.example" in (sb.state_dir / "hosts").read_text()
    again = json.loads(proximity("up", "--sandbox", sb.name, "--json", env=env).stdout)
    assert again["actions"] == []
    with reservations.locked():
        reservations.release("web")


def test_upstream_dns_setting_is_honoured_in_a_sandbox(host):
    sb = host
    env = {"PROXIMITY_UPSTREAM_DNS": "198.51.100.53"}
    plan = json.loads(proximity("up", "--sandbox", sb.name, "--json", "--dry-run", env=env).stdout)
    conf = next(f for f in plan["files"] if f["path"] == str(sb.dnsmasq_conf))
    assert "server=198.51.100.53" in conf["after"] and f"server={sandboxes.LAN_GATEWAY}" not in conf["after"]


def test_doctor_without_a_bridge_prints_no_stray_errors(host):
    sb = host
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    result = proximity("doctor", "--sandbox", sb.name, check=False)
    assert result.returncode == 1
    assert "Device does not exist" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_service_heals_a_killed_dnsmasq_and_a_repaired_host(sandbox):
    sb = sandbox
    settings = settings_of(sb, uplink="upl0")
    intents.record(NetworkManager(settings).host, settings, intents.UP)  # as `proximity up --uplink upl0` would
    context = Context(settings, retry_every=0.2, reconcile_every=0.5)
    try:
        with TestClient(create_app(context)):
            # The uplink does not exist yet: every reconcile fails, and status says so.
            assert wait_for(lambda: context.last_converge["ok"] is False, timeout=30)
            assert "upl0" in context.last_converge["error"]
            sandboxes.ns_run(sb.name, ["ip", "link", "add", "upl0", "type", "veth", "peer", "name", "upl0p"])
            # Repaired: the service's own retries converge; no admin action needed.
            assert wait_for(lambda: context.last_converge["ok"] is True, timeout=60), context.last_converge
            assert wait_for(lambda: context.status.get().health_status == "healthy", timeout=30), \
                context.status.get().reasons
            assert b"converge failed" not in context.status_json(wait=True)

            # dnsmasq killed long after the first converge: the service starts it again.
            pid = context.status.get().dns_pid
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda: (context.status.get().dns_pid or pid) != pid
                            and context.status.get().health_status == "healthy", timeout=30), \
                context.status.get().reasons
    finally:
        proximity("down", "--purge", "--sandbox", sb.name, env={"PROXIMITY_UPLINK": "upl0"}, check=False)
        sandboxes.ns_run(sb.name, ["ip", "link", "delete", "upl0"], check=False)
