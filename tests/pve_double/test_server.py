"""The Proxmox VE API double over real HTTP (urllib), with the in-memory realizer."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .schema import Schema
from .server import LVM_INSTALL, MemoryRealizer, PveDouble, Realizer, decode_urlencoded

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NET0 = "name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=02:aa:bb:cc:dd:ee"
UPID = re.compile(r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):(\d+):root@pam!proximity:$")


class Client:
    """What a Proxmox client does on the wire: token header, form bodies, JSON answers."""

    def __init__(self, double: PveDouble, token: str | None = None):
        self.double = double
        self.token = double.auth_header if token is None else token

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, *, as_json: bool = False,
             token: str | None = None) -> tuple[int, dict[str, Any]]:
        url = self.double.api + path
        data = None
        headers = {}
        if params and method in ("POST", "PUT"):
            if as_json:
                data, headers["Content-Type"] = json.dumps(params).encode(), "application/json"
            else:
                data = urllib.parse.urlencode(params).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif params:
            url += "?" + urllib.parse.urlencode(params)
        auth = self.token if token is None else token
        if auth:
            headers["Authorization"] = auth
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def ok(self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        status, body = self.call(method, path, params, **kw)
        assert status == 200, (status, body)
        returns = self.double.schema.validate_returns(method, path, body["data"])
        assert returns == {}, f"response does not fit the schema's 'returns': {returns}"
        return body["data"]

    def task_status(self, upid: str) -> dict[str, Any]:
        return self.ok("GET", f"/nodes/pve/tasks/{urllib.parse.quote(upid, safe='')}/status")

    def wait(self, upid: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll the task like a client must, until it stops (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.task_status(upid)
            if status["status"] == "stopped":
                return status
            assert time.monotonic() < deadline, f"task {upid} still running after {timeout}s"
            time.sleep(0.005)

    def run(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A task-returning call, waited for; returns the final task status."""
        upid = self.ok(method, path, params)
        assert UPID.match(upid), upid
        return self.wait(upid)

    def log(self, upid: str, **params: Any) -> list[str]:
        lines = self.ok("GET", f"/nodes/pve/tasks/{urllib.parse.quote(upid, safe='')}/log", params or None)
        return [line["t"] for line in lines]

    def create(self, vmid: int, **params: Any) -> dict[str, Any]:
        return self.run("POST", "/nodes/pve/lxc", {"vmid": vmid, "ostemplate": TEMPLATE, **params})


def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
    return value


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load()


@pytest.fixture
def realizer() -> MemoryRealizer:
    return MemoryRealizer(delay=0.02, hold_timeout=5)


@pytest.fixture
def double(realizer: MemoryRealizer, schema: Schema) -> Iterator[PveDouble]:
    with PveDouble(realizer, schema=schema) as running:
        yield running


@pytest.fixture
def client(double: PveDouble) -> Client:
    return Client(double)


# ------------------------------------------------------------------ auth and validation


def test_memory_realizer_is_a_realizer(realizer):
    assert isinstance(realizer, Realizer)


@pytest.mark.parametrize(
    "token",
    [
        "",  # no Authorization header
        "PVEAPIToken=root@pam!proximity=wrong-secret",
        "PVEAPIToken=root@pam!other=secret-uuid",
        "PVEAuthCookie=PVE:root@pam:ticket",
    ],
)
def test_a_request_without_the_token_gets_401(double, client, realizer, token):
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 100, "ostemplate": TEMPLATE}, token=token)
    assert (status, body) == (401, {"data": None})
    assert realizer.calls == [] and double.container(100) is None
    assert client.call("GET", "/nodes/pve/lxc") == (200, {"data": []})


def test_schema_invalid_request_gets_400_and_nothing_happens(double, client, realizer):
    status, body = client.call(
        "POST", "/nodes/pve/lxc",
        {"vmid": 100, "ostemplate": TEMPLATE, "net0": "name=eth0,bridge=prox-net,foo=1", "bogus": 1},
    )
    assert status == 400
    assert body["data"] is None
    assert body["errors"] == {
        "net0": "invalid format - invalid key in comma-separated list property: foo\n",
        "bogus": "property is not defined in schema and the schema does not allow additional properties",
    }
    assert client.ok("GET", "/nodes/pve/lxc") == []
    assert client.ok("GET", "/cluster/nextid") == "100"
    assert realizer.calls == []
    assert double.requests[0] == {
        "method": "POST",
        "path": "/nodes/pve/lxc",
        "params": {"vmid": "100", "ostemplate": TEMPLATE, "net0": "name=eth0,bridge=prox-net,foo=1", "bogus": "1"},
        "status": 400,
    }


def test_a_form_boolean_must_be_0_or_1_as_in_proxmox(client, realizer):
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 100, "ostemplate": TEMPLATE, "unprivileged": "true"})
    assert (status, body["errors"]) == (400, {"unprivileged": "type check ('boolean') failed - got 'true'"})
    assert client.create(100, unprivileged=1)["exitstatus"] == "OK"
    assert client.ok("GET", "/nodes/pve/lxc/100/config")["unprivileged"] == 1


def test_path_parameters_are_validated(client):
    status, body = client.call("GET", "/nodes/pve/lxc/42/config")
    assert (status, body["errors"]) == (400, {"vmid": "invalid format - value does not look like a valid VM ID\n"})


def test_valid_but_unimplemented_and_unknown_calls_get_501(client):
    status, body = client.call("GET", "/nodes/pve/lxc/100/rrddata", {"timeframe": "hour"})
    assert (status, body["data"], body["errors"]) == (501, None, {"path": "not implemented by the double"})
    status, body = client.call("GET", "/nodes/pve/lxc/100/rrddata", {"timeframe": "fortnight"})
    assert status == 400 and list(body["errors"]) == ["timeframe"]  # validation still comes first
    status, body = client.call("GET", "/nodes/pve/nosuchthing")
    assert (status, body["message"]) == (501, "Method 'GET /nodes/pve/nosuchthing' not implemented")


def test_another_node_is_not_reachable(client):
    status, body = client.call("GET", "/nodes/pve2/lxc")
    assert status == 500 and body["message"].startswith("hostname lookup 'pve2' failed")


# ------------------------------------------------------------------ the life of a container


def test_full_lifecycle(double, client, realizer):
    created = client.create(
        101, hostname="web1", memory=1024, cores=2, net0=NET0, unprivileged=1, features="nesting=1"
    )
    assert (created["status"], created["exitstatus"], created["type"], created["id"]) == ("stopped", "OK", "vzcreate", "101")
    assert client.log(created["upid"])[-1] == "TASK OK"
    assert realizer.calls_of("create")[0][1] == 101
    assert realizer.calls_of("create")[0][2]["ostemplate"] == TEMPLATE

    config = client.ok("GET", "/nodes/pve/lxc/101/config")
    assert config["hostname"] == "web1" and config["memory"] == 1024 and config["cores"] == 2
    assert config["net0"] == "name=eth0,bridge=prox-net,firewall=1,hwaddr=02:aa:bb:cc:dd:ee,ip=dhcp,type=veth"
    assert (config["ostype"], config["arch"], config["unprivileged"], config["swap"]) == ("debian", "amd64", 1, 512)
    assert config["rootfs"] == "local:vm-101-disk-0,size=4G"
    assert config["features"] == "nesting=1"
    assert re.fullmatch(r"[0-9a-f]{40}", config["digest"])
    assert [(c["vmid"], c["status"], c["type"], c["maxmem"]) for c in client.ok("GET", "/nodes/pve/lxc")] == [
        (101, "stopped", "lxc", 1024 * 1024 * 1024)
    ]

    assert client.run("POST", "/nodes/pve/lxc/101/status/start")["exitstatus"] == "OK"
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "running"
    eth0 = next(i for i in client.ok("GET", "/nodes/pve/lxc/101/interfaces") if i["name"] == "eth0")
    assert eth0["hwaddr"] == "02:aa:bb:cc:dd:ee" and eth0["inet"].startswith("10.10.0.")

    assert client.run("POST", "/nodes/pve/lxc/101/snapshot", {"snapname": "before", "description": "clean"})["exitstatus"] == "OK"
    snapshots = {s["name"]: s for s in client.ok("GET", "/nodes/pve/lxc/101/snapshot")}
    assert snapshots["before"]["description"] == "clean"
    assert (snapshots["current"]["parent"], snapshots["current"]["running"]) == ("before", 1)

    new_net0 = "name=eth0,bridge=prox-net,ip=10.10.0.50/24,gw=10.10.0.1,hwaddr=02:aa:bb:cc:dd:ee"
    assert client.ok("PUT", "/nodes/pve/lxc/101/config", {"net0": new_net0}) is None
    assert realizer.calls_of("set_config")[-1][2] == {
        "net0": "name=eth0,bridge=prox-net,gw=10.10.0.1,hwaddr=02:aa:bb:cc:dd:ee,ip=10.10.0.50/24,type=veth"
    }
    assert "ip=10.10.0.50/24" in client.ok("GET", "/nodes/pve/lxc/101/config")["net0"]

    rollback = client.run("POST", "/nodes/pve/lxc/101/snapshot/before/rollback", {"start": 1})
    assert rollback["exitstatus"] == "OK"
    assert client.ok("GET", "/nodes/pve/lxc/101/config")["net0"] == config["net0"]
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "running"

    assert client.run("POST", "/nodes/pve/lxc/101/status/shutdown", {"timeout": 30})["exitstatus"] == "OK"
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "stopped"
    assert client.run("DELETE", "/nodes/pve/lxc/101/snapshot/before")["exitstatus"] == "OK"
    assert client.run("DELETE", "/nodes/pve/lxc/101")["exitstatus"] == "OK"

    status, body = client.call("GET", "/nodes/pve/lxc/101/config")
    assert (status, body["message"]) == (500, "Configuration file 'nodes/pve/lxc/101.conf' does not exist\n")
    assert client.ok("GET", "/nodes/pve/lxc") == []
    assert [c[0] for c in realizer.calls if c[0] != "interfaces"] == [
        "create", "start", "snapshot", "set_config", "stop", "rollback", "start", "shutdown", "delete_snapshot",
        "destroy",
    ]
    assert [r for r in double.requests if r["status"] != 200] == [
        {"method": "GET", "path": "/nodes/pve/lxc/101/config", "params": {}, "status": 500}
    ]


def test_create_fills_in_what_proxmox_fills_in(client):
    client.create(102, net0="name=eth0,bridge=prox-net,ip=dhcp", rootfs="local-lvm:8")
    config = client.ok("GET", "/nodes/pve/lxc/102/config")
    assert (config["hostname"], config["memory"], config["swap"]) == ("CT102", 512, 512)
    assert config["rootfs"] == "local-lvm:vm-102-disk-0,size=8G"
    # no hwaddr given: a random one with Proxmox's prefix, and type=veth
    assert re.fullmatch(r"name=eth0,bridge=prox-net,hwaddr=BC:24:11(:[0-9A-F]{2}){3},ip=dhcp,type=veth", config["net0"])
    assert "unprivileged" not in config


def test_put_config_deletes_and_refuses_contradictions(client, realizer):
    client.create(103, net0=NET0)
    assert client.ok("PUT", "/nodes/pve/lxc/103/config", {"net1": "name=eth1,bridge=vmbr0"}, as_json=True) is None
    assert "net1" in client.ok("GET", "/nodes/pve/lxc/103/config")
    status, body = client.call("PUT", "/nodes/pve/lxc/103/config", {"net1": "name=eth1,bridge=vmbr0", "delete": "net1"})
    assert (status, body["errors"]) == (400, {"delete": "you can't use '-net1' and -delete net1' at the same time"})
    status, body = client.call("PUT", "/nodes/pve/lxc/103/config", {"delete": "hostname"})
    assert (status, body["message"]) == (500, "unable to delete required option 'hostname'\n")
    digest = client.ok("GET", "/nodes/pve/lxc/103/config")["digest"]
    assert client.ok("PUT", "/nodes/pve/lxc/103/config", {"delete": "net1", "digest": digest}) is None
    assert realizer.calls_of("set_config")[-1][2] == {"net1": None}
    assert "net1" not in client.ok("GET", "/nodes/pve/lxc/103/config")
    status, body = client.call("PUT", "/nodes/pve/lxc/103/config", {"memory": 1024, "digest": digest})
    assert (status, body["message"]) == (500, "detected modified configuration - file changed by other user? Try again.\n")


# ------------------------------------------------------------------ failures


def test_fail_next_start_ends_the_task_with_that_message(double, client, realizer):
    client.create(101)
    double.fail_next["start"] = "startup for container '101' failed"
    status = client.run("POST", "/nodes/pve/lxc/101/status/start")
    assert (status["status"], status["exitstatus"]) == ("stopped", "startup for container '101' failed")
    assert client.log(status["upid"])[-1] == "TASK ERROR: startup for container '101' failed"
    assert double.fail_next == {}
    assert realizer.calls_of("start") == []
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "stopped"
    assert client.run("POST", "/nodes/pve/lxc/101/status/start")["exitstatus"] == "OK"  # only the next one fails


def test_a_realizer_exception_ends_the_task_with_its_text(client, realizer):
    client.create(101)
    client.run("POST", "/nodes/pve/lxc/101/status/start")
    realizer.errors["stop"] = "lxc-stop: timed out"
    status = client.run("POST", "/nodes/pve/lxc/101/status/stop")
    assert status["exitstatus"] == "lxc-stop: timed out"
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "running"


def test_a_failed_create_leaves_no_container(double, client):
    double.fail_next["create"] = "unable to create CT 104 - no space left"
    assert client.create(104)["exitstatus"] == "unable to create CT 104 - no space left"
    assert client.ok("GET", "/nodes/pve/lxc") == []
    assert client.ok("GET", "/cluster/nextid") == "100"


def test_semantic_errors_are_500_with_proxmoxs_message(client):
    client.create(101)
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 101, "ostemplate": TEMPLATE})
    assert (status, body["message"]) == (500, "CT 101 already exists on node 'pve'\n")
    status, body = client.call("POST", "/nodes/pve/lxc/101/status/shutdown")
    assert (status, body["message"]) == (500, "CT 101 not running\n")
    client.run("POST", "/nodes/pve/lxc/101/status/start")
    status, body = client.call("POST", "/nodes/pve/lxc/101/status/start")
    assert (status, body["message"]) == (500, "CT 101 already running\n")
    status, body = client.call("DELETE", "/nodes/pve/lxc/101")
    assert (status, body["message"]) == (500, "unable to destroy CT 101 - container is running\n")
    status, body = client.call("POST", "/nodes/pve/lxc/101/snapshot", {"snapname": "current"})
    assert (status, body["message"]) == (500, "unable to use snapshot name 'current' (reserved name)\n")
    # errors Proxmox only finds inside the worker end the task instead
    assert client.run("POST", "/nodes/pve/lxc/999/status/start")["exitstatus"] == (
        "Configuration file 'nodes/pve/lxc/999.conf' does not exist"
    )
    assert client.run("POST", "/nodes/pve/lxc/101/snapshot/nope/rollback")["exitstatus"] == "snapshot 'nope' does not exist"


# ------------------------------------------------------------------ ids and tasks


def test_nextid_skips_used_ids(client):
    assert client.ok("GET", "/cluster/nextid") == "100"
    for vmid in (100, 101, 103):
        client.create(vmid)
    assert client.ok("GET", "/cluster/nextid") == "102"
    client.create(102)
    assert client.ok("GET", "/cluster/nextid") == "104"
    assert client.ok("GET", "/cluster/nextid", {"vmid": 150}) == "150"
    status, body = client.call("GET", "/cluster/nextid", {"vmid": 101})
    assert (status, body["errors"]) == (400, {"vmid": "VM 101 already exists"})


def test_tasks_are_asynchronous(client, realizer):
    held = realizer.hold("create")
    upid = client.ok("POST", "/nodes/pve/lxc", {"vmid": 100, "ostemplate": TEMPLATE})
    try:
        wait_until(lambda: realizer.calls_of("create"))
        assert client.task_status(upid)["status"] == "running"
        assert "exitstatus" not in client.task_status(upid)
        assert client.ok("GET", "/nodes/pve/lxc/100/config")["lock"] == "create"
        assert client.ok("GET", "/cluster/nextid") == "101"  # the id is taken while creating
    finally:
        held.set()
    assert client.wait(upid)["exitstatus"] == "OK"
    assert "lock" not in client.ok("GET", "/nodes/pve/lxc/100/config")

    held = realizer.hold("start")
    upid = client.ok("POST", "/nodes/pve/lxc/100/status/start")
    try:
        wait_until(lambda: realizer.calls_of("start"))
        assert client.task_status(upid)["status"] == "running"
        assert client.ok("GET", "/nodes/pve/lxc/100/status/current")["status"] == "stopped"
    finally:
        held.set()
    assert client.wait(upid)["exitstatus"] == "OK"
    assert client.ok("GET", "/nodes/pve/lxc/100/status/current")["status"] == "running"


def test_a_container_locked_by_a_snapshot_refuses_other_calls(client, realizer):
    client.create(100)
    held = realizer.hold("snapshot")
    upid = client.ok("POST", "/nodes/pve/lxc/100/snapshot", {"snapname": "s1"})
    try:
        wait_until(lambda: realizer.calls_of("snapshot"))
        assert client.ok("GET", "/nodes/pve/lxc/100/config")["lock"] == "snapshot"
        snapshots = {s["name"]: s for s in client.ok("GET", "/nodes/pve/lxc/100/snapshot")}
        assert snapshots["s1"]["snapstate"] == "prepare"
        status, body = client.call("PUT", "/nodes/pve/lxc/100/config", {"memory": 1024})
        assert (status, body["message"]) == (500, "CT is locked (snapshot)\n")
        start = client.run("POST", "/nodes/pve/lxc/100/status/start")
        assert start["exitstatus"] == "CT is locked (snapshot)"
    finally:
        held.set()
    assert client.wait(upid)["exitstatus"] == "OK"
    assert client.ok("PUT", "/nodes/pve/lxc/100/config", {"memory": 1024}) is None
    status, body = client.call("POST", "/nodes/pve/lxc/100/snapshot", {"snapname": "s1"})
    assert client.wait(body["data"])["exitstatus"] == "snapshot name 's1' already used"


def test_task_log_pages_and_unknown_tasks(client):
    upid = client.create(100)["upid"]
    assert client.log(upid) == [f"extracting archive '{TEMPLATE}'", "Detected container architecture: amd64", "TASK OK"]
    assert client.log(upid, start=1, limit=1) == ["Detected container architecture: amd64"]
    unknown = "UPID:pve:00000001:00000002:00000003:vzstart:100:root@pam:"
    assert client.task_status(unknown)["exitstatus"] == "unable to open file - No such file or directory"
    status, body = client.call("GET", "/nodes/pve/tasks/not-a-upid/status")
    assert (status, body["message"]) == (500, "unable to parse worker upid 'not-a-upid'\n")


def test_task_status_has_proxmoxs_fields(client):
    status = client.create(100)
    assert UPID.match(status["upid"]).groups() == ("vzcreate", "100")
    assert (status["user"], status["tokenid"], status["node"]) == ("root@pam", "proximity", "pve")
    pid, pstart, starttime = (int(x, 16) for x in status["upid"].split(":")[2:5])
    assert (status["pid"], status["pstart"], status["starttime"]) == (pid, pstart, starttime)
    assert abs(starttime - time.time()) < 60


def test_form_decoding_is_proxmoxs():
    assert decode_urlencoded("a=1&a=2;b=x+y&c") == {"a": "1\x002", "b": "x y", "c": None}
    # an unencoded '=' cuts the value, as Perl's split(/=/) does; %3D survives
    assert decode_urlencoded("net0=name=eth0") == {"net0": "name"}
    assert decode_urlencoded("net0=name%3Deth0") == {"net0": "name=eth0"}


# ------------------------------------------------------------------ the real client


@pytest.mark.skipif(shutil.which("openssl") is None, reason="tls=True makes its certificate with openssl")
def test_proxmoxer_talks_to_the_double_over_https(realizer, schema):
    proxmoxer = pytest.importorskip("proxmoxer")
    with PveDouble(realizer, schema=schema, tls=True) as double:
        assert double.url.startswith("https://") and double.ca_file
        api = proxmoxer.ProxmoxAPI(
            "127.0.0.1", port=double.port, user="root@pam", token_name="proximity",
            token_value="secret-uuid", verify_ssl=double.ca_file, timeout=5,
        )
        node = api.nodes("pve")
        assert api.cluster.nextid.get() == "100"
        with pytest.raises(proxmoxer.ResourceException) as refused:
            node.lxc.post(vmid=100, ostemplate=TEMPLATE, net0="name=eth0,foo=1")
        assert refused.value.status_code == 400
        assert refused.value.content == "Parameter verification failed."
        assert list(refused.value.errors) == ["net0"]

        upid = node.lxc.post(vmid=100, ostemplate=TEMPLATE, hostname="web1", net0=NET0, unprivileged=1,
                             storage="local-lvm", memory=512, cores=1)
        deadline = time.monotonic() + 5
        while (status := node.tasks(upid).status.get())["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert status["exitstatus"] == "OK"
        assert node.tasks(upid).log.get(limit=500)[-1] == {"n": 3, "t": "TASK OK"}
        assert node.lxc(100).config.get()["rootfs"] == "local-lvm:vm-100-disk-0,size=4G"
        assert node.lxc(100).config.put(net0=NET0) is None
        with pytest.raises(proxmoxer.ResourceException) as refused:
            node.lxc(100).status.shutdown.post(timeout=5)
        assert (refused.value.status_code, refused.value.content) == (500, "CT 100 not running")

        bad = proxmoxer.ProxmoxAPI("127.0.0.1", port=double.port, user="root@pam", token_name="proximity",
                                   token_value="wrong", verify_ssl=double.ca_file, timeout=5)
        with pytest.raises(proxmoxer.ResourceException) as refused:
            bad.nodes("pve").lxc.get()
        assert (refused.value.status_code, refused.value.content) == (401, "authentication failure")


# ------------------------------------------------------------------ modes of a real cluster


def test_permissions_per_token_with_privsep(double, client):
    client.create(101)
    client.create(102)
    header = double.add_token("ops@pve!ci", "s3cret", privsep=True, acl={"/vms/101": {"VM.Audit", "VM.PowerMgmt"}})
    ops = Client(double, header)
    # a list shows only what the token may see: no 403, just fewer (or no) entries
    assert [c["vmid"] for c in ops.ok("GET", "/nodes/pve/lxc")] == [101]
    assert [r["vmid"] for r in ops.ok("GET", "/cluster/resources", {"type": "vm"})] == [101]
    assert ops.ok("GET", "/access/permissions") == {"/vms/101": {"VM.Audit": 1, "VM.PowerMgmt": 1}}
    status, body = ops.call("POST", "/nodes/pve/lxc/102/status/start")
    assert (status, body["message"]) == (403, "Permission check failed (/vms/102, VM.PowerMgmt)\n")
    status, body = ops.call("PUT", "/nodes/pve/lxc/101/config", {"net0": NET0})
    assert (status, body["message"]) == (
        403, "Permission check failed (/vms/101, VM.Config.Disk|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|"
             "VM.Config.Options)\n")
    double.set_access("ops@pve!ci", acl={"/vms": {"VM.Config.Network"}})
    status, body = ops.call("PUT", "/nodes/pve/lxc/101/config", {"net0": NET0})
    assert (status, body["message"]) == (403, "Permission check failed (/sdn/zones/localnetwork/prox-net, SDN.Use)\n")
    nothing = Client(double, double.add_token("ops@pve!empty", "x", privsep=True))
    assert nothing.ok("GET", "/nodes/pve/lxc") == [] and nothing.ok("GET", "/access/permissions") == {}
    # without privsep, root@pam's token has every right
    assert "VM.Allocate" in client.ok("GET", "/access/permissions")["/"]


def test_storage_content_snapshot_support_and_templates(double, client, realizer):
    double.storages = {**LVM_INSTALL, "backup-dir": {"type": "dir", "content": "images,rootdir"}}
    double.templates = {TEMPLATE}
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 101, "ostemplate": TEMPLATE, "storage": "local-zfs"})
    assert (status, body["message"]) == (500, "storage 'local-zfs' does not exist\n")
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 101, "ostemplate": TEMPLATE, "storage": "local"})
    assert (status, body["errors"]) == (400, {"storage": "storage 'local' does not support container directories"})
    missing = "local:vztmpl/nope.tar.zst"
    assert client.create(101, ostemplate=missing, storage="local-lvm")["exitstatus"] == f"volume '{missing}' does not exist"
    assert [s["storage"] for s in client.ok("GET", "/nodes/pve/storage", {"content": "rootdir"})] == [
        "backup-dir", "local-lvm"]
    assert client.create(101, storage="local-lvm")["exitstatus"] == "OK"
    assert client.create(102, storage="backup-dir")["exitstatus"] == "OK"
    client.create(103, storage="local-lvm", mp0="/srv/data,mp=/data")
    features = {vmid: client.ok("GET", f"/nodes/pve/lxc/{vmid}/feature", {"feature": "snapshot"})["hasFeature"]
                for vmid in (101, 102, 103)}
    assert features == {101: 1, 102: 0, 103: 0}
    refused = client.run("POST", "/nodes/pve/lxc/102/snapshot", {"snapname": "before"})
    assert refused["exitstatus"] == "snapshot feature is not available"
    assert client.run("POST", "/nodes/pve/lxc/101/snapshot", {"snapname": "before"})["exitstatus"] == "OK"


def test_the_bridge_and_vlan_check_at_start(double, client):
    double.bridges = {"vmbr0": {"ports": ["eno1"]}, "prox-net": {"ports": []}}
    client.create(101, net0="name=eth0,bridge=vmbr0,ip=dhcp,tag=20")
    client.create(102, net0="name=eth0,bridge=prox-net,ip=dhcp,tag=20")
    client.create(103, net0="name=eth0,bridge=nowhere,ip=dhcp")
    client.create(104, net0="name=eth0,bridge=prox-net,ip=dhcp")
    results = {vmid: client.run("POST", f"/nodes/pve/lxc/{vmid}/status/start")["exitstatus"] for vmid in (101, 102, 103, 104)}
    assert results == {101: "OK", 102: "no physical interface on bridge 'prox-net'",
                       103: "bridge 'nowhere' does not exist", 104: "OK"}


def test_ha_managed_tasks_end_when_queued(double, client, realizer):
    client.create(101)
    double.make_ha_managed(101)
    double.ha_delay = 0.3
    start = client.run("POST", "/nodes/pve/lxc/101/status/start")
    assert UPID.match(start["upid"]).group(1) == "hastart" and start["exitstatus"] == "OK"
    assert client.log(start["upid"])[0] == "Requesting HA start for CT 101"
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "stopped"  # queued, not done
    wait_until(lambda: client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "running")
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["ha"] == {"managed": 1, "state": "started"}
    stop = client.run("POST", "/nodes/pve/lxc/101/status/shutdown")
    assert UPID.match(stop["upid"]).group(1) == "hastop"
    assert client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "running"
    wait_until(lambda: client.ok("GET", "/nodes/pve/lxc/101/status/current")["status"] == "stopped")
    status, body = client.call("DELETE", "/nodes/pve/lxc/101")
    assert (status, body["message"]) == (500, "unable to remove CT 101 - used in HA resources and purge parameter not set.\n")
    assert client.run("DELETE", "/nodes/pve/lxc/101", {"purge": 1})["exitstatus"] == "OK"


def test_a_change_on_a_running_container_stays_pending_without_hotplug(double, client, realizer):
    client.create(101, net0=NET0)
    client.run("POST", "/nodes/pve/lxc/101/status/start")
    double.hotplug = False
    new = "name=eth0,bridge=vmbr0,ip=dhcp,hwaddr=02:AA:BB:CC:DD:EE"
    assert client.ok("PUT", "/nodes/pve/lxc/101/config", {"net0": new}) is None
    assert "bridge=vmbr0" in client.ok("GET", "/nodes/pve/lxc/101/config")["net0"]  # pending values by default
    assert "bridge=prox-net" in client.ok("GET", "/nodes/pve/lxc/101/config", {"current": 1})["net0"]
    pending = {p["key"]: p for p in client.ok("GET", "/nodes/pve/lxc/101/pending")}
    assert "bridge=vmbr0" in pending["net0"]["pending"] and "bridge=prox-net" in pending["net0"]["value"]
    assert realizer.calls_of("set_config") == []
    client.run("POST", "/nodes/pve/lxc/101/status/stop")
    client.run("POST", "/nodes/pve/lxc/101/status/start")  # applied at the next start
    assert "bridge=vmbr0" in client.ok("GET", "/nodes/pve/lxc/101/config", {"current": 1})["net0"]
    assert "net0" not in {p["key"]: p for p in client.ok("GET", "/nodes/pve/lxc/101/pending") if "pending" in p}


def test_transient_failures_of_a_poll(double, client):
    upid = client.create(101)["upid"]
    double.inject(596, "GET", r"/tasks/[^/]+/status$", times=1)
    double.inject("reset", "GET", r"/tasks/[^/]+/status$", times=1)
    path = f"/nodes/pve/tasks/{urllib.parse.quote(upid, safe='')}/status"
    status, body = client.call("GET", path)
    assert status == 596
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        client.call("GET", path)
    assert client.call("GET", path)[0] == 200  # only the next ones fail


def test_concurrent_id_claims_and_other_nodes(double, client):
    double.claim_next_ids = 1
    assert client.ok("GET", "/cluster/nextid") == "100"
    status, body = client.call("POST", "/nodes/pve/lxc", {"vmid": 100, "ostemplate": TEMPLATE})
    assert (status, body["message"]) == (500, "CT 100 already exists on node 'pve'\n")
    double.other_resources = [
        {"id": "qemu/300", "vmid": 300, "type": "qemu", "node": "pve", "name": "vm", "status": "running"},
        {"id": "lxc/400", "vmid": 400, "type": "lxc", "node": "pve2", "name": "ct", "status": "stopped"},
    ]
    resources = client.ok("GET", "/cluster/resources", {"type": "vm"})
    assert [(r["id"], r["node"]) for r in resources] == [("lxc/100", "pve"), ("qemu/300", "pve"), ("lxc/400", "pve2")]
