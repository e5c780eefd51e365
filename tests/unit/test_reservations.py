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


# -- MACs are unique across the host's zones ---------------------------------------------------------

def two_zones(tmp_path):
    """prox-net and web (10.20.0.0/24) as the reservations see them: two files under one state directory."""
    import dataclasses

    from proximity.spec.config import parse_zone
    from proximity.spec.state import ZoneState
    from proximity.spec.zones import resolve

    s = dataclasses.replace(load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run")),
                            zones=(parse_zone("web", {"subnet": "10.20.0.0/24", "ipv6": "off"}),))
    default, web = resolve(s, ZoneState()).views()
    return Reservations(default, Host()), Reservations(web, Host())


def test_a_new_reservation_takes_no_mac_another_zone_holds(tmp_path):
    default, web = two_zones(tmp_path)
    assert default.settings.reservations_db != web.settings.reservations_db
    first = default.reserve("app", [])
    second = web.reserve("app", [])  # the same name in another zone: allowed, with another MAC
    assert first.mac == stable_mac("app") and second.mac != first.mac
    assert second.ip.startswith("10.20.0.") and first.ip.startswith("10.10.0.")
    with pytest.raises(AdmissionError, match=f"MAC {first.mac} is already reserved .*app in zone prox-net"):
        web.reserve("other", [], first.mac)  # an explicit MAC (migrate, adopt) is checked across zones too
    with pytest.raises(AdmissionError, match=f"MAC {second.mac} is already reserved .*app in zone web"):
        default.reserve("other", [], second.mac.upper())
    assert [r.hostname for r in web.all()] == ["app"]  # refused: nothing written


def test_a_move_may_take_the_mac_of_the_zone_it_leaves(tmp_path):
    default, web = two_zones(tmp_path)
    old = default.reserve("app", [])
    moved = web.reserve("app", [], old.mac, move_from="prox-net")
    assert moved.mac == old.mac and moved.ip.startswith("10.20.0.")


def test_a_damaged_file_of_another_zone_refuses_admission_naming_it(tmp_path):
    from proximity.network.reservations import DamagedReservations

    default, web = two_zones(tmp_path)
    web.reserve("db-1", [])
    web.settings.reservations_db.write_text("{")
    with pytest.raises(DamagedReservations, match=r"reservations\.json of zone web is damaged.*gc --rebuild --zone web"):
        default.reserve("app", [])
