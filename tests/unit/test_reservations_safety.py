"""Nothing is lost or handed out twice: damaged reservations, full disks, damaged caches (issue 14, items 6-9)."""

import json
import os
import time

import pytest

from proximity.containers.base import Container
from proximity.containers.rebuild import rebuild
from proximity.errors import HostError
from proximity.host import Host
from proximity.network.dnsmasq import ServiceError, SupervisedDns
from proximity.network.leases import Lease, parse_leases
from proximity.network.reservations import DamagedReservations, Reservations
from proximity.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run"), leases_file=str(tmp_path / "leases"),
                         dhcp_start="10.10.0.100", dhcp_end="10.10.0.110")


@pytest.fixture
def reservations(settings):
    return Reservations(settings, Host())


DAMAGED = {
    "0 bytes": b"",
    "blank": b"\n  \n",
    "an object": b"{}",
    "an object with a field": b'{"x": 5}',
    "a list of numbers": b"[1]",
    "truncated": b'[{"hostname": "a", "mac": "02:00:00:00:00:01", "ip": "10.10',
    "not UTF-8": b'[{"hostname": "a\xff", "mac": "02:00:00:00:00:01", "ip": "10.10.0.100"}]\n',
    "no mac": b'[{"hostname": "a", "ip": "10.10.0.100"}]',
    "a bad address": b'[{"hostname": "a", "mac": "02:00:00:00:00:01", "ip": "10.10.0.999"}]',
    "a bad vmid": b'[{"hostname": "a", "mac": "02:00:00:00:00:01", "ip": "10.10.0.100", "vmid": "x"}]',
    "a bad intent": b'[{"hostname": "a", "mac": "02:00:00:00:00:01", "ip": "10.10.0.100", "intent": [1]}]',
    "null": b"null",
}


@pytest.mark.parametrize("what", DAMAGED)
def test_a_damaged_file_is_an_error_never_no_reservations(reservations, what):
    db = reservations.settings.reservations_db
    db.write_bytes(DAMAGED[what])
    for call in (reservations.all, lambda: reservations.reserve("web-01", []), reservations.ensure_files):
        with pytest.raises(DamagedReservations) as caught:
            call()
        message = str(caught.value)
        assert str(db) in message and "proximity gc --rebuild" in message and "no good backup exists" in message
    assert db.read_bytes() == DAMAGED[what]  # nothing was written over it
    assert not reservations.settings.dhcp_hosts_file.exists()


def test_an_empty_list_written_by_proximity_is_no_reservations(reservations):
    reservations.reserve("a", [])
    reservations.release("a")
    assert reservations.settings.reservations_db.read_text() == "[]\n" and reservations.all() == []
    reservations.settings.reservations_db.unlink()
    reservations.backup.unlink()
    assert reservations.all() == []  # a host that never had one


def test_every_write_keeps_the_previous_good_copy_and_the_message_names_it(reservations):
    db = reservations.settings.reservations_db
    reservations.reserve("a", [])
    reservations.reserve("b", [])
    assert [r.hostname for r in Reservations(reservations.settings, Host()).all()] == ["a", "b"]
    backup = json.loads(reservations.backup.read_text())
    assert [r["hostname"] for r in backup] == ["a"]
    db.write_text("")  # a truncated write, a careless admin
    with pytest.raises(DamagedReservations) as caught:
        reservations.reserve("c", [])
    assert f"`cp {reservations.backup} {db}`" in str(caught.value) and "(1 reservations)" in str(caught.value)
    os.system(f"cp {reservations.backup} {db}")  # the command the message gives, as the admin runs it
    assert [r.hostname for r in reservations.all()] == ["a"]


def test_a_missing_file_with_a_backup_is_damaged(reservations):
    reservations.reserve("a", [])
    reservations.reserve("b", [])
    reservations.settings.reservations_db.unlink()
    with pytest.raises(DamagedReservations, match="missing, but its backup exists"):
        reservations.all()


def test_the_restore_command_names_the_sandbox(tmp_path):
    settings = load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run"), netns="pn42")
    settings.reservations_db.write_text("{}")
    with pytest.raises(DamagedReservations, match=r"`proximity gc --rebuild --sandbox pn42`"):
        Reservations(settings, Host()).all()


def test_a_damaged_file_is_kept_aside_by_a_rebuild(reservations):
    db = reservations.settings.reservations_db
    db.write_bytes(b"{}")
    rebuilt = rebuild(reservations.settings, "02:00:00:00:00:01,10.10.0.105,web-01\n", None, [], [])
    kept = reservations.replace_all(rebuilt.reservations)
    assert kept and open(kept, "rb").read() == b"{}"
    assert [(r.hostname, r.ip) for r in reservations.all()] == [("web-01", "10.10.0.105")]
    assert reservations.settings.dhcp_hosts_file.read_text() == "02:00:00:00:00:01,10.10.0.105,web-01\n"


def _ct(vmid, hostname, mac, bridge="prox-net"):
    return Container(vmid, hostname, "stopped", f"name=eth0,bridge={bridge},ip=dhcp,hwaddr={mac.upper()}", "lxc")


def test_rebuild_from_the_hosts_files_and_the_containers(settings):
    hosts = ("02:00:00:00:00:01,10.10.0.100,web-01\n"
             "garbage line\n"
             "02:00:00:00:00:02,10.10.0.101,gone-02\n"
             "02:00:00:00:00:03,10.10.0.100,dup-03\n")
    addn = "10.10.0.100 web-01.prox.local web-01\n10.10.0.107 db-04.prox.local db-04\n10.10.0.108 nobody.prox.local nobody\n"
    containers = [_ct(101, "web-01", "02:00:00:00:00:01"), _ct(104, "db-04", "02:00:00:00:00:04"),
                  _ct(105, "cache-05.example.com", "02:00:00:00:00:05"),
                  _ct(106, "other", "02:00:00:00:00:06", bridge="vmbr0")]
    leases = [Lease(0, "02:00:00:00:00:05", "10.10.0.109", "cache-05", None)]
    out = rebuild(settings, hosts, addn, containers, leases)
    got = [(r.hostname, r.ip, r.mac, r.vmid) for r in out.reservations]
    assert got == [("web-01", "10.10.0.100", "02:00:00:00:00:01", 101),
                   ("gone-02", "10.10.0.101", "02:00:00:00:00:02", None),
                   ("db-04", "10.10.0.107", "02:00:00:00:00:04", 104),
                   ("cache-05", "10.10.0.109", "02:00:00:00:00:05", 105)]  # keeps its lease's address
    notes = "\n".join(out.notes)
    assert "line 2: skipped 'garbage line'" in notes
    assert "dup-03" in notes and "address is already reserved for web-01" in notes
    assert "gone-02" in notes and "`proximity gc` releases it" in notes
    assert "nobody" in notes and "its MAC is unknown" in notes


# -- item 7: a full disk ---------------------------------------------------------------------
def test_a_write_without_room_to_spare_is_refused_and_the_old_file_kept(tmp_path):
    host = Host()
    path = tmp_path / "f"
    host.write_text(path, "old\n")
    host.write_spare = host.free_space(tmp_path) + 1  # as if the file system were (nearly) full
    with pytest.raises(HostError, match=r"KiB free.*spare so dnsmasq can still record its leases.*unchanged"):
        host.write_text(path, "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["f"]


def _record(settings, leases):
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / f"{settings.service_name}.state").write_text(json.dumps({"pid": 1, "leases": leases}))


def test_dnsmasq_is_not_started_when_its_leases_file_lost_leases_still_in_use(settings):
    later = int(time.time()) + 3600
    _record(settings, {"10.10.0.100": later, "10.10.0.101": 0, "10.10.0.102": int(time.time()) - 10})
    settings.leases_file.write_text(f"{later} 02:00:00:00:00:01 10.10.0.100 a *\n")  # truncated by a full disk
    dns = SupervisedDns(Host(), settings)
    for call in (dns.start, dns.restart):
        with pytest.raises(ServiceError, match=r"lost 1 lease\(s\) still in use \(10\.10\.0\.101\).*twice"):
            call()
    settings.leases_file.write_text(f"{later} 02:00:00:00:00:01 10.10.0.100 a *\n0 02:00:00:00:00:02 10.10.0.101 b *\n")
    assert dns.lost_leases() == []  # the expired .102 does not count


# -- item 8: a damaged cache or record heals ------------------------------------------------
def test_a_non_utf8_byte_in_the_leases_file_skips_that_line_and_names_it(settings):
    good = "0 02:00:00:00:00:01 10.10.0.100 a *\n"
    settings.leases_file.write_bytes(good.encode() + b"0 02:00:00:00:00:02 10.10.0.101 b\xff *\n")
    text = Host().read_text(settings.leases_file, errors="replace")
    leases, warnings = parse_leases(text, "leases")
    assert [lease.ip for lease in leases] == ["10.10.0.100"]
    assert len(warnings) == 1 and "leases line 2" in warnings[0]
    with pytest.raises(HostError, match="cannot read"):  # strict reads still refuse
        Host().read_text(settings.leases_file)


def test_a_damaged_daemon_record_means_stale(settings, monkeypatch):
    dns = SupervisedDns(Host(), settings)
    monkeypatch.setattr(dns, "running_pid", lambda: 4242)
    settings.run_dir.mkdir(parents=True)
    dns.record_file.write_bytes(b'{"pid": 4242, "config": "ab\xffcd"}')
    process = dns.process()
    assert process.pid == 4242 and process.config is None  # stale: `up` restarts it and rewrites the record


# -- item 9: no traceback ------------------------------------------------------------------
def test_a_huge_lease_expiry_is_shown_not_a_crash():
    leases, warnings = parse_leases("99999999999999 02:00:00:00:00:01 10.10.0.100 a *\n")
    assert not warnings and leases[0].expires_text() == "at 99999999999999 (past year 9999)"
    assert Lease(0, "m", "10.10.0.1", None, None).expires_text() == "never"


# -- item 16: no emoji codes -----------------------------------------------------------------
def test_macs_never_print_as_emoji():
    from proximity.cli.common import Table, err, out

    mac = "02:d6:86:cd:11:7f and 02:ab:cd:ef:00:01"
    for console in (out, err):
        with console.capture() as captured:
            console.print(mac, highlight=False)
            table = Table(title="containers")
            table.add_column("MAC", no_wrap=True)
            table.add_row(mac)
            console.print(table)
        assert captured.get().count(mac) == 2, captured.get()
