"""The guest firewall options in the double (GET/PUT ``/nodes/{node}/lxc/{vmid}/firewall/options``),
and the Proxmox backend's two calls on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proximity.containers.proxmox import PermissionDenied

from .schema import Schema
from .server import MemoryRealizer, PveDouble
from .test_backend import TOKEN, backend_for, create
from .test_server import Client

OPTIONS = "/nodes/pve/lxc/{vmid}/firewall/options"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load()


@pytest.fixture
def double(schema: Schema) -> Iterator[PveDouble]:
    with PveDouble(MemoryRealizer(delay=0.01), schema=schema, token=TOKEN, tls=True) as running:
        yield running


@pytest.fixture
def client(schema: Schema) -> Iterator[Client]:
    """Raw HTTP (urllib) to a plain-HTTP double, for what a client library would not send."""
    with PveDouble(MemoryRealizer(delay=0.01), schema=schema, token=TOKEN) as plain:
        yield Client(plain)


def test_a_guest_without_a_firewall_file_reads_as_defaults_and_a_put_sets_only_what_it_names(client):
    path = OPTIONS.format(vmid=100)
    first = client.ok("GET", path)  # the answer fits the schema's 'returns' (Client.ok checks)
    assert set(first) == {"digest"}  # nothing set: Proxmox's defaults apply (dhcp 0, enable 0, ndp 1)
    assert client.ok("PUT", path, {"dhcp": 1}) is None
    assert client.double.guest_firewall(100) == {"dhcp": 1}
    client.double.set_guest_firewall(100, enable=1)  # the admin, in the GUI
    second = client.ok("GET", path)
    assert (second["dhcp"], second["enable"]) == (1, 1) and second["digest"] != first["digest"]
    client.ok("PUT", path, {"delete": "enable"})
    assert client.double.guest_firewall(100) == {"dhcp": 1}


def test_the_schema_and_the_digest_refuse_what_proxmox_refuses(client):
    path = OPTIONS.format(vmid=100)
    status, body = client.call("PUT", path, {"dhcp": "yes"})  # top-level booleans are 0/1 only
    assert status == 400 and "dhcp" in body["errors"]
    status, body = client.call("PUT", path, {"dhcp": 1, "dhcp6": 1})  # no such option
    assert status == 400 and "dhcp6" in body["errors"]
    status, body = client.call("PUT", path, {"policy_in": "ALLOW"})
    assert status == 400 and "policy_in" in body["errors"]
    stale = client.ok("GET", path)["digest"]
    client.double.set_guest_firewall(100, enable=1)
    status, body = client.call("PUT", path, {"dhcp": 1, "digest": stale})
    assert status == 500 and "detected modified configuration" in body["message"]
    assert client.double.guest_firewall(100) == {"enable": 1}  # nothing changed


def test_reading_needs_vm_audit_and_writing_vm_config_network(client):
    header = client.double.add_token("ops@pve!ro", "s3cret", acl={"/vms": {"VM.Audit"}})
    path = OPTIONS.format(vmid=100)
    status, _ = client.call("GET", path, token=header)
    assert status == 200
    status, body = client.call("PUT", path, {"dhcp": 1}, token=header)
    assert status == 403 and body["message"] == "Permission check failed (/vms/100, VM.Config.Network)\n"
    assert client.double.guest_firewall(100) == {}


def test_destroying_the_container_removes_its_firewall_file(double):
    backend = backend_for(double)
    vmid = create(backend)
    backend.allow_guest_dhcp(vmid)
    assert double.guest_firewall(vmid) == {"dhcp": 1}
    backend.destroy(vmid)
    assert double.guest_firewall(vmid) == {}


def test_the_backend_sets_dhcp_and_never_touches_enable(double):
    backend = backend_for(double)
    vmid = create(backend)
    double.set_guest_firewall(vmid, enable=0, ndp=1)
    backend.allow_guest_dhcp(vmid)
    assert double.guest_firewall(vmid) == {"enable": 0, "ndp": 1, "dhcp": 1}
    assert backend.guest_firewall(vmid)["dhcp"] == 1
    puts = [r for r in double.requests if r["method"] == "PUT" and r["path"].endswith("/firewall/options")]
    assert [r["params"] for r in puts] == [{"dhcp": "1"}]
    assert [r for r in double.requests if r["status"] == 400] == []


def test_a_refused_put_is_permission_denied_naming_the_privilege(double):
    backend = backend_for(double)
    vmid = create(backend)
    double.inject(403, "PUT", r"/firewall/options$", message=f"Permission check failed (/vms/{vmid}, VM.Config.Network)\n")
    with pytest.raises(PermissionDenied, match=rf"/vms/{vmid}, VM.Config.Network"):
        backend.allow_guest_dhcp(vmid)
