"""The status snapshot on a real sandbox host: instant reads, and it follows the host by events."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from fastapi.testclient import TestClient

from proximity import sandbox as sandboxes
from proximity.api.app import Context, create_app
from proximity.api.status import StatusSnapshot
from proximity.host import pid_cmdline, wait_for
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.tools import delete_nft_rule, proximity


@pytest.fixture(scope="module")
def network(sandbox):
    proximity("up", "--sandbox", sandbox.name)
    yield sandbox, load_settings(**sandbox.settings_overrides())
    proximity("down", "--purge", "--sandbox", sandbox.name, check=False)


@pytest.fixture
def snapshot(network):
    _sb, settings = network
    snap = StatusSnapshot(NetworkManager(settings), full_every=3600, recheck_every=3600)  # events, invalidate()
    yield snap
    snap.close()


def kill_dnsmasq(settings, pid: int) -> None:
    cmdline = pid_cmdline(pid) or []
    assert f"--conf-file={settings.dnsmasq_conf}" in cmdline, cmdline  # this sandbox's dnsmasq, nothing else
    os.kill(pid, signal.SIGKILL)


class ProcessSpy:
    """Records every process started (subprocess or fork) and the thread that started it."""

    def __init__(self, monkeypatch):
        self.started: list[tuple[str, object]] = []
        popen_init, fork = subprocess.Popen.__init__, os.fork

        def spy_popen(popen, args, *a, **kw):
            self.started.append((threading.current_thread().name, args))
            return popen_init(popen, args, *a, **kw)

        def spy_fork():
            self.started.append((threading.current_thread().name, "fork"))
            return fork()

        monkeypatch.setattr(subprocess.Popen, "__init__", spy_popen)
        monkeypatch.setattr(os, "fork", spy_fork)

    def outside(self, thread_name: str) -> list:
        return [entry for entry in self.started if entry[0] != thread_name]


def test_the_status_endpoint_starts_no_process_and_answers_at_once(network, monkeypatch):
    _sb, settings = network
    context = Context(settings)
    with TestClient(create_app(context, start_background=False)) as client:
        client.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
        assert client.get("/api/v1/system/network/status").json()["data"]["health_status"] == "healthy"
        spy = ProcessSpy(monkeypatch)
        started = time.perf_counter()
        for _ in range(200):
            response = client.get("/api/v1/system/network/status")
            assert response.status_code == 200
        per_request = (time.perf_counter() - started) / 200
        client.get("/metrics")
    assert spy.outside("proximity-status") == [], spy.started  # only the background thread may probe
    assert per_request < 0.05, per_request
    # and the snapshot itself: a read is a reference, not a probe
    started = time.perf_counter()
    for _ in range(10_000):
        context.status.get()
    assert time.perf_counter() - started < 0.5


def test_a_killed_dnsmasq_shows_at_once_and_a_converge_brings_it_back(network, snapshot):
    _sb, settings = network
    first = snapshot.get()
    assert first.health_status == "healthy" and first.dns_pid
    kill_dnsmasq(settings, first.dns_pid)
    started = time.monotonic()
    assert wait_for(lambda: snapshot.get().health_status == "unhealthy", timeout=2)
    assert time.monotonic() - started < 2
    status = snapshot.get()
    assert not status.dhcp_service_running and status.dns_pid is None
    assert any("dnsmasq" in reason and "not running" in reason for reason in status.reasons), status.reasons

    NetworkManager(settings).up()  # restarts dnsmasq; its new pid file is an event
    assert wait_for(lambda: snapshot.get().health_status == "healthy", timeout=5), snapshot.get().reasons
    assert snapshot.get().dns_pid not in (None, first.dns_pid)
    assert snapshot.get().dns_answering and snapshot.get().dhcp_served  # probed for the new pid


def test_invalidate_returns_with_fresh_data(network, snapshot):
    _sb, settings = network
    pid = snapshot.get().dns_pid
    kill_dnsmasq(settings, pid)
    NetworkManager(settings).up()
    snapshot.invalidate()  # what the service does after a converge: the next read is fresh
    status = snapshot.get()
    assert status.health_status == "healthy" and status.dns_pid not in (None, pid)


def test_netlink_events_update_the_bridge(network, snapshot):
    sb, settings = network
    assert snapshot.get().bridge_up
    refreshes = snapshot.refreshes
    sandboxes.ns_run(sb.name, ["ip", "link", "set", settings.bridge, "down"])
    try:
        assert wait_for(lambda: not snapshot.get().bridge_up, timeout=2)
        assert snapshot.get().health_status == "unhealthy"
        assert any("is down" in reason for reason in snapshot.get().reasons)
    finally:
        sandboxes.ns_run(sb.name, ["ip", "link", "set", settings.bridge, "up"])
    assert wait_for(lambda: snapshot.get().health_status == "healthy", timeout=5), snapshot.get().reasons
    assert snapshot.refreshes["full"] == refreshes["full"]  # events only: no full probe was needed


def test_a_new_lease_is_counted_without_asking(network, snapshot):
    sb, _settings = network
    before = snapshot.get().leases_in_use
    sandboxes.attach_client(sb, "leaser")
    try:
        assert wait_for(lambda: snapshot.get().leases_in_use == before + 1, timeout=2)
    finally:
        sandboxes.detach_client(sb, "leaser")


def test_the_periodic_refresh_sees_a_removed_rule(network):
    sb, settings = network
    snap = StatusSnapshot(NetworkManager(settings), full_every=0.3)
    try:
        assert snap.get().nat_configured
        delete_nft_rule(sb.name, "postrouting", "masquerade")
        assert wait_for(lambda: not snap.get().nat_configured, timeout=3)
        assert snap.get().health_status == "degraded"
        NetworkManager(settings).up()
        assert wait_for(lambda: snap.get().health_status == "healthy", timeout=3)
    finally:
        snap.close()


def test_close_stops_the_thread_and_closes_its_descriptors(network):
    _sb, settings = network
    fds_before = set(os.listdir("/proc/self/fd"))
    snap = StatusSnapshot(NetworkManager(settings))
    assert snap.get().health_status == "healthy"
    thread = snap._thread
    assert thread is not None and thread.is_alive()
    snap.close()
    assert not thread.is_alive()
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    snap.close()  # twice is fine
