"""Output says what happened: gc failures, migrate --dry-run admission (issue 14, item 16)."""

import json
import socket

import pytest
from typer.testing import CliRunner

from proximity.cli import containers as cli_containers
from proximity.cli.common import app
from proximity.containers.base import Container
from proximity.containers.manager import ContainerManager
from proximity.host import Host
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import AdmissionError
from proximity.settings import load_settings


class Backend:
    """Just enough of a container backend: a fixed list of containers."""

    name = "memory"

    def __init__(self, *containers: Container):
        self.containers = {c.vmid: c for c in containers}

    def list(self):
        return list(self.containers.values())

    def status(self, vmid):
        return self.containers[vmid]

    def can_snapshot(self, vmid):
        return True


@pytest.fixture
def settings(tmp_path):
    return load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run"), leases_file=str(tmp_path / "leases"),
                         interfaces_file=str(tmp_path / "interfaces"))


def manager(settings, *containers):
    return ContainerManager(NetworkManager(settings, host=Host()), Backend(*containers))


def test_migrate_dry_run_refuses_what_the_real_run_refuses(settings, monkeypatch):
    # The network counts as up here: this test is about admission, not about the intent record.
    monkeypatch.setattr(NetworkManager, "require_up", lambda self, view=None: None)
    m = manager(settings, Container(120, "legacy-01", "running", "name=eth0,bridge=vmbr0,ip=dhcp", "memory"))
    m.reservations.reserve("legacy-01", [])  # the name is taken on the bridge already
    with pytest.raises(AdmissionError, match="'legacy-01' is already in use"):
        m.migrate(120, dry_run=True)
    m.reservations.release("legacy-01")
    plan = m.migrate(120, dry_run=True)
    assert any(step.startswith("reserve 10.10.0.") for step in plan.steps) and m.reservations.all() == []


def test_gc_prints_failures_as_failures_and_exits_1(settings, monkeypatch):
    wpad = Container(130, "wpad", "stopped", "name=eth0,bridge=prox-net,ip=dhcp,hwaddr=02:00:00:00:00:30", "memory")
    monkeypatch.setattr(cli_containers, "containers_for", lambda *a, **k: manager(settings, wpad))
    monkeypatch.setenv("PROXIMITY_TARGET_HOST", socket.gethostname())  # every file is in tmp_path
    runner = CliRunner()
    result = runner.invoke(app, ["gc"])
    assert result.exit_code == 1
    assert "✓" not in result.output and "✗ failed: could not reserve" in result.output, result.output
    result = runner.invoke(app, ["gc", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["actions"] == [] and data["failures"][0].startswith("could not reserve")
