"""Zones through the HTTP API, against a real sandbox with prox-net and two zones made by the API's own
jobs: list and status, create, peer, unpeer and delete as jobs (dry runs change nothing), bad input as
400 naming the field, the service's heal keeping a zone made behind its back, and /metrics with a
``zone`` label for every zone (a zone down on purpose alerts nothing)."""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from proximity import sandbox as sandboxes
from proximity.api.app import Context, create_app
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from proximity.zones_file import read_zones_file, render_zones_file
from tests.integration.test_api import follow
from tests.integration.tools import nft_table, proximity

WEB_NET = "10.20.0.0/24"


@pytest.fixture(scope="module")
def api(sandbox):
    """The service (heal loop on) after `proximity up`; zones web and db made through the API."""
    proximity("up", "--sandbox", sandbox.name)
    context = Context(load_settings(**sandbox.settings_overrides()), retry_every=1, reconcile_every=1)
    try:
        with TestClient(create_app(context)) as client:
            client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
            assert wait_for(lambda: context.last_converge["ok"], timeout=60), context.last_converge
            for body in ({"name": "web", "subnet": WEB_NET, "ipv6": "off"}, {"name": "db", "ipv6": "off"}):
                answer = client.post("/api/v1/zones", json=body)
                assert answer.status_code == 202, answer.text
                job = follow(client, answer.json()["job"])
                assert job["status"] == "succeeded", job
            yield sandbox, client, context
    finally:
        for zone in ("web", "db", "tmp"):
            proximity("zone", "delete", zone, "--force", "--sandbox", sandbox.name, check=False)
        proximity("down", "--purge", "--force", "--sandbox", sandbox.name, check=False)


def rows(client) -> dict[str, dict]:
    answer = client.get("/api/v1/zones")
    assert answer.status_code == 200, answer.text
    return {row["name"]: row for row in answer.json()["data"]}


def cli_zones(sb) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout)}


def test_every_zone_is_listed_as_zone_list_shows_it(api):
    sb, client, _ = api
    found = rows(client)
    assert list(found) == ["prox-net", "web", "db"], found
    assert all(row["health"] == "healthy" for row in found.values()), found
    assert found["web"]["subnets"] == [WEB_NET] and found["web"]["bridge"] == "pz-web"
    assert found["prox-net"]["default"] and found["prox-net"]["subnets"] == ["10.10.0.0/24"]
    cli = cli_zones(sb)
    for name, row in found.items():  # the same rows as the CLI's (health and leases aside: read apart)
        same = {k: v for k, v in row.items() if k not in ("health", "reasons", "leases_in_use")}
        assert same == {k: v for k, v in cli[name].items() if k in same}, name


def test_zone_status_has_the_status_routes_shape(api):
    _, client, _ = api
    default = client.get("/api/v1/system/network/status")
    assert client.get("/api/v1/zones/prox-net/status").content == default.content  # the very body
    web = client.get("/api/v1/zones/web/status")
    assert web.status_code == 200, web.text
    body = web.json()
    assert set(body) == {"message", "data"} and set(body["data"]) == set(default.json()["data"])
    assert body["message"] == "Network infrastructure operational"
    assert body["data"]["bridge_name"] == "pz-web" and body["data"]["subnet"] == WEB_NET
    missing = client.get("/api/v1/zones/nope/status")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"], missing.text
    assert client.get("/api/v1/zones/web/status", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize("body, field, status", [
    ({"name": "bad", "subnet": WEB_NET}, "zone web's subnet", 400),  # an overlap names both sides
    ({"name": "bad", "subnet": "not-a-subnet"}, "subnet", 400),
    ({"name": "bad", "subnet": "10.30.0.0/24", "dhcp_range": "10.31.0.5-10.31.0.9"}, "dhcp_range", 400),
    ({"name": "bad", "ipv6": "sometimes"}, "ipv6", 400),
    ({"name": "bad", "domain": "-x-"}, "domain", 400),
    ({"name": "web"}, "web", 409),
    ({"name": "prox-net"}, "prox-net", 409),
    ({"name": "Bad_Name"}, "zone name", 400),
    ({"name": "web", "subnet": 24}, "subnet", 422),  # not a string: the schema's own check, as for every body
])
def test_bad_input_is_refused_at_once_naming_the_field(api, body, field, status):
    _, client, context = api
    before = context.settings.zones_file.read_text()
    answer = client.post("/api/v1/zones", json=body)
    assert answer.status_code == status, answer.text
    assert field in json.dumps(answer.json()["detail"]), answer.text
    assert context.settings.zones_file.read_text() == before


def test_dry_runs_change_nothing(api):
    sb, client, context = api
    before = context.settings.zones_file.read_text()
    created = client.post("/api/v1/zones", json={"name": "tmp", "ipv6": "off", "dry_run": True})
    assert created.status_code == 200 and created.json()["data"]["dry_run"], created.text
    assert created.json()["data"]["actions"], created.json()
    deleted = client.delete("/api/v1/zones/web", params={"dry_run": True})
    assert deleted.status_code == 200 and deleted.json()["data"]["actions"], deleted.text
    peered = client.post("/api/v1/zones/web/peers/db", json={"dry_run": True})
    assert peered.status_code == 200, peered.text
    assert context.settings.zones_file.read_text() == before and set(rows(client)) == {"prox-net", "web", "db"}
    assert '"pz-tmp"' not in sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout


def test_peer_and_unpeer_are_jobs(api):
    sb, client, _ = api
    job = follow(client, client.post("/api/v1/zones/web/peers/db").json()["job"])
    assert job["status"] == "succeeded" and job["kind"] == "zone peer", job
    assert ["db", "web"] in [sorted(p) for p in _peers(sb)]
    job = follow(client, client.delete("/api/v1/zones/web/peers/db").json()["job"])
    assert job["status"] == "succeeded", job
    assert _peers(sb) == []
    assert client.post("/api/v1/zones/web/peers/nope").status_code == 404
    assert client.post("/api/v1/zones/web/peers/web").status_code == 409


def _peers(sb) -> list[list[str]]:
    import tomllib

    return tomllib.loads((sb.dnsmasq_conf.parent / "zones.toml").read_text()).get("peers", [])


def test_the_heal_keeps_a_zone_the_cli_made_behind_its_back(api):
    """The service follows zones.toml: its heal must not render the table without the new zone."""
    sb, client, context = api
    proximity("zone", "create", "tmp", "--ipv6", "off", "--sandbox", sb.name)
    heals = context.last_converge["time"]
    assert wait_for(lambda: (context.last_converge["time"] or 0) > heals and context.last_converge["ok"], timeout=30)
    assert "tmp" in rows(client) and "pz-tmp" in nft_table(sb.name)
    assert cli_zones(sb)["tmp"]["health"] == "healthy"
    job = follow(client, client.delete("/api/v1/zones/tmp").json()["job"])
    assert job["status"] == "succeeded", job
    assert "tmp" not in rows(client) and "pz-tmp" not in nft_table(sb.name)
    assert "tmp" not in cli_zones(sb)


def heal_waits_for_the_lock() -> bool:
    """The service's heal is blocked on the host lock (its thread's stack, read as it is now)."""
    thread = next((t for t in threading.enumerate() if t.name == "proximity-reconcile"), None)
    frame = sys._current_frames().get(thread.ident) if thread else None
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return {"heal", "lock"} <= names


def test_a_heal_queued_behind_a_zone_create_builds_the_new_zone(api):
    """The heal reads zones.toml again under the host lock: one that waited while `zone create` held it
    (having read the settings before) builds the new zone rather than converging without it."""
    sb, client, context = api
    settings, heal, reports = context.settings, context.heal, []
    context.heal = lambda: reports.append(heal()) or reports[-1]  # every heal's own report, in order
    try:
        with context.network.host.lock(settings.lock_file, what="the test"):  # as `zone create` holds it
            context.wake()
            assert wait_for(heal_waits_for_the_lock, timeout=30), "the heal never queued behind the lock"
            queued = len(reports)  # the index of the queued heal's report
            data = read_zones_file(settings.zones_file)  # what `zone create late` writes first
            tables = {**data.get("zones", {}), "late": {"subnet": "10.30.0.0/24", "ipv6": "off"}}
            settings.zones_file.write_text(render_zones_file(tables, data.get("peers", []), data.get("ipv6")))
        assert wait_for(lambda: len(reports) > queued, timeout=60)
    finally:
        context.heal = heal
    assert any("pz-late" in action for action in reports[queued]["actions"]), reports[queued]
    assert "pz-late" in nft_table(sb.name)
    job = follow(client, client.delete("/api/v1/zones/late").json()["job"])
    assert job["status"] == "succeeded", job
    assert "pz-late" not in nft_table(sb.name)


def test_delete_is_refused_while_in_use_then_deletes_with_force(api):
    sb, client, _ = api
    job = follow(client, client.post("/api/v1/zones", json={"name": "tmp", "ipv6": "off"}).json()["job"])
    assert job["status"] == "succeeded", job
    manager = NetworkManager(sb.settings())
    view = next(v for v in manager.zones(manager.observe())[0].views() if v.zone == "tmp")
    Reservations(view, manager.host).reserve("app-1", [])
    refused = client.delete("/api/v1/zones/tmp")  # refused in the request, not as a failed job
    assert refused.status_code == 409 and "app-1" in refused.json()["detail"], refused.text
    assert "pz-tmp" in nft_table(sb.name)
    job = follow(client, client.delete("/api/v1/zones/tmp", params={"force": True}).json()["job"])
    assert job["status"] == "succeeded", job
    assert any("app-1" in step["text"] for step in job["steps"]), job["steps"]  # the --force warning
    assert "tmp" not in rows(client) and "pz-tmp" not in nft_table(sb.name)
    assert client.delete("/api/v1/zones/tmp").status_code == 404
    assert client.delete("/api/v1/zones/prox-net").status_code == 409


def scrape(client) -> dict:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def by_zone(family, **labels) -> dict[str, float]:
    return {s.labels["zone"]: s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())}


def test_metrics_have_a_zone_label_for_every_zone(api):
    sb, client, context = api
    families = scrape(client)
    zones = {"prox-net", "web", "db"}
    for name in ("proximity_pool_size", "proximity_leases_in_use", "proximity_leases_free", "proximity_dnsmasq_up",
                 "proximity_healthy", "proximity_network_up_requested", "proximity_container_traffic_up"):
        assert set(by_zone(families[name])) == zones, (name, families[name].samples)
    assert by_zone(families["proximity_pool_size"])["web"] == rows(client)["web"]["pool_size"]
    assert set(by_zone(families["proximity_healthy"]).values()) == {1}
    assert set(by_zone(families["proximity_dnsmasq_up"]).values()) == {1}
    assert by_zone(families["proximity_network_state"], state="healthy") == dict.fromkeys(zones, 1)
    assert families["proximity_last_converge_success"].samples[0].labels == {}  # the host's, not a zone's
    # a client in web: its lease counts in web only
    before = by_zone(families["proximity_leases_in_use"])
    web1 = sandboxes.attach_client(sb, "web-1", bridge="pz-web")
    try:
        context.zones.invalidate()
        after = by_zone(scrape(client)["proximity_leases_in_use"])
        assert after["web"] == before["web"] + 1 and after["db"] == before["db"], (before, after)
    finally:
        sandboxes.detach_client(sb, web1.hostname)


def test_a_zone_down_on_purpose_alerts_nothing_and_status_exits_by_the_worst_zone(api):
    sb, client, context = api
    proximity("down", "--zone", "db", "--sandbox", sb.name)
    try:
        context.zones.invalidate()
        families = scrape(client)
        assert by_zone(families["proximity_network_state"], state="down") == {"prox-net": 0, "web": 0, "db": 1}
        assert by_zone(families["proximity_healthy"])["db"] == 1  # an alert on < 1 stays quiet
        assert by_zone(families["proximity_network_up_requested"])["db"] == 0
        status = proximity("status", "--json", "--sandbox", sb.name, check=False)
        assert status.returncode == 0, status.stdout  # db down as asked, the rest healthy
        data = json.loads(status.stdout)
        assert data["bridge_name"] == "prox-net" and [z["name"] for z in data["zones"]] == ["prox-net", "web", "db"]
        assert data["zones"][2]["health"] == "down"
        text = proximity("status", "--sandbox", sb.name, check=False).stdout
        assert "zone web  pz-web  10.20.0.0/24  healthy" in text and "zone db" in text, text
    finally:
        proximity("up", "--sandbox", sb.name)
    context.zones.invalidate()
    assert by_zone(scrape(client)["proximity_network_state"], state="healthy")["db"] == 1


def test_status_through_the_running_service_shows_every_zone(api):
    """`proximity status --api URL`: the default zone's status as ever, every zone from GET /api/v1/zones."""
    import subprocess

    import httpx

    sb, _, _ = api
    port = 19000 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--sandbox", sb.name, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(answering, timeout=30)
        result = proximity("status", "--json", "--sandbox", sb.name, "--api", url, check=False)
        assert result.returncode == 0, (result.stdout, result.stderr)
        data = json.loads(result.stdout)
        assert data["bridge_name"] == "prox-net" and [z["name"] for z in data["zones"]] == ["prox-net", "web", "db"]
        text = proximity("status", "--sandbox", sb.name, "--api", url).stdout
        assert "zone db  pz-db" in text and "healthy" in text, text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_damaged_zones_state_leaves_the_default_zone_readable(api):
    """status shows prox-net and exits 1 naming the file; /metrics still answers for prox-net."""
    from proximity.spec.state import state_file

    sb, client, context = api
    path = state_file(context.settings)
    original = path.read_bytes()
    path.write_bytes(b"{not json")
    try:
        context.zones.invalidate()
        result = proximity("status", "--json", "--sandbox", sb.name, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (result.stdout, result.stderr)
        assert str(path) in result.stderr and json.loads(result.stdout)["bridge_name"] == "prox-net"
        families = scrape(client)
        assert by_zone(families["proximity_pool_size"]) == {"prox-net": context.settings.pool_size}
        answer = client.get("/api/v1/zones")
        assert str(path) in answer.json()["detail"], answer.text  # a damaged host file: named, with its fix
    finally:
        path.write_bytes(original)
    context.zones.invalidate()
    assert set(by_zone(scrape(client)["proximity_pool_size"])) == {"prox-net", "web", "db"}


def test_a_zone_s_leases_through_the_api(api):
    sb, client, context = api
    assert client.get("/api/v1/zones/nosuch/leases").status_code == 404
    web1 = sandboxes.attach_client(sb, "web-2", bridge="pz-web")
    try:
        answer = client.get("/api/v1/zones/web/leases")
        assert answer.status_code == 200, answer.text
        assert [lease["ip"] for lease in answer.json()["data"] if lease["hostname"] == "web-2"] == [web1.ip]
        db = client.get("/api/v1/zones/db/leases").json()["data"]
        assert all(lease["hostname"] != "web-2" for lease in db)
        default = client.get("/api/v1/zones/prox-net/leases").json()
        assert default == client.get("/api/v1/system/network/leases").json()
    finally:
        sandboxes.detach_client(sb, web1.hostname)
