"""The final attack on a full disk (issue 14): each kind of write Proximity makes, on a disk filled first.

The sandbox's state directory, run directory and /etc/proximity are small tmpfs mounts of their own
(as in test_data_safety), filled to the last block before each case. Each write is refused with a
message that names the full file system, and the file it would have replaced is intact.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from proximity.errors import HostError
from proximity.host import Host
from proximity.network import intent as intents
from proximity.network.reservations import Reservations
from tests.integration.conftest import unique_name
from tests.integration.tools import proximity, small_disk_sandbox


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    name = unique_name("pk")
    with small_disk_sandbox(name, lambda: tmp_path_factory.mktemp("keep")) as box:
        proximity("up", "--sandbox", name)
        proximity("token", "create", "--sandbox", name)
        yield box


@pytest.fixture
def full(sb):
    """Every mount filled to the last block; emptied again after the case."""
    fillers = [d / "filler" for d in (sb.state_dir, sb.run_dir, sb.dnsmasq_conf.parent)]
    for filler in fillers:
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=16k"], capture_output=True)  # until ENOSPC
    yield
    for filler in fillers:
        filler.unlink(missing_ok=True)


def run(sb, *args):
    result = proximity(*args, "--sandbox", sb.name, check=False)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out[-3000:]
    return result


def named_full(text: str) -> bool:
    return "full" in text or "free" in text or "No space" in text


def test_a_reservation_on_a_full_disk_is_refused_and_the_file_kept(sb, full):
    s = sb.settings()
    before = s.reservations_db.read_bytes() if s.reservations_db.exists() else None
    created = run(sb, "ct", "create", "app-01")
    assert created.returncode != 0 and named_full(created.stderr), created.stderr
    with pytest.raises(HostError, match="free"):
        reservations = Reservations(s, Host(sb.name))
        with reservations.locked():
            reservations.reserve("web-09", [])
    assert (s.reservations_db.read_bytes() if s.reservations_db.exists() else None) == before


def test_down_on_a_full_disk_is_refused_before_anything_changes(sb, full):
    s = sb.settings()
    path = intents.intent_file(s)
    before = path.read_bytes()
    down = run(sb, "down")
    assert down.returncode != 0 and named_full(down.stderr), down.stdout + down.stderr
    assert path.read_bytes() == before
    assert json.loads(run(sb, "status", "--json").stdout)["bridge_up"], "down half-ran: the bridge is gone"


def test_a_probe_on_a_full_disk_keeps_the_last_result(sb, full):
    s = sb.settings()
    before = s.probe_file.read_bytes() if s.probe_file.exists() else None
    status = run(sb, "status")
    assert status.returncode in (0, 1), status.stderr
    assert named_full(status.stdout + status.stderr), status.stdout
    assert (s.probe_file.read_bytes() if s.probe_file.exists() else None) in (before, None) or before is None


def test_a_dnsmasq_restart_on_a_full_run_dir_is_refused_clearly(sb, full):
    s = sb.settings()
    record = s.run_dir / f"{s.service_name}.state"
    before = record.read_bytes()
    (sb.state_dir / "dhcp-hosts").read_bytes()
    subprocess.run(["ip", "netns", "exec", sb.name, "ip", "link", "set", s.bridge, "down"], check=True)
    up = run(sb, "up")  # brings the bridge up again; any write it needs is refused, not half-made
    assert up.returncode in (0, 1), up.stderr
    if up.returncode:
        assert named_full(up.stderr), up.stderr
    assert record.read_bytes() == before or json.loads(record.read_text())


def test_a_backup_on_a_full_disk_is_refused_and_the_interfaces_file_kept(sb, full):
    s = sb.settings()
    before = s.interfaces_file.read_bytes()
    s.interfaces_file.write_bytes(before.replace(b"bridge-fd 0\n\thwaddress", b"bridge-fd 0\n\tmtu 1400\n\thwaddress", 1))
    changed = s.interfaces_file.read_bytes()
    try:
        up = run(sb, "up")
        assert up.returncode != 0 and named_full(up.stderr), up.stdout + up.stderr
        assert s.interfaces_file.read_bytes() == changed
    finally:
        s.interfaces_file.write_bytes(before)


def test_a_token_rotation_on_a_full_disk_keeps_the_old_token(sb, full):
    s = sb.settings()
    before = s.api_token_file.read_bytes()
    rotated = run(sb, "token", "rotate")
    assert rotated.returncode != 0 and named_full(rotated.stderr), rotated.stdout + rotated.stderr
    assert s.api_token_file.read_bytes() == before


def test_after_the_disk_is_freed_up_works(sb):
    up = run(sb, "up")
    assert up.returncode == 0, up.stdout + up.stderr
