"""The HTTP API against a sandbox host with the lxc backend, in-process (FastAPI's TestClient)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from fastapi.testclient import TestClient

from proximity import sandbox as sandboxes
from proximity.api.app import Context, create_app
from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend
from proximity.host import Host, wait_for
from proximity.network import intent as intents
from proximity.settings import load_settings
from tests.integration.tools import proximity, resolve

SEED_KEYS = {"bridge_name", "bridge_ip", "subnet", "dhcp_range", "dns_domain", "bridge_up", "nat_configured",
             "dhcp_service_running", "health_status"}


@pytest.fixture(scope="module")
def api(sandbox):
    """The service as `proximity serve` builds it, after `proximity up` (it heals only what `up` set up)."""
    proximity("up", "--sandbox", sandbox.name)
    context = Context(load_settings(**sandbox.settings_overrides()), retry_every=1)
    with TestClient(create_app(context)) as client:
        client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
        assert wait_for(lambda: context.last_converge["ok"], timeout=60), context.last_converge
        yield client, context
        backend = LxcBackend(sandbox.name, sandbox.state_dir / "lxc")
        for container in backend.list():
            context.containers.destroy(str(container.vmid))
    proximity("down", "--purge", "--sandbox", sandbox.name, check=False)


def follow(client, job: dict, timeout: float = 90) -> dict:
    """Follow a job through its server-sent events to the end, then read it."""
    events = []
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if events and events[-1] == "done" and line.startswith("data: "):
                break
    assert events[0] == "queued" and events[-1] == "done", events
    return client.get(f"/api/v1/jobs/{job['id']}").json()["data"]


def test_status_has_the_seed_shape_and_needs_a_token(api):
    client, context = api
    body = client.get("/api/v1/system/network/status").json()
    assert body["message"] == "Network infrastructure operational"
    assert SEED_KEYS <= set(body["data"]) and body["data"]["health_status"] == "healthy"
    assert body["data"]["bridge_name"] == "prox-net" and body["data"]["dhcp_range"] == "10.10.0.100-10.10.0.250"
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        assert client.get("/api/v1/system/network/status", headers=headers).status_code == 401
        assert client.post("/api/v1/containers", json={"hostname": "sneaky"}, headers=headers).status_code == 401
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert not any(c.hostname == "sneaky" for c in context.containers.list())
    token_mode = os.stat(context.settings.api_token_file).st_mode & 0o777
    assert token_mode == 0o600


def test_status_fast_lane_answers_exactly_what_the_route_does(api):
    client, context = api
    fast = client.get("/api/v1/system/network/status")  # answered by the Door's fast lane
    routed = client.get("/api/v1/system/network/status?via=fastapi")  # a query string: FastAPI's route
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content == context.status_json()
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    before = context.status_json()
    context.last_converge = {**context.last_converge, "ok": False, "error": "test: uplink vanished"}
    try:  # a new converge result is a new body, in both lanes
        for path in ("/api/v1/system/network/status", "/api/v1/system/network/status?via=fastapi"):
            data = client.get(path).json()["data"]
            assert data["health_status"] == "unhealthy" and "test: uplink vanished" in data["reasons"][0]
    finally:
        context.last_converge = {**context.last_converge, "ok": True, "error": None}
    assert client.get("/api/v1/system/network/status").json() == json.loads(before)


def test_bad_input_names_the_field(api):
    client, _ = api
    bad = client.post("/api/v1/containers", json={"hostname": "bad_name!"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "hostname"
    assert client.post("/api/v1/containers", json={"hostname": "ok", "memory": 1}).status_code == 422
    assert client.get("/api/v1/containers/nope").status_code == 404
    assert client.get("/api/v1/jobs/nope").status_code == 404


@pytest.mark.parametrize(("hostname", "reason"), [
    ("101", "all digits"), ("localhost", "reserved"), ("WPAD", "reserved"), ("app\n", "RFC 1123"),
    ("_gateway", "RFC 1123"), ("web.example.com", "no dots"),
])
def test_bad_hostnames_are_refused_by_the_one_check(api, hostname, reason):
    client, context = api
    reservations = context.containers.reservations.all()
    refused = client.post("/api/v1/containers", json={"hostname": hostname})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["body", "hostname"] and reason in detail["msg"]
    assert context.containers.reservations.all() == reservations
    assert not any(c.hostname == hostname for c in context.containers.list())


def test_errors_get_their_status_and_message_from_one_place(api):
    """One handler maps every ProximityError through proximity.errors.http_status, message kept."""
    from proximity.errors import ConflictError, HostError, InputError, NotFoundError, ProxmoxError

    client, context = api
    app = create_app(context, start_background=False)
    kinds = {"input": (InputError, 400), "missing": (NotFoundError, 404), "conflict": (ConflictError, 409),
             "host": (HostError, 500), "proxmox": (ProxmoxError, 502)}

    @app.get("/api/v1/test-raise/{kind}")
    def raise_it(kind: str) -> None:
        raise kinds[kind][0](f"{kind} went wrong: the fix")

    test_client = TestClient(app)  # no lifespan: the module's service stays the one running
    for kind, (_cls, status) in kinds.items():
        response = test_client.get(f"/api/v1/test-raise/{kind}", headers={"Authorization": client.headers["Authorization"]})
        assert response.status_code == status and response.json() == {"detail": f"{kind} went wrong: the fix"}


def test_create_through_the_api_and_follow_its_job(api, sandbox):
    client, context = api
    accepted = client.post("/api/v1/containers", json={"hostname": "api-01"})
    assert accepted.status_code == 202
    job = follow(client, accepted.json()["job"])
    assert job["status"] == "succeeded" and job["progress"] == 100, job
    assert any("api-01.prox.local" in step["text"] for step in job["steps"])
    info = job["result"]
    assert wait_for(lambda: any(lease["hostname"] == "api-01" and lease["ip"] == info["ip"] for lease in
                                client.get("/api/v1/system/network/leases").json()["data"]), timeout=20)
    peer = sandboxes.attach_client(sandbox, "apipeer")
    try:
        assert resolve(peer.ns, "api-01.prox.local", "10.10.0.1") == [info["ip"]]
    finally:
        sandboxes.detach_client(sandbox, "apipeer")
    listed = client.get("/api/v1/containers").json()["data"]
    assert any(c["hostname"] == "api-01" and c["state"] == "running" for c in listed)
    assert client.get("/api/v1/containers/api-01").json()["data"]["ip"] == info["ip"]
    duplicate = client.post("/api/v1/containers", json={"hostname": "api-01"})
    assert duplicate.status_code == 409 and "already" in duplicate.json()["detail"]
    # DNS is case-insensitive, and so is admission: API-01 is api-01.
    reservations = context.containers.reservations.all()
    duplicate = client.post("/api/v1/containers", json={"hostname": "API-01"})
    assert duplicate.status_code == 409 and "already" in duplicate.json()["detail"]
    refused = proximity("ct", "create", "Api-01", "--sandbox", sandbox.name, check=False)
    assert refused.returncode == 2 and "already" in refused.stderr and "Traceback" not in refused.stderr
    assert context.containers.reservations.all() == reservations
    assert client.post("/api/v1/containers/api-01/stop").json()["data"]["state"] == "stopped"
    assert client.post("/api/v1/containers/api-01/start").json()["data"]["state"] == "running"
    assert client.delete("/api/v1/containers/api-01").json()["data"]["destroyed"] is True


def test_migrate_through_the_api(api, sandbox):
    client, context = api
    backend = context.containers.backend
    legacy = backend.create(ContainerSpec("legacy-api", "name=eth0,bridge=vmbr0,ip=198.51.100.70/24,gw=198.51.100.1"))
    backend.start(legacy.vmid)
    plan = client.post(f"/api/v1/containers/{legacy.vmid}/migrate", json={"dry_run": True})
    assert plan.status_code == 200 and plan.json()["data"]["dry_run"] is True
    accepted = client.post(f"/api/v1/containers/{legacy.vmid}/migrate", json={"timeout": 30})
    assert accepted.status_code == 202
    job = follow(client, accepted.json()["job"])
    assert job["status"] == "succeeded", job
    assert job["result"]["dns_name"] == "legacy-api.prox.local"
    assert "bridge=prox-net" in backend.get_net0(legacy.vmid)


def test_killed_dnsmasq_turns_unhealthy_and_converge_heals(api):
    client, context = api
    pid = context.network.dns.running_pid()
    os.kill(pid, signal.SIGKILL)

    def health() -> dict:
        return client.get("/api/v1/system/network/status").json()

    assert wait_for(lambda: health()["data"]["health_status"] != "healthy", timeout=15)
    body = health()
    assert body["data"]["health_status"] == "unhealthy" and not body["data"]["dhcp_service_running"]
    assert "dnsmasq" in body["message"] and any("dnsmasq" in r for r in body["data"]["reasons"])
    accepted = client.post("/api/v1/system/network/initialize", json={})
    assert accepted.status_code == 202
    assert follow(client, accepted.json()["job"])["status"] == "succeeded"
    assert wait_for(lambda: health()["data"]["health_status"] == "healthy", timeout=15), health()
    plan = client.post("/api/v1/system/network/initialize", json={"dry_run": True})
    assert plan.status_code == 200 and plan.json()["data"]["files"] == []


def test_rotated_token_takes_effect_at_once(api):
    client, context = api
    old = client.headers["Authorization"]
    new = proximity("token", "rotate", "--sandbox", context.settings.netns).stdout.strip()
    try:
        assert client.get("/api/v1/system/network/status", headers={"Authorization": old}).status_code == 401
        assert client.get("/api/v1/system/network/status",
                          headers={"Authorization": f"Bearer {new}"}).status_code == 200
    finally:
        client.headers["Authorization"] = f"Bearer {new}"


def test_service_starts_when_the_network_cannot_be_set_up(sandbox):
    """A converge that fails leaves the service up, unhealthy with the reason, and retrying."""
    settings = load_settings(**sandbox.settings_overrides(), uplink="nope0")
    host, before = Host(settings.netns), intents.intent_file(settings).read_text() \
        if intents.intent_file(settings).exists() else None
    intents.record(host, settings, intents.UP)  # `up --uplink nope0` was asked for
    context = Context(settings, retry_every=0.2)
    try:
        with TestClient(create_app(context)) as client:
            client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
            assert wait_for(lambda: context.last_converge["ok"] is False, timeout=30)
            first = context.last_converge["time"]
            assert client.get("/healthz").status_code == 200
            body = client.get("/api/v1/system/network/status").json()
            assert body["data"]["health_status"] == "unhealthy"
            assert "converge failed" in body["message"] and "nope0" in body["message"]
            assert wait_for(lambda: context.last_converge["time"] != first, timeout=10)  # it keeps retrying
    finally:
        intents.restore(host, settings, before)  # the module's service heals toward its own settings again


def test_cli_follows_a_job_of_the_running_service(api, sandbox):
    import subprocess
    import sys

    port = 18000 + os.getpid() % 1000
    pid_file = sandbox.run_dir / "test-api.pid"
    server = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--sandbox", sandbox.name,
                               "--port", str(port), "--pid-file", str(pid_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, timeout=30)
        url = f"http://127.0.0.1:{port}"
        result = proximity("ct", "create", "cli-01", "--sandbox", sandbox.name, "--api", url)
        assert "reserving an address for cli-01" in result.stderr  # the progress, step by step
        assert "cli-01.prox.local" in result.stdout
        refused = proximity("ct", "create", "cli-01", "--sandbox", sandbox.name, "--api", url, check=False)
        assert refused.returncode == 2 and "409" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        proximity("ct", "destroy", "cli-01", "--force", "--sandbox", sandbox.name)
    finally:
        server.terminate()
        server.wait(timeout=30)
