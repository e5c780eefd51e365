"""The double's request validation against the official Proxmox VE API schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .schema import (
    Schema,
    SchemaLookupError,
    parse_property_string,
    print_property_string,
    resolve_schema_path,
    split_list,
)

CREATE = "/nodes/pve/lxc"
CONFIG = "/nodes/pve/lxc/100/config"
# The net0 Proximity builds for a container on prox-net (render.container_net0 + hwaddr).
PROXIMITY_NET0 = "name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=02:aa:bb:cc:dd:ee"
VALID_CREATE = {
    "vmid": "100",
    "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    "hostname": "web1",
    "memory": "512",
    "swap": "256",
    "cores": "2",
    "net0": PROXIMITY_NET0,
    "unprivileged": "1",
    "rootfs": "local-lvm:8",
    "features": "nesting=1,keyctl=1",
    "onboot": "0",
    "ostype": "debian",
    "start": "0",
}


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load()


def create_errors(schema: Schema, **changes: str | None) -> dict[str, str]:
    params = {**VALID_CREATE, **changes}
    return schema.validate("POST", CREATE, {k: v for k, v in params.items() if v is not None})


# ------------------------------------------------------------------ valid requests


def test_valid_create_params_pass(schema):
    assert create_errors(schema) == {}


def test_the_net0_proximity_sends_passes_on_create_and_on_update(schema):
    assert create_errors(schema, net0=PROXIMITY_NET0) == {}
    assert schema.validate("PUT", CONFIG, {"net0": PROXIMITY_NET0}) == {}


def test_the_required_parameters_of_create_are_vmid_and_ostemplate(schema):
    errors = schema.validate("POST", CREATE, {})
    assert errors == {
        "vmid": "property is missing and it is not optional",
        "ostemplate": "property is missing and it is not optional",
    }


@pytest.mark.parametrize("missing", ["ostemplate", "vmid"])
def test_missing_required_parameter_is_rejected(schema, missing):
    errors = create_errors(schema, **{missing: None})
    assert errors == {missing: "property is missing and it is not optional"}


# ------------------------------------------------------------------ net0 (a property string)


def test_unknown_net0_key_is_rejected_naming_net0(schema):
    errors = create_errors(schema, net0="name=eth0,bridge=prox-net,foo=1")
    assert list(errors) == ["net0"]
    assert errors["net0"] == "invalid format - invalid key in comma-separated list property: foo\n"


@pytest.mark.parametrize(
    ("net0", "inner"),
    [
        ("name=eth0,bridge=prox-net,ip=notanip", "net0.ip: invalid format - value does not look like a valid ipv4"),
        ("name=eth0,ip=10.0.0.5/40", "net0.ip: invalid format"),  # mask > 32
        ("name=eth0,ip=10.0.0.5/4", "net0.ip: invalid format"),  # Proxmox wants a mask of 8..32
        ("name=eth0,ip6=fe80::1", "net0.ip6: invalid format"),  # an address, not a CIDR
        ("name=eth0,firewall=2", "net0.firewall: type check ('boolean') failed - got '2'"),
        ("name=eth0,hwaddr=zz:aa:bb:cc:dd:ee", "net0.hwaddr: invalid format - value does not look like a valid unicast"),
        ("name=eth0,hwaddr=03:aa:bb:cc:dd:ee", "net0.hwaddr: invalid format"),  # multicast bit set
        ("name=eth0,mtu=10", "net0.mtu: value must have a minimum value of 64"),
        ("name=eth0,tag=4095", "net0.tag: value must have a maximum value of 4094"),
        ("name=eth0,type=macvlan", "net0.type: value 'macvlan' does not have a value in the enumeration 'veth'"),
        ("name=eth0,bridge=prox net", "net0.bridge: value does not match the regex pattern"),
        ("name=eth0,trunks=1;2x", "net0.trunks: value does not match the regex pattern"),  # anchored at the end
        ("bridge=prox-net,ip=dhcp", "net0.name: property is missing and it is not optional"),
    ],
)
def test_bad_net0_values_are_rejected(schema, net0, inner):
    errors = create_errors(schema, net0=net0)
    assert list(errors) == ["net0"]
    assert errors["net0"].startswith("invalid format - format error\n")
    assert inner in errors["net0"]


@pytest.mark.parametrize(
    ("net0", "message"),
    [
        ("name=eth0,name=eth1", "duplicate key in comma-separated list property: name"),
        ("name=eth0,ip=", "missing key in comma-separated list property"),
        ("eth0,bridge=prox-net", "value without key, but schema does not define a default key"),
    ],
)
def test_malformed_net0_is_rejected(schema, net0, message):
    assert create_errors(schema, net0=net0) == {"net0": f"invalid format - {message}\n"}


def test_booleans_inside_a_property_string_take_the_long_forms(schema):
    assert create_errors(schema, net0="name=eth0,firewall=yes,link_down=OFF") == {}
    assert create_errors(schema, features="nesting=true") == {}


def test_default_key_takes_a_bare_first_value(schema):
    assert create_errors(schema, rootfs="local-lvm:8,mountoptions=noatime") == {}
    errors = create_errors(schema, rootfs="local-lvm:8,volume=local:4")
    assert errors == {"rootfs": "invalid format - duplicate key in comma-separated list property: volume\n"}


def test_other_property_strings_are_checked_too(schema):
    assert "rootfs" in create_errors(schema, rootfs="local:8,size=lots")
    assert "features" in create_errors(schema, features="nesting=1,fly=1")
    assert "features" in create_errors(schema, features="mount=nfs,mount=cifs")


def test_indexed_parameters_stand_for_net0_to_net31(schema):
    assert create_errors(schema, net31="name=eth31") == {}
    for name in ("net32", "net01", "net"):
        assert create_errors(schema, **{name: "name=eth1"}) == {
            name: "property is not defined in schema and the schema does not allow additional properties"
        }


# ------------------------------------------------------------------ plain parameters


def test_unknown_parameter_is_rejected_naming_it(schema):
    assert create_errors(schema, bogus="1") == {
        "bogus": "property is not defined in schema and the schema does not allow additional properties"
    }


@pytest.mark.parametrize(("name", "value"), [("memory", "lots"), ("cores", "1.5"), ("cores", ""), ("swap", "1e3")])
def test_wrong_integer_is_rejected(schema, name, value):
    assert create_errors(schema, **{name: value}) == {name: f"type check ('integer') failed - got '{value}'"}


def test_top_level_booleans_are_only_0_and_1(schema):
    # PVE::JSONSchema::check_type accepts '1'/'0' (or JSON true/false) for a boolean
    # parameter; 'true' in a form is refused by Proxmox.
    for value in ("true", "yes", "on", "2"):
        assert create_errors(schema, unprivileged=value) == {
            "unprivileged": f"type check ('boolean') failed - got '{value}'"
        }
    assert create_errors(schema, unprivileged=True) == {}  # JSON true
    assert create_errors(schema, unprivileged=1) == {}


def test_value_outside_enum_is_rejected(schema):
    assert create_errors(schema, cmode="bogus") == {
        "cmode": "value 'bogus' does not have a value in the enumeration 'shell, console, tty'"
    }


def test_pattern_is_a_full_match(schema):
    assert create_errors(schema, entrypoint="/sbin/init") == {}
    assert create_errors(schema, entrypoint="/sbin/\x01init") == {"entrypoint": "value does not match the regex pattern"}


def test_minimum_maximum_and_lengths(schema):
    assert create_errors(schema, memory="8") == {"memory": "value must have a minimum value of 16"}
    assert create_errors(schema, tty="7") == {"tty": "value must have a maximum value of 6"}
    assert create_errors(schema, password="abc") == {"password": "value must be at least 5 characters long"}
    assert create_errors(schema, ostemplate="x" * 256) == {"ostemplate": "value may only be 255 characters long"}


@pytest.mark.parametrize("hostname", ["web1", "web-1.example.com", "A1"])
def test_hostname_is_a_dns_name(schema, hostname):
    assert create_errors(schema, hostname=hostname) == {}


@pytest.mark.parametrize("hostname", ["web_1", "-web", "web-", "web..example", "web 1"])
def test_hostname_that_is_no_dns_name_is_rejected(schema, hostname):
    assert create_errors(schema, hostname=hostname) == {
        "hostname": "invalid format - value does not look like a valid DNS name\n"
    }


def test_delete_takes_a_list_of_config_ids(schema):
    assert schema.validate("PUT", CONFIG, {"delete": "net1,mp0;description"}) == {}
    assert schema.validate("PUT", CONFIG, {"delete": "net1,bad!"}) == {
        "delete": "invalid format - invalid configuration ID 'bad!'\n"
    }


# ------------------------------------------------------------------ path parameters


@pytest.mark.parametrize("vmid", ["42", "99", "1000000000"])
def test_path_vmid_out_of_range_is_rejected(schema, vmid):
    errors = schema.validate("GET", f"/nodes/pve/lxc/{vmid}/config", {})
    assert errors == {"vmid": "invalid format - value does not look like a valid VM ID\n"}


def test_path_parameters_are_typed_and_formatted(schema):
    assert schema.validate("GET", "/nodes/pve/lxc/abc/config", {}) == {"vmid": "type check ('integer') failed - got 'abc'"}
    assert schema.validate("GET", "/nodes/bad_node/lxc", {}) == {
        "node": "invalid format - value does not look like a valid node name\n"
    }


def test_path_parameters_win_over_body_parameters(schema):
    assert schema.validate("GET", CONFIG, {"vmid": "42"}) == {}


@given(st.integers(min_value=0, max_value=2_000_000_000))
@settings(max_examples=200, deadline=None)
def test_vmid_is_valid_exactly_in_100_to_999999999(vmid):
    errors = Schema.load().validate("GET", f"/nodes/pve/lxc/{vmid}/status/current", {})
    assert (errors == {}) == (100 <= vmid <= 999_999_999)


@given(st.binary(min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_hwaddr_must_be_unicast(octets):
    mac = ":".join(f"{b:02x}" for b in octets)
    errors = Schema.load().validate("PUT", CONFIG, {"net0": f"name=eth0,hwaddr={mac}"})
    assert (errors == {}) == (octets[0] & 1 == 0)


# ------------------------------------------------------------------ matching and loading


def test_match_finds_the_template_and_the_path_parameters(schema):
    assert schema.match("GET", "/nodes/pve/lxc/100/config") == (
        "/nodes/{node}/lxc/{vmid}/config",
        {"node": "pve", "vmid": "100"},
    )
    upid = "UPID:pve:0000ABCD:00001234:6650A1B2:vzstart:100:root@pam!proximity:"
    assert schema.match("GET", f"/nodes/pve/tasks/{upid}/status") == (
        "/nodes/{node}/tasks/{upid}/status",
        {"node": "pve", "upid": upid},
    )
    assert schema.match("POST", "/nodes/pve/lxc/100/config") is None  # no such method
    assert schema.match("GET", "/nodes/pve/lxc/100/nope") is None
    with pytest.raises(SchemaLookupError):
        schema.validate("GET", "/nodes/pve/nope", {})


def test_validate_accepts_a_template_with_explicit_path_parameters(schema):
    assert schema.validate("GET", "/nodes/{node}/lxc/{vmid}/config", {"node": "pve", "vmid": "100"}) == {}
    assert "vmid" in schema.validate("GET", "/nodes/{node}/lxc/{vmid}/config", {"node": "pve"})


def test_every_pattern_in_the_schema_compiles(schema):
    from .schema import _anchored

    count = 0
    for info in schema.methods.values():
        stack = list(info.get("parameters", {}).get("properties", {}).values())
        while stack:
            prop = stack.pop()
            if prop.get("pattern"):
                _anchored(prop["pattern"])
                count += 1
            if isinstance(prop.get("format"), dict):
                stack.extend(prop["format"].values())
    assert count > 100


def test_load_is_cached_and_honours_the_environment(tmp_path, monkeypatch):
    default = Schema.load()
    assert Schema.load() is default
    copy = tmp_path / "api-schema.json"
    shutil.copy(resolve_schema_path(), copy)
    monkeypatch.setenv("PVE_API_SCHEMA", str(copy))
    assert resolve_schema_path() == copy.resolve()
    other = Schema.load()
    assert other is not default and Schema.load() is other
    assert other.match("GET", "/cluster/nextid") == ("/cluster/nextid", {})
    monkeypatch.setenv("PVE_API_SCHEMA", str(tmp_path / "absent.json"))
    with pytest.raises(FileNotFoundError):
        Schema.load()


def test_without_the_variable_the_copy_beside_the_clone_comes_first(monkeypatch):
    from .schema import _REPO, _candidate_paths

    monkeypatch.delenv("PVE_API_SCHEMA", raising=False)
    assert (_REPO / "tests" / "pve_double" / "schema.py").is_file()
    assert _candidate_paths() == [
        _REPO.parent / "shared" / "pve" / "api-schema.json",
        Path("/work/shared/pve/api-schema.json"),
    ]


# ------------------------------------------------------------------ property-string helpers


def test_property_strings_print_as_proxmox_writes_them(schema):
    fmt = schema.properties("POST", "/nodes/{node}/lxc")["net[n]"]["format"]
    parsed = parse_property_string(fmt, "ip=dhcp,bridge=prox-net,name=eth0,firewall=true", "net0")
    assert parsed == {"ip": "dhcp", "bridge": "prox-net", "name": "eth0", "firewall": 1}
    # the required key first, then the rest sorted, booleans as 1/0
    assert print_property_string(parsed, fmt) == "name=eth0,bridge=prox-net,firewall=1,ip=dhcp"
    rootfs = schema.properties("POST", "/nodes/{node}/lxc")["rootfs"]["format"]
    assert print_property_string({"volume": "local:vm-1-disk-0", "size": "4096M"}, rootfs) == "local:vm-1-disk-0,size=4G"


def test_split_list_is_proxmoxs():
    assert split_list("net1, mp0;;description") == ["net1", "mp0", "description"]
    assert split_list("a b\0c") == ["a b", "c"]
    assert split_list(None) == []
