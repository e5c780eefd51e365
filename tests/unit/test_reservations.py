import pytest

from proximity.network.reservations import AdmissionError, Reservations, stable_mac
from proximity.host import Host
from proximity.network.leases import Lease
from proximity.settings import load_settings


@pytest.fixture
def reservations(tmp_path):
    settings = load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run"),
                             dhcp_start="10.10.0.100", dhcp_end="10.10.0.102")
    return Reservations(settings, Host())


def test_mac_is_stable_locally_administered_and_unicast():
    mac = stable_mac("nginx-01")
    assert mac == stable_mac("nginx-01") != stable_mac("wordpress-02")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01


def test_reserve_writes_the_files_dnsmasq_reads(reservations):
    with reservations.locked():
        r = reservations.reserve("nginx-01", [])
    s = reservations.settings
    assert (r.ip, r.mac) == ("10.10.0.100", stable_mac("nginx-01"))
    assert s.dhcp_hosts_file.read_text() == f"{r.mac},10.10.0.100,nginx-01\n"
    assert s.addn_hosts_file.read_text() == "10.10.0.100 nginx-01.prox.local nginx-01\n"
    reservations.assign("nginx-01", 101)
    assert reservations.find(vmid=101).hostname == "nginx-01"
    assert reservations.release("nginx-01").ip == "10.10.0.100"
    assert s.dhcp_hosts_file.read_text() == "" and reservations.all() == []


def test_duplicate_name_leased_address_and_full_pool_are_refused(reservations):
    foreign = Lease(0, "52:54:00:00:00:01", "10.10.0.100", "other-box", None)
    with pytest.raises(AdmissionError, match="already in use"):
        reservations.reserve("other-box", [foreign])
    a = reservations.reserve("a", [foreign])
    assert a.ip == "10.10.0.101"  # .100 is leased to someone else
    with pytest.raises(AdmissionError, match="already in use"):
        reservations.reserve("a", [])
    reservations.reserve("b", [foreign])
    with pytest.raises(AdmissionError, match="no free address left in 10.10.0.100-10.10.0.102"):
        reservations.reserve("c", [foreign])
    assert [r.hostname for r in reservations.all()] == ["a", "b"]  # the refusal changed nothing


def test_dry_run_reservation_saves_nothing(reservations):
    r = reservations.reserve("nginx-01", [], save=False)
    assert r.ip == "10.10.0.100" and reservations.all() == []


def test_names_that_differ_only_in_case_are_the_same_name(reservations):
    """DNS is case-insensitive: WEB-01 while web-01 exists is refused at admission, not late."""
    reservations.reserve("web-01", [])
    before = reservations.settings.reservations_db.read_text()
    with pytest.raises(AdmissionError, match="'WEB-01' is already in use"):
        reservations.reserve("WEB-01", [])
    foreign = Lease(0, "52:54:00:00:00:01", "10.10.0.102", "Other-Box", None)
    with pytest.raises(AdmissionError, match="already in use"):
        reservations.reserve("other-box", [foreign])
    assert reservations.settings.reservations_db.read_text() == before
