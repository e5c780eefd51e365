"""/metrics for real: a sandbox host with Proximity up, a real LXC container, real traffic to it."""

from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from proximity import sandbox as sandboxes
from proximity.api.app import Context, create_app
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.tools import proximity

REQUESTS = 20
COUNTERS = ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets")


@pytest.fixture(scope="module")
def service(sandbox):
    proximity("up", "--sandbox", sandbox.name)
    settings = load_settings(**sandbox.settings_overrides())
    backend = LxcBackend(sandbox.name, sandbox.state_dir / "lxc")
    manager = ContainerManager(NetworkManager(settings), backend)
    context = Context(settings, containers=manager)
    try:
        with TestClient(create_app(context, start_background=False)) as client:
            client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
            yield sandbox, context, client
    finally:
        for container in backend.list():
            manager.destroy(str(container.vmid))
        proximity("down", "--purge", "--sandbox", sandbox.name, check=False)


def scrape(client: TestClient) -> dict[str, dict]:
    """Families by name, from the real exposition text (which must parse)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def counter(families: dict, key: str, vmid: int) -> tuple[float, dict]:
    family = families[f"proximity_container_{key}"]
    assert family.type == "counter"
    samples = [s for s in family.samples if s.name.endswith("_total") and s.labels["vmid"] == str(vmid)]
    assert len(samples) == 1, family.samples
    return samples[0].value, samples[0].labels


def fetch(ns: str, url: str) -> subprocess.CompletedProcess:
    """busybox wget from a client namespace (no -T: Debian's busybox 1.35 wget crashes with it)."""
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "wget", "-q", "-O", "-", url],
                          check=False, capture_output=True, text=True, timeout=15)


def test_metrics_count_a_containers_traffic(service):
    sb, context, client = service
    families = scrape(client)
    for name in ("proximity_pool_size", "proximity_leases_in_use", "proximity_leases_free", "proximity_dnsmasq_up",
                 "proximity_healthy", "proximity_last_converge_success", "proximity_last_converge_timestamp_seconds"):
        assert families[name].type == "gauge" and families[name].documentation, name
    assert families["proximity_pool_size"].samples[0].value == context.settings.pool_size
    assert families["proximity_dnsmasq_up"].samples[0].value == 1
    assert families["proximity_healthy"].samples[0].value == 1

    web = context.containers.create("web-01")
    peer = sandboxes.attach_client(sb, "peer")
    try:
        url = f"http://{web.ip}/"
        body = f"hello from {web.hostname}\n"
        assert wait_for(lambda: fetch(peer.ns, url).stdout == body, timeout=30), "the container's web server"

        before = scrape(client)
        assert before["proximity_container_traffic_up"].samples[0].value == 1
        values = {key: counter(before, key, web.vmid)[0] for key in COUNTERS}
        _, labels = counter(before, "receive_bytes", web.vmid)
        assert labels == {"zone": "prox-net", "vmid": str(web.vmid), "hostname": "web-01", "ip": web.ip, "interface": f"veth{web.vmid}i0"}
        assert wait_for(lambda: context.status.get().leases_in_use >= 2, timeout=5)  # web-01 and the peer
        assert scrape(client)["proximity_leases_in_use"].samples[0].value >= 2

        for _ in range(REQUESTS):
            result = fetch(peer.ns, url)
            assert result.returncode == 0 and result.stdout == body, result.stderr

        after = scrape(client)
        grown = {key: counter(after, key, web.vmid)[0] - values[key] for key in COUNTERS}
        # The container sent every response (its transmit) and received every request (its receive).
        assert grown["transmit_bytes"] >= REQUESTS * len(body), grown
        assert grown["receive_bytes"] >= REQUESTS * len("GET / HTTP/1.1\r\n"), grown
        # A TCP exchange is at least SYN, request and FIN one way, SYN-ACK, response and FIN the other.
        assert grown["receive_packets"] >= 3 * REQUESTS and grown["transmit_packets"] >= 3 * REQUESTS, grown
    finally:
        sandboxes.detach_client(sb, "peer")
