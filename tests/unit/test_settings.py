import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.errors import InputError
from proximity.settings import (RESERVED_HOSTNAMES, SettingsError, check_hostname, is_hostname_label,
                                  lease_seconds, load_settings)


def test_defaults_are_the_seed_architecture():
    s = load_settings()
    assert s.bridge == "prox-net"
    assert str(s.gateway) == "10.10.0.1/24"
    assert (str(s.dhcp_start), str(s.dhcp_end)) == ("10.10.0.100", "10.10.0.250")
    assert s.lease_time == "12h" and lease_seconds(s.lease_time) == 43200
    assert s.domain == "prox.local"
    assert [str(a) for a in s.upstream_dns] == ["1.1.1.1", "8.8.8.8"]
    assert s.uplink is None
    assert str(s.interfaces_file) == "/etc/network/interfaces"
    assert str(s.dnsmasq_conf) == "/etc/proximity/dnsmasq.conf"
    assert str(s.leases_file) == "/var/lib/proximity/dnsmasq.leases"
    assert s.service_name == "proximity-dns"
    assert s.pool_size == 151


def test_toml_file_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "proximity.toml"
    config.write_text('bridge = "lab-net"\ndomain = "lab.example"\n')
    monkeypatch.setenv("PROXIMITY_CONFIG", str(config))
    monkeypatch.setenv("PROXIMITY_DOMAIN", "env.example")
    s = load_settings()
    assert s.bridge == "lab-net"
    assert s.domain == "env.example"  # the environment beats the file
    assert load_settings(domain="cli.example").domain == "cli.example"  # the caller beats both


@pytest.mark.parametrize("value", ['["9.9.9.9", "2620:fe::fe"]', "9.9.9.9, 2620:fe::fe", "9.9.9.9 2620:fe::fe"])
def test_a_list_setting_from_the_environment(monkeypatch, value):
    monkeypatch.setenv("PROXIMITY_UPSTREAM_DNS", value)
    assert [str(a) for a in load_settings().upstream_dns] == ["9.9.9.9", "2620:fe::fe"]


def test_environment_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("PROXIMITY_UPSTREAM_DNS", '["9.9.9.9"')
    with pytest.raises(SettingsError, match="PROXIMITY_UPSTREAM_DNS"):
        load_settings()
    monkeypatch.setenv("PROXIMITY_UPSTREAM_DNS", "9.9.9.9")
    monkeypatch.setenv("PROXIMITY_PROXMOX_PORT", "eighty")
    with pytest.raises(SettingsError, match="PROXIMITY_PROXMOX_PORT"):
        load_settings()


def test_unknown_key_in_the_file_is_refused(tmp_path, monkeypatch):
    config = tmp_path / "proximity.toml"
    config.write_text('brige = "lab-net"\n')
    monkeypatch.setenv("PROXIMITY_CONFIG", str(config))
    with pytest.raises(SettingsError, match="brige"):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "field", "fix"),
    [
        ({"gateway": "10.10.0.0/24"}, "gateway", "host address"),
        ({"gateway": "10.10.0.1/31"}, "gateway", "/29"),
        ({"gateway": "not-an-ip"}, "gateway", ""),
        ({"dhcp_start": "10.11.0.5"}, "dhcp_start", "between 10.10.0.1 and 10.10.0.254"),
        ({"dhcp_end": "10.10.0.255"}, "dhcp_end", "broadcast"),
        ({"dhcp_start": "10.10.0.200", "dhcp_end": "10.10.0.100"}, "dhcp_start", "swap"),
        ({"dhcp_start": "10.10.0.1"}, "dhcp_start", "contains the gateway"),
        ({"bridge": "a-very-long-bridge-name"}, "bridge", "1 to 15"),
        ({"bridge": "prox net"}, "bridge", "1 to 15"),
        ({"domain": "-bad.local"}, "domain", "dot-separated labels"),
        ({"lease_time": "12 hours"}, "lease_time", "'12h'"),
        ({"lease_time": "30s"}, "lease_time", "2 minutes"),
        ({"upstream_dns": ["1.1.1.x"]}, "upstream_dns", ""),
    ],
)
def test_bad_settings_name_the_field_and_the_fix(overrides, field, fix):
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert field in message
    assert fix in message
    assert "Traceback" not in message


def test_malformed_toml_is_a_clear_error(tmp_path, monkeypatch):
    config = tmp_path / "proximity.toml"
    config.write_text("bridge = \n")
    monkeypatch.setenv("PROXIMITY_CONFIG", str(config))
    with pytest.raises(SettingsError, match="proximity.toml"):
        load_settings()


@st.composite
def subnets_and_ranges(draw):
    prefix = draw(st.integers(min_value=8, max_value=29))
    base = draw(st.integers(min_value=0, max_value=2**32 - 1))
    net = ipaddress.IPv4Network((base >> (32 - prefix) << (32 - prefix), prefix))
    hosts = int(net.broadcast_address) - int(net.network_address) - 1
    offsets = sorted(draw(st.lists(st.integers(1, hosts), min_size=3, max_size=3, unique=True)))
    gateway, start, end = draw(st.permutations(offsets))
    return net, gateway, start, end


@given(subnets_and_ranges())
def test_valid_ranges_are_accepted_and_invalid_ones_refused(case):
    net, gateway, start, end = case
    at = lambda offset: net.network_address + offset  # noqa: E731
    overrides = {"gateway": f"{at(gateway)}/{net.prefixlen}", "dhcp_start": str(at(start)), "dhcp_end": str(at(end))}
    valid = start <= end and not (start <= gateway <= end)
    if valid:
        s = load_settings(**overrides)
        assert s.dhcp_start in s.subnet and s.dhcp_end in s.subnet
        assert s.gateway.ip not in (s.subnet.network_address, s.subnet.broadcast_address)
    else:
        with pytest.raises(SettingsError, match="dhcp_start"):
            load_settings(**overrides)


@given(st.ip_addresses(v=4), st.integers(min_value=8, max_value=29))
def test_range_outside_the_subnet_is_refused(outside, prefix):
    net = ipaddress.IPv4Network(f"10.10.0.1/{prefix}", strict=False)
    if outside in net:
        return
    with pytest.raises(SettingsError, match="outside the subnet"):
        load_settings(gateway=f"10.10.0.1/{prefix}", dhcp_start=str(outside))


@pytest.mark.parametrize("name", ["nginx-01", "a", "x" * 63, "WordPress2"])
def test_hostname_labels_accepted(name):
    assert is_hostname_label(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "x" * 64, "a.b", "a_b", "ä", "app\n", "app\r", " app", "١٢٣"])
def test_hostname_labels_refused(name):
    assert not is_hostname_label(name)


@pytest.mark.parametrize(("name", "reason"), [
    ("app\n", "RFC 1123"), ("web.example.com", "no dots"), ("101", "all digits"), ("0", "container id"),
    ("localhost", "reserved"), ("LocalHost", "reserved"), ("wpad", "reserved"), ("_gateway", "RFC 1123"),
    ("gateway", "reserved"), ("ip6-localhost", "reserved"), ("isatap", "reserved"),
])
def test_container_hostnames_refused_with_the_reason(name, reason):
    with pytest.raises(InputError, match=reason) as caught:
        check_hostname(name)
    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("name", ["web-01", "WEB-01", "101a", "a101", "x" * 63, "local-host", "wpad2"])
def test_container_hostnames_accepted(name):
    assert check_hostname(name) == name


@given(st.text(max_size=70))
def test_check_hostname_accepts_exactly_the_labels_that_are_not_numbers_or_reserved(name):
    ok = is_hostname_label(name) and not name.isdigit() and name.lower() not in RESERVED_HOSTNAMES
    if ok:
        assert check_hostname(name) == name
    else:
        with pytest.raises(InputError):
            check_hostname(name)


@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("lease_time", "12h\n", "not a lease time"),
    ("lease_time", "99999999999999999w", "longer than a year"),
    ("lease_time", "53w", "longer than a year"),
    ("lease_time", "367d", "longer than a year"),
    ("lease_time", "Infinite", "'infinite' (spelled so)"),
    ("lease_time", "infinite ", "'infinite' (spelled so)"),
    ("lease_time", "١٢h", "not a lease time"),
    ("domain", "test", "single label"),
    ("domain", "com", "single label"),
    ("domain", "localhost", "RFC 6761"),
    ("domain", "lab.localhost", "RFC 6761"),
    ("domain", "prox.local\n", "not a valid DNS name"),
    ("bridge", "prox-net\n", "not a usable Linux interface name"),
    ("uplink", "eth0\n", "not a Linux interface name"),
    ("service_name", "proximity-dns\n", "systemd unit"),
])
def test_bad_values_are_refused_with_the_reason(monkeypatch, setting, value, reason):
    """Through the environment, as a user sets them (PROXIMITY_LEASE_TIME=$'12h\\n')."""
    monkeypatch.setenv(f"PROXIMITY_{setting.upper()}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"setting {setting!r}" in message and f"PROXIMITY_{setting.upper()}" in message
    assert repr(value) in message and reason in message


@pytest.mark.parametrize(("setting", "value"), [
    ("lease_time", "infinite"), ("lease_time", "366d"), ("lease_time", "52w"), ("lease_time", "2m"),
    ("domain", "prox.local"), ("domain", "Lab.Example."), ("uplink", "eth0.100"),
])
def test_good_values_stay_valid(monkeypatch, setting, value):
    monkeypatch.setenv(f"PROXIMITY_{setting.upper()}", value)
    load_settings()


@pytest.mark.parametrize(("value", "bad"), [
    ("1.1.1.1,dns.google", "'dns.google'"), ('["1.1.1.1", "8.8.8.8:53"]', "'8.8.8.8:53'"),
    ('["1.1.1.1", 5]', "5"), ("1.1.1.0/24", "'1.1.1.0/24'"),
])
def test_bad_upstream_dns_names_the_setting_the_value_and_the_fix(monkeypatch, value, bad):
    monkeypatch.setenv("PROXIMITY_UPSTREAM_DNS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "setting 'upstream_dns'" in message and "PROXIMITY_UPSTREAM_DNS" in message
    assert f"{bad} is not an IPv4 or IPv6 address" in message and "for example 1.1.1.1,8.8.8.8" in message
    assert "lax-or-strict" not in message and "function-" not in message


def test_bad_upstream_dns_in_the_file(tmp_path, monkeypatch):
    config = tmp_path / "proximity.toml"
    config.write_text('upstream_dns = ["1.1.1.1", "one.one"]\n')
    monkeypatch.setenv("PROXIMITY_CONFIG", str(config))
    with pytest.raises(SettingsError, match="'one.one' is not an IPv4 or IPv6 address"):
        load_settings()
