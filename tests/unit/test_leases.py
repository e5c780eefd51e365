from proximity.network.leases import parse_leases

REAL_FILE = """\
1764200000 52:54:00:12:34:56 10.10.0.105 nginx-01 01:52:54:00:12:34:56
1764200456 52:54:00:ab:cd:ef 10.10.0.102 wordpress-02 *
0 52:54:00:00:00:01 10.10.0.150 * *
duid 00:01:00:01:2c:5e:1a:2b:52:54:00:12:34:56
1764200999 1234567 fd00::105 nginx-01 00:01:00:01:2c:5e:1a:2b:52:54:00:12:34:56
"""


def test_real_dnsmasq_lease_lines():
    leases, warnings = parse_leases(REAL_FILE)
    assert warnings == []
    assert [(l.ip, l.hostname) for l in leases] == [
        ("10.10.0.105", "nginx-01"), ("10.10.0.102", "wordpress-02"), ("10.10.0.150", None), ("fd00::105", "nginx-01"),
    ]
    first = leases[0]
    assert (first.expiry, first.mac, first.client_id) == (1764200000, "52:54:00:12:34:56", "01:52:54:00:12:34:56")
    assert leases[1].client_id is None
    assert set(first.as_dict()) == {"expiry", "mac", "ip", "hostname", "client_id"}


def test_malformed_lines_are_skipped_with_their_line_number():
    text = (
        "1727890123 10.10.0.105 nginx-01 *\n"  # the seed's short form: no MAC
        "1764200000 52:54:00:12:34:56 10.10.0.105 nginx-01 *\n"
        "garbage\n"
        "1764200000 52:54:00:12:34:56 10.10.0.999 bad-ip *\n"
    )
    leases, warnings = parse_leases(text, "leases")
    assert [l.hostname for l in leases] == ["nginx-01"]
    assert [w.split(":")[0] for w in warnings] == ["leases line 1", "leases line 3", "leases line 4"]


def test_empty_file():
    assert parse_leases("") == ([], [])
