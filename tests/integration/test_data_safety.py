"""Nothing is lost or handed out twice, on a real sandbox (issue 14, items 6, 7, 8 and 9).

The sandbox's state directory is a small tmpfs of its own (mounted under the sandbox's root,
unmounted at teardown), so a full disk is real and the machine's own disk is never filled.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from proximity import sandbox as sandboxes
from proximity.errors import HostError
from proximity.host import Host, pid_alive, wait_for
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from tests.integration.conftest import unique_name
from tests.integration.tools import proximity

TMPFS_SIZE = "8m"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    name = unique_name("pd")
    sandboxes.destroy(name)
    box = sandboxes.create(name)
    mounted = False
    try:
        state = box.state_dir
        keep = tmp_path_factory.mktemp("state")
        subprocess.run(["cp", "-a", f"{state}/.", str(keep)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "proximity-test", str(state)],
                       check=True)
        mounted = True
        subprocess.run(["cp", "-a", f"{keep}/.", str(state)], check=True)
        proximity("up", "--sandbox", name)
        yield box
    finally:
        proximity("down", "--purge", "--sandbox", name, check=False)
        for client in sandboxes.clients(box) if box.meta_file.exists() else []:
            sandboxes.detach_client(box, client.hostname)
        if mounted:
            subprocess.run(["umount", "-l", str(box.state_dir)], check=False)
        sandboxes.destroy(name)


def settings_of(box):
    return load_settings(**box.settings_overrides())


def run(box, *args: str):
    result = proximity(*args, "--sandbox", box.name, check=False)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def dns_pid(box) -> int | None:
    text = settings_of(box).dns_pid_file.read_text().strip() if settings_of(box).dns_pid_file.exists() else ""
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


@pytest.fixture
def db(sb):
    """The sandbox's reservations, holding web-01; cleaned up (and the network up again) afterwards."""
    reservations = Reservations(settings_of(sb), Host(sb.name))
    with reservations.locked():
        reservations.reserve("web-01", [])
    yield reservations
    db = reservations.settings.reservations_db
    for path in (db, db.with_name(db.name + ".bak")):
        path.unlink(missing_ok=True)
    reservations.settings.reservations_db.write_text("[]\n")
    run(sb, "up")


@pytest.mark.parametrize("damage", [b"", b"{}", b"[1]", b'{"x": 5}', b"[{\"hostname\": \"web-01\", \"ip"])
def test_a_damaged_reservations_file_stops_every_writer_and_names_the_backup(sb, db, damage):
    s = db.settings
    hosts_before = s.dhcp_hosts_file.read_text()
    assert "web-01" in hosts_before
    with db.locked():
        db.reserve("web-02", [])  # a second write: the first copy becomes the backup
    s.reservations_db.write_bytes(damage)

    up = run(sb, "up")
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"{s.reservations_db} is damaged" in up.stderr and f"`cp {db.backup} {s.reservations_db}`" in up.stderr
    assert f"gc --rebuild --sandbox {sb.name}" in up.stderr
    assert "web-01" in s.dhcp_hosts_file.read_text(), "up emptied dnsmasq's hosts file"
    for args in (("status",), ("doctor",), ("gc",), ("ct", "list"), ("ct", "create", "app-01"), ("gc", "--dry-run")):
        result = run(sb, *args)
        assert result.returncode != 0 and "is damaged" in result.stderr + result.stdout, (args, result.stderr)
    assert s.reservations_db.read_bytes() == damage  # nothing wrote over it

    plan = run(sb, "gc", "--rebuild", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert {r["hostname"] for r in json.loads(plan.stdout)["reservations"]} == {"web-01", "web-02"}
    assert s.reservations_db.read_bytes() == damage
    done = run(sb, "gc", "--rebuild")
    assert done.returncode == 0 and "2 reservation(s) written" in done.stdout, done.stderr
    assert {r.hostname for r in db.all()} == {"web-01", "web-02"}
    assert list(s.state_dir.glob("reservations.json.damaged-*")), "the damaged file was not kept"
    assert run(sb, "up").returncode == 0
    for path in s.state_dir.glob("reservations.json.damaged-*"):
        path.unlink()


def test_a_bad_byte_in_the_leases_file_or_the_daemon_record_heals(sb, db):
    s = db.settings
    client = sandboxes.attach_client(sb, "lease-a")
    try:
        with open(s.leases_file, "ab") as fh:
            fh.write(b"0 02:00:00:00:00:99 10.10.0.250 bad\xffname *\n")
        record = s.run_dir / f"{s.service_name}.state"
        record.write_bytes(record.read_bytes().replace(b'"config": "', b'"config": "\xff'))
        leases = run(sb, "leases", "--json")
        assert leases.returncode == 0 and client.ip in leases.stdout, leases.stderr
        assert "line" in leases.stderr and "skipped malformed lease" in leases.stderr
        for args in (("status",), ("doctor",), ("ct", "create", "app-02", "--dry-run")):
            result = run(sb, *args)
            assert "cannot read" not in result.stderr, (args, result.stderr)
        assert run(sb, "ct", "create", "app-02", "--dry-run").returncode == 0
        up = run(sb, "up")
        assert up.returncode == 0 and "restart dnsmasq" in up.stdout, up.stdout + up.stderr
        assert json.loads(record.read_text())["pid"] == dns_pid(sb)  # the record is repaired
    finally:
        sandboxes.detach_client(sb, "lease-a")


def test_a_full_disk_never_hands_an_address_out_twice(sb, db):
    s = db.settings
    a, b = sandboxes.attach_client(sb, "full-a"), sandboxes.attach_client(sb, "full-b")
    filler = s.state_dir / "filler"
    try:
        assert run(sb, "up").returncode == 0  # records the two leases dnsmasq holds
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC
        before = s.reservations_db.read_text()
        with pytest.raises(HostError, match="KiB free"):  # Proximity's own writes stop short of full
            with db.locked():
                db.reserve("web-03", [])
        assert s.reservations_db.read_text() == before
        status = run(sb, "status")
        assert f"{s.state_dir} is full" in status.stdout + status.stderr, status.stdout
        doctor = run(sb, "doctor", "--json")
        assert any(c["name"] == "disk space" and not c["ok"] for c in json.loads(doctor.stdout)), doctor.stderr

        s.leases_file.write_text("")  # what dnsmasq leaves when it cannot rewrite the file on a full disk
        pid = dns_pid(sb)
        os.kill(pid, signal.SIGKILL)  # ... and then it dies: its leases live only in that file now
        assert wait_for(lambda: not pid_alive(pid), 5)
        up = run(sb, "up")
        assert up.returncode == 1 and re.search(r"lost \d+ lease\(s\) still in use", up.stderr), up.stdout + up.stderr
        assert a.ip in up.stderr and b.ip in up.stderr and "is full" in up.stderr
        assert dns_pid(sb) is None, "dnsmasq was started with a leases file that lost leases in use"

        filler.unlink()
        assert run(sb, "up").returncode == 1  # still lost: dnsmasq's memory of them died with it
        (s.run_dir / f"{s.service_name}.state").unlink()  # the admin's word that those clients are gone
        assert run(sb, "up").returncode == 0 and dns_pid(sb) is not None
    finally:
        filler.unlink(missing_ok=True)
        for name in ("full-a", "full-b"):
            sandboxes.detach_client(sb, name)
