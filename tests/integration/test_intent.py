"""The admin's intent, on a real sandbox host: `up` and `down` are obeyed by the CLI and by the running
service, `down` never cuts containers off silently, `ct create` waits for `up`, and a command run
against the wrong host says so before it acts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from proximity import sandbox as sandboxes
from proximity.containers.lxc import LxcBackend
from proximity.host import Host, wait_for
from proximity.network.interfaces import MARKER
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from tests.integration.tools import PROXIMITY, delete_nft_rule, nft_table, proximity

needs_lxc = pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed")


def settings_of(sb, **overrides):
    return load_settings(**{**sb.settings_overrides(), **overrides})


def status(sb) -> tuple[int, dict]:
    result = proximity("status", "--sandbox", sb.name, "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def bridge_exists(sb) -> bool:
    return subprocess.run(["ip", "-n", sb.name, "link", "show", "prox-net"], capture_output=True).returncode == 0


def stanza_in_file(sb) -> bool:
    return MARKER in sb.interfaces_file.read_text()


def intent_file(sb):
    return sb.state_dir / "intent.json"


def record(sb) -> dict | None:
    path = intent_file(sb)
    return json.loads(path.read_text()) if path.exists() else None


def clean(sb) -> None:
    """Down, purged, with no intent record: a host where Proximity never ran (or an old release did)."""
    for container in LxcBackend(sb.name, sb.state_dir / "lxc").list():
        proximity("ct", "destroy", str(container.vmid), "--force", "--sandbox", sb.name, check=False)
    if proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False).returncode:
        proximity("down", "--purge", "--sandbox", sb.name)  # says why it failed (or a release without --force)
    intent_file(sb).unlink(missing_ok=True)


@pytest.fixture
def sb(sandbox):
    clean(sandbox)
    yield sandbox
    clean(sandbox)


def test_status_exits_0_healthy_1_degraded_or_unhealthy_3_down_as_requested(sb):
    code, st = status(sb)
    assert (code, st["health_status"], st["intent"], st["intent_source"]) == (3, "down", "down", "legacy"), st
    proximity("up", "--sandbox", sb.name)
    assert record(sb)["state"] == "up"
    code, st = status(sb)
    assert (code, st["health_status"]) == (0, "healthy"), st["reasons"]
    assert proximity("status", "--sandbox", sb.name, check=False).returncode == 0

    sandboxes.ns_run(sb.name, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    code, st = status(sb)
    assert (code, st["health_status"]) == (1, "degraded"), st
    proximity("up", "--sandbox", sb.name)
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    code, st = status(sb)
    assert (code, st["health_status"]) == (1, "unhealthy"), st
    assert proximity("status", "--sandbox", sb.name, check=False).returncode == 1

    proximity("up", "--sandbox", sb.name)
    down = proximity("down", "--sandbox", sb.name)
    assert "leaves it down" in down.stdout
    code, st = status(sb)
    assert (code, st["health_status"], st["intent_source"]) == (3, "down", "record"), st
    assert any("down as requested" in reason for reason in st["reasons"]), st["reasons"]
    plain = proximity("status", "--sandbox", sb.name, check=False)
    assert plain.returncode == 3 and "down as requested" in plain.stdout
    assert "3 down as requested" in " ".join(proximity("status", "--help").stdout.split())


def test_up_records_what_it_was_given_and_a_second_up_writes_nothing(sb):
    first = json.loads(proximity("up", "--sandbox", sb.name, "--uplink", "vmbr0", "--json").stdout)
    assert any(action.startswith("record the intent: up") for action in first["actions"]), first["actions"]
    assert record(sb)["state"] == "up" and record(sb)["uplink"] == "vmbr0"
    assert record(sb)["interfaces_file"] == str(sb.interfaces_file)
    again = json.loads(proximity("up", "--sandbox", sb.name, "--uplink", "vmbr0", "--json").stdout)
    assert again["actions"] == [] and again["files"] == []
    # `down --dry-run` shows the record it would write, and writes nothing.
    plan = json.loads(proximity("down", "--dry-run", "--sandbox", sb.name, "--json").stdout)
    assert any(f["path"].endswith("intent.json") and '"down"' in f["after"] for f in plan["files"]), plan["files"]
    assert record(sb)["state"] == "up" and bridge_exists(sb)


def masquerades(sb) -> list[str]:
    """The masquerade rules of Proximity's nft table."""
    return [line.strip() for line in (nft_table(sb.name) or "").splitlines() if line.endswith(" masquerade")]


def test_the_service_heals_toward_what_up_was_given(sb):
    sandboxes.ns_run(sb.name, ["ip", "link", "add", "upl1", "type", "veth", "peer", "name", "upl1p"])
    try:
        proximity("up", "--uplink", "upl1", "--sandbox", sb.name)
        service = NetworkManager(settings_of(sb))  # the service's settings name no uplink
        assert service.heal().actions == [] and ['oifname "upl1"' in rule for rule in masquerades(sb)] == [True, True]
        delete_nft_rule(sb.name, "postrouting", "masquerade")
        healed = service.heal()
        assert len(healed.actions) == 1 and "nftables table" in healed.actions[0], healed.actions
        assert ['oifname "upl1"' in rule for rule in masquerades(sb)] == [True, True]
        code, st = status(sb)  # status, too, judges by the uplink `up` was given
        assert st["uplink"] == "upl1" and "NAT" not in " ".join(st["reasons"]), st
        # down keeps what up was given: the API's converge (the dashboard's button) brings the same network up.
        proximity("down", "--sandbox", sb.name)
        assert record(sb)["state"] == "down" and record(sb)["uplink"] == "upl1" and masquerades(sb) == []
        from proximity.api.app import Context

        context = Context(settings_of(sb))
        try:
            context.converge()
        finally:
            context.stop()
        assert record(sb)["state"] == "up" and ['oifname "upl1"' in rule for rule in masquerades(sb)] == [True, True]
    finally:
        proximity("down", "--sandbox", sb.name, check=False)
        sandboxes.ns_run(sb.name, ["ip", "link", "delete", "upl1"], check=False)


def test_a_host_without_a_record_reads_its_stanza(sb):
    """A host upgraded from a release without the record: the stanza means up, its absence down."""
    settings = settings_of(sb)
    proximity("up", "--sandbox", sb.name)
    intent_file(sb).unlink()
    code, st = status(sb)
    assert (code, st["intent"], st["intent_source"]) == (0, "up", "legacy"), st
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    healed = NetworkManager(settings).heal()  # what the service does on its own
    assert healed.actions and bridge_exists(sb), healed

    proximity("down", "--sandbox", sb.name)
    intent_file(sb).unlink()
    report = NetworkManager(settings).heal()
    assert report.actions == [] and report.skipped and not bridge_exists(sb), report
    code, st = status(sb)
    assert (code, st["health_status"], st["intent_source"]) == (3, "down", "legacy"), st


@pytest.mark.parametrize("damage", [b"\xff\xfe{", b"", b"{}", b"[1]", b'{"state": "sideways"}',
                                    b'{"state": "up", "uplink": 5}'], ids=repr)
def test_a_damaged_record_means_down_and_status_names_it(sb, damage):
    settings = settings_of(sb)
    proximity("up", "--sandbox", sb.name)
    path = intent_file(sb)
    path.write_bytes(damage)
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    report = NetworkManager(settings).heal()
    assert report.actions == [] and not bridge_exists(sb), report  # down: nothing rebuilt
    assert str(path) in report.skipped and "damaged" in report.skipped
    code, st = status(sb)
    assert (code, st["health_status"], st["intent"], st["intent_source"]) == (1, "unhealthy", "down", "damaged")
    assert any(str(path) in reason and "damaged" in reason for reason in st["reasons"]), st["reasons"]
    created = proximity("ct", "create", "web-09", "--sandbox", sb.name, check=False)
    assert created.returncode == 2 and "damaged" in created.stderr, created.stderr
    proximity("up", "--sandbox", sb.name)  # a new record
    assert record(sb)["state"] == "up" and status(sb)[0] == 0


class Waiter(Host):
    """A host that says when it starts waiting for the lock (to queue a heal behind a running `down`)."""

    def __init__(self, netns, entered: threading.Event):
        super().__init__(netns)
        self.entered = entered

    def lock(self, *args, **kwargs):
        self.entered.set()
        return super().lock(*args, **kwargs)


class Pausing(Host):
    """A host that calls ``hook`` once, at its first file write (under the lock, inside `down`)."""

    def __init__(self, netns, hook):
        super().__init__(netns)
        self.hook = hook

    def write_text(self, *args, **kwargs):
        hook, self.hook = self.hook, None
        if hook:
            hook()
        return super().write_text(*args, **kwargs)


def test_a_heal_queued_behind_down_finds_down(sb):
    settings = settings_of(sb)
    proximity("up", "--sandbox", sb.name)
    entered, healed = threading.Event(), []
    healer = NetworkManager(settings, host=Waiter(settings.netns, entered))
    thread = threading.Thread(target=lambda: healed.append(healer.heal()))

    def queue_a_heal() -> None:  # `down` holds the host lock now; the heal must wait behind it
        thread.start()
        assert entered.wait(10)

    NetworkManager(settings, host=Pausing(settings.netns, queue_a_heal)).down()
    thread.join(timeout=120)
    assert healed and healed[0].actions == [] and healed[0].skipped, healed
    assert not bridge_exists(sb) and not stanza_in_file(sb) and record(sb)["state"] == "down"


class Service:
    """`proximity serve --sandbox NAME` on loopback, with a short heal interval; stopped by pid."""

    def __init__(self, sb, heal_interval: float = 0.3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = open(sb.root / "intent-serve.log", "w")
        proximity("token", "create", "--sandbox", sb.name)  # as the install does; `token show` only reads it
        self.proc = subprocess.Popen([*PROXIMITY, "serve", "--sandbox", sb.name, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PROXIMITY_HEAL_INTERVAL": str(heal_interval)})
        self.url = f"http://127.0.0.1:{self.port}"
        try:  # a service left running would heal the sandbox through every later test
            token = proximity("token", "show", "--sandbox", sb.name).stdout.strip()
            self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert wait_for(lambda: self._ready() or self.proc.poll() is not None, timeout=60)
            assert self.proc.poll() is None, (sb.root / "intent-serve.log").read_text()
        except BaseException:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.log.close()
            raise

    def _ready(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict:
        return self.client.get("/api/v1/system/network/status").json()

    def heals_after(self, since: float) -> float | None:
        """When the service's last reconcile ended, if it ended after ``since``."""
        done = self.status()["data"]["last_converge"].get("time")
        return done if done and done > since else None

    def wait_heal_cycles(self, cycles: int, check) -> None:
        """Wait for ``cycles`` reconciles of the service to end, calling ``check`` between them."""
        mark = time.time()
        for _ in range(cycles):
            mark = wait_for(lambda mark=mark: (check() or True) and self.heals_after(mark), timeout=30)
            assert mark, "the service did not reconcile"

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def test_the_running_service_obeys_up_and_down(sb):
    service = Service(sb)
    try:
        # Started on a host where `up` never ran: it never sets the network up by itself.
        def never_up() -> None:
            assert not bridge_exists(sb) and not stanza_in_file(sb) and record(sb) is None

        service.wait_heal_cycles(3, never_up)
        never_up()
        assert service.status()["data"]["health_status"] == "down"

        # Up: the service keeps it up (a killed dnsmasq is started again).
        proximity("up", "--sandbox", sb.name)
        pid = status(sb)[1]["dns_pid"]
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: status(sb)[1]["dns_pid"] not in (None, pid), timeout=30)

        # Down, with the service running: it works, and it stays down across several heal cycles.
        down = proximity("down", "--sandbox", sb.name)
        assert "the service (`proximity serve`) leaves it down" in down.stdout

        def still_down() -> None:
            assert not bridge_exists(sb) and not stanza_in_file(sb) and record(sb)["state"] == "down"

        still_down()
        service.wait_heal_cycles(4, still_down)
        still_down()
        body = service.status()
        assert body["data"]["health_status"] == "down" and body["message"] == "Network down as requested"
        assert body["data"]["last_converge"]["skipped"]
        metrics = service.client.get("/metrics").text
        assert 'proximity_network_state{state="down",zone="prox-net"} 1.0' in metrics
        assert 'proximity_network_up_requested{zone="prox-net"} 0.0' in metrics
        assert 'proximity_healthy{zone="prox-net"} 1.0' in metrics

        # The API's converge (the dashboard's "Re-run converge") is `up`: it records the intent up.
        job = service.client.post("/api/v1/system/network/initialize", json={}).json()["job"]
        assert wait_for(lambda: service.client.get(f"/api/v1/jobs/{job['id']}").json()["data"]["status"]
                        in ("succeeded", "failed"), timeout=60)
        assert record(sb)["state"] == "up" and bridge_exists(sb)
        assert wait_for(lambda: service.status()["data"]["health_status"] == "healthy", timeout=30)
        page = service.client.get("/").text
        assert 'dataset.status === "down" && !window.confirm(' in page
    finally:
        service.stop()


@needs_lxc
def test_down_refuses_while_a_container_runs_and_force_cuts_it_off(sb):
    proximity("up", "--sandbox", sb.name)
    ct = json.loads(proximity("ct", "create", "app-01", "--sandbox", sb.name, "--json").stdout)
    for args in (["down"], ["down", "--dry-run"], ["down", "--purge"]):
        refused = proximity(*args, "--sandbox", sb.name, check=False)
        assert refused.returncode == 2, refused
        assert f"CT {ct['vmid']} app-01" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert bridge_exists(sb) and record(sb)["state"] == "up" and status(sb)[0] == 0
    forced = proximity("down", "--force", "--sandbox", sb.name)
    assert f"cut off from prox-net: CT {ct['vmid']} app-01" in forced.stderr, forced.stderr
    assert not bridge_exists(sb) and record(sb)["state"] == "down"


def test_ct_create_before_up_refuses_before_it_creates_anything(sb):
    lxc = LxcBackend(sb.name, sb.state_dir / "lxc")
    settings = settings_of(sb)
    for args in ([], ["--dry-run"], ["--no-start"]):
        refused = proximity("ct", "create", "web-01", *args, "--sandbox", sb.name, check=False)
        assert refused.returncode == 2 and "run `proximity up` first" in refused.stderr, refused.stderr
    assert lxc.list() == [] and Reservations(settings, Host(settings.netns)).all() == []

    # The intent is up, but the bridge is gone (and no service heals it): refused too.
    proximity("up", "--sandbox", sb.name)
    sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])
    refused = proximity("ct", "create", "web-01", "--sandbox", sb.name, check=False)
    assert refused.returncode == 2 and "prox-net does not exist" in refused.stderr, refused.stderr
    assert lxc.list() == [] and Reservations(settings, Host(settings.netns)).all() == []


@needs_lxc
def test_migrate_before_up_refuses_before_it_touches_the_container(sb):
    from proximity.containers.base import ContainerSpec

    lxc = LxcBackend(sb.name, sb.state_dir / "lxc")
    old = lxc.create(ContainerSpec("legacy-09", "name=eth0,bridge=vmbr0,ip=198.51.100.69/24,gw=198.51.100.1"))
    lxc.start(old.vmid)
    for args in (["--dry-run"], []):
        refused = proximity("migrate", str(old.vmid), *args, "--sandbox", sb.name, check=False)
        assert refused.returncode == 2 and "run `proximity up` first" in refused.stderr, refused.stderr
    assert lxc.get_net0(old.vmid).startswith("name=eth0,bridge=vmbr0") and lxc.status(old.vmid).state == "running"


def test_ct_create_before_up_makes_no_proxmox_call(sb):
    from proximity.containers.factory import backend_for
    from proximity.containers.manager import ContainerManager
    from proximity.errors import ConflictError
    from tests.integration.lxc_realizer import LxcRealizer
    from tests.pve_double.server import PveDouble

    token = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000002")
    with PveDouble(LxcRealizer(LxcBackend(sb.name, sb.state_dir / "lxc")), node="pve", token=token,
                   tls=True) as double:
        settings = settings_of(sb, backend="proxmox", proxmox_host="127.0.0.1", proxmox_port=double.port,
                               proxmox_node="pve", proxmox_token_id=token[0], proxmox_token_secret=token[1],
                               proxmox_ca_file=double.ca_file, proxmox_template="local:vztmpl/busybox-proximity.tar.gz")
        manager = ContainerManager(NetworkManager(settings), backend_for(settings))
        with pytest.raises(ConflictError, match="run `proximity up` first"):
            manager.create("web-02")
        assert not [r for r in double.requests if r["method"] != "GET"], double.requests  # no create, no destroy
        assert LxcBackend(sb.name, sb.state_dir / "lxc").list() == []


# Every command that changes the host, in a form that plans only (so a regression cannot change this machine).
HOST_CHANGING = [["up", "--dry-run"], ["down", "--dry-run"], ["down", "--dry-run", "--force"],
                 ["ct", "create", "web-01", "--dry-run"], ["ct", "start", "web-01", "--dry-run"],
                 ["ct", "stop", "web-01", "--dry-run"], ["ct", "destroy", "web-01", "--dry-run"],
                 ["migrate", "100", "--dry-run"], ["gc", "--dry-run"], ["serve", "--install-unit", "--dry-run"],
                 ["token", "rotate", "--dry-run"]]


def plain_env(tmp_path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROXIMITY_")}
    config = tmp_path / "proximity.toml"
    config.write_text(f'dnsmasq_conf = "{tmp_path}/etc/dnsmasq.conf"\nstate_dir = "{tmp_path}/state"\n')
    return {**env, "PROXIMITY_CONFIG": str(config), "PROXIMITY_PVE_DIR": str(tmp_path / "no-pve"), **extra}


def run_plain(env, *args):
    return subprocess.run([*PROXIMITY, *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_command_on_the_wrong_host_is_refused_before_anything_is_planned(tmp_path):
    env = plain_env(tmp_path)
    for args in HOST_CHANGING:
        result = run_plain(env, *args)
        assert result.returncode == 2, (args, result)
        assert result.stdout == "", (args, result.stdout)  # nothing planned
        message = " ".join(result.stderr.split())
        assert "is not a Proxmox VE host" in message and "--sandbox NAME" in message, message
        assert f'target_host = "{socket.gethostname()}"' in message and "Traceback" not in result.stderr
    # A target_host that names another machine is refused, naming both.
    result = run_plain({**env, "PROXIMITY_TARGET_HOST": "pve-elsewhere"}, "up", "--dry-run")
    assert result.returncode == 2 and result.stdout == "" and "'pve-elsewhere'" in result.stderr
    # Read-only commands are not refused.
    assert "usage" not in run_plain(env, "status", "--help").stderr.lower()
    assert not (tmp_path / "state").exists() and not (tmp_path / "etc").exists()


@pytest.mark.parametrize("how", ["target_host", "pve_dir"])
def test_a_target_host_may_be_changed(tmp_path, how):
    (tmp_path / "pve").mkdir()
    extra = {"PROXIMITY_TARGET_HOST": socket.gethostname()} if how == "target_host" else {
        "PROXIMITY_PVE_DIR": str(tmp_path / "pve")}
    result = run_plain(plain_env(tmp_path, **extra), "token", "rotate", "--dry-run")
    assert result.returncode == 0 and "Dry run: would write a new token" in result.stdout, result
