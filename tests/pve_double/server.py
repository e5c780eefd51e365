"""``PveDouble``: an HTTP test double of the Proxmox VE API for LXC containers.

Every request is checked against the official API schema first (``schema.Schema``): a call
Proxmox would refuse gets the same ``400 Parameter verification failed.`` with an
``errors`` object, and nothing happens. Valid calls the double implements change the
double's state (configs, status, snapshots, tasks) and tell a ``Realizer`` to make it real;
the long-running ones return a UPID at once and run in a task thread, so a client has to
poll ``/nodes/{node}/tasks/{upid}/status`` as it would against Proxmox.

Semantic errors follow pve-container/pve-manager: HTTP 500 with the Perl ``die`` text as
``message`` (for instance ``CT 101 already running\\n``), and errors found inside a task end
the task with ``exitstatus`` = that text and a last log line ``TASK ERROR: <text>``.

Locking follows Proxmox: create, destroy, start, stop and shutdown hold the container's
config lock (waited for up to 10 s, then "can't lock file ... got timeout") for the whole
task; snapshot, rollback and snapshot deletion hold it only to prepare and to commit, and in
between the config says ``lock: snapshot`` (``rollback``, ``snapshot-delete``), which makes
other calls fail at once with "CT is locked (snapshot)".

Plain HTTP by default; ``tls=True`` serves HTTPS with a self-signed certificate for
127.0.0.1 (``ca_file``), for clients such as proxmoxer that only speak HTTPS.

Modes a test switches on to meet what real clusters do (all off by default, except hotplug):

``set_access(...)`` / ``add_token(...)``
    rights per token, with ``privsep``: a call the schema's ``permissions`` (and pve-container's
    own checks) refuse is a 403 ``Permission check failed (/vms/101, VM.PowerMgmt)``, while list
    endpoints silently leave out what the token may not see; ``/access/permissions`` tells.
``storages`` / ``templates``
    which storages exist (type and content, see ``LVM_INSTALL``, ``ZFS_INSTALL``): create
    refuses a missing storage or one without ``rootdir`` content and a template that does not
    exist; storage without snapshots (``dir``, ``nfs``, ``lvm``) and bind mounts refuse snapshots.
``bridges``
    the bridges of the node: start fails as Proxmox does on a missing bridge, or on a ``tag=``
    for a bridge that is not VLAN-aware and has no physical port.
``make_ha_managed(vmid)``
    start/shutdown/stop answer ``hastart``/``hastop`` tasks that end once queued; the HA
    manager changes the state ``ha_delay`` seconds later; destroy needs ``purge``.
``hotplug = False``
    a config change on a running container stays pending (``GET .../config`` shows it,
    ``current=1`` does not) until the next start.
``inject(kind, method, path)``
    the next matching requests fail: ``"reset"`` (connection closed without an answer) or
    an HTTP status such as 595/596 (pveproxy could not reach the node).
``claim_next_ids``
    another creator claims each id the next N ``/cluster/nextid`` calls hand out.
``edit_after_get``
    another client edits the config right after each of the next N ``GET .../config``, so
    a PUT with that GET's ``digest`` is refused ("detected modified configuration").
``task_log_noise``
    every task first logs that many lines (a long log, as a create's or a backup's).
``other_resources``
    more entries for ``/cluster/resources``: other nodes' containers, QEMU VMs.
``set_guest_firewall(vmid, enable=1)``
    a guest's own firewall options, as an admin sets them (see ``guest_firewall.py``).

Simplifications: no 3 s delay on a 401, no pools or restore.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import itertools
import json
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .guest_firewall import GuestFirewall
from .schema import (
    FormatError,
    Schema,
    coerce,
    lookup_property,
    parse_property_string,
    parse_size,
    perl_str,
    print_property_string,
    split_list,
)

API_BASE = "/api2"
MAX_POST = 64 * 1024
MAC_PREFIX = "BC:24:11"  # Proxmox's OUI, the default datacenter mac_prefix
UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$"
)
OPERATIONS = ("create", "start", "shutdown", "stop", "destroy", "snapshot", "rollback", "delete_snapshot")
# Parameters of POST /nodes/{node}/lxc that are not container options (pve-container's create_vm).
CREATE_ONLY = {
    "node", "vmid", "ostemplate", "password", "ssh-public-keys", "storage", "start", "pool",
    "restore", "force", "unique", "ignore-unpack-errors", "bwlimit", "ha-managed", "unprivileged",
}
NOT_OPTIONS = {"node", "vmid", "delete", "revert", "digest"}
NEW_DISK_RE = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")
SNAPSHOT_STORAGE_TYPES = {"lvmthin", "zfspool", "rbd", "btrfs", "cephfs", "zfs"}  # dir, nfs, cifs, lvm: raw, none
LVM_INSTALL = {  # what the Proxmox installer sets up on ext4/xfs
    "local": {"type": "dir", "content": "backup,iso,vztmpl"},
    "local-lvm": {"type": "lvmthin", "content": "images,rootdir"},
}
ZFS_INSTALL = {  # on ZFS there is no local-lvm
    "local": {"type": "dir", "content": "backup,iso,vztmpl"},
    "local-zfs": {"type": "zfspool", "content": "images,rootdir"},
}
ALL_PRIVILEGES = (
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.Audit", "SDN.Audit", "SDN.Use", "Sys.Audit",
    "Sys.Modify", "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
)
OSTYPE_ALIASES = {"rockylinux": "centos", "almalinux": "centos", "arch": "archlinux", "opensuse-leap": "opensuse"}


# --------------------------------------------------------------------------- realizers


@runtime_checkable
class Realizer(Protocol):
    """Makes containers real (the project backs this with real LXC containers in a sandbox host).

    All methods may block for seconds; the task methods run inside task threads, while
    ``set_config`` and ``interfaces`` run inside the HTTP request (as in Proxmox, where
    ``PUT .../config`` and ``GET .../interfaces`` are synchronous). An exception ends the
    task (or the request, with HTTP 500) with ``str(exception)`` as the error.
    """

    def create(self, vmid: int, params: dict[str, Any]) -> None: ...
    def start(self, vmid: int) -> None: ...
    def shutdown(self, vmid: int, timeout: int) -> None: ...
    def stop(self, vmid: int) -> None: ...
    def destroy(self, vmid: int) -> None: ...
    def set_config(self, vmid: int, changes: dict[str, Any]) -> None: ...
    def snapshot(self, vmid: int, name: str) -> None: ...
    def rollback(self, vmid: int, name: str) -> None: ...
    def delete_snapshot(self, vmid: int, name: str) -> None: ...
    def interfaces(self, vmid: int) -> list[dict]: ...


class MemoryRealizer:
    """An in-memory Realizer: remembers what it was told, takes ``delay`` seconds per task call.

    ``calls``      every call, as ``(operation, vmid, ...)``
    ``containers`` vmid -> {"config": {...}, "running": bool, "snapshots": {name: config}}
    ``errors``     operation -> message or exception raised by every call of it (until removed)
    ``hold(op)``   returns an Event; calls of ``op`` block until it is set (for tests that
                   must see a task still running, without relying on timing)
    """

    TASK_OPERATIONS = OPERATIONS

    def __init__(self, delay: float = 0.05, *, subnet: str = "10.10.0", hold_timeout: float = 30.0):
        self.delay = delay
        self.subnet = subnet
        self.hold_timeout = hold_timeout
        self.calls: list[tuple[Any, ...]] = []
        self.containers: dict[int, dict[str, Any]] = {}
        self.errors: dict[str, BaseException | str] = {}
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, operation: str) -> threading.Event:
        gate = threading.Event()
        self._gates[operation] = gate
        return gate

    def calls_of(self, operation: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [c for c in self.calls if c[0] == operation]

    def _enter(self, operation: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((operation, *args))
        gate = self._gates.get(operation)
        if gate is not None and not gate.wait(self.hold_timeout):
            raise RuntimeError(f"{operation}: held for more than {self.hold_timeout}s")
        if operation in self.TASK_OPERATIONS and self.delay:
            time.sleep(self.delay)
        error = self.errors.get(operation)
        if error is not None:
            raise error if isinstance(error, BaseException) else RuntimeError(error)

    def _ct(self, vmid: int) -> dict[str, Any]:
        try:
            return self.containers[vmid]
        except KeyError:
            raise RuntimeError(f"container {vmid} does not exist") from None

    def create(self, vmid: int, params: dict[str, Any]) -> None:
        self._enter("create", vmid, dict(params))
        with self._lock:
            self.containers[vmid] = {"config": dict(params), "running": False, "snapshots": {}}

    def start(self, vmid: int) -> None:
        self._enter("start", vmid)
        with self._lock:
            self._ct(vmid)["running"] = True

    def shutdown(self, vmid: int, timeout: int) -> None:
        self._enter("shutdown", vmid, timeout)
        with self._lock:
            self._ct(vmid)["running"] = False

    def stop(self, vmid: int) -> None:
        self._enter("stop", vmid)
        with self._lock:
            self._ct(vmid)["running"] = False

    def destroy(self, vmid: int) -> None:
        self._enter("destroy", vmid)
        with self._lock:
            self.containers.pop(vmid, None)

    def set_config(self, vmid: int, changes: dict[str, Any]) -> None:
        self._enter("set_config", vmid, dict(changes))
        with self._lock:
            config = self._ct(vmid)["config"]
            for key, value in changes.items():
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = value

    def snapshot(self, vmid: int, name: str) -> None:
        self._enter("snapshot", vmid, name)
        with self._lock:
            ct = self._ct(vmid)
            ct["snapshots"][name] = copy.deepcopy(ct["config"])

    def rollback(self, vmid: int, name: str) -> None:
        self._enter("rollback", vmid, name)
        with self._lock:
            ct = self._ct(vmid)
            ct["config"] = copy.deepcopy(ct["snapshots"][name])
            ct["running"] = False

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self._enter("delete_snapshot", vmid, name)
        with self._lock:
            self._ct(vmid)["snapshots"].pop(name, None)

    def interfaces(self, vmid: int) -> list[dict]:
        self._enter("interfaces", vmid)
        with self._lock:
            config = dict(self._ct(vmid)["config"])
        result = [{"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"}]
        nets = sorted((int(k[3:]), v) for k, v in config.items() if re.fullmatch(r"net\d+", k))
        for index, value in nets:
            parts = dict(p.split("=", 1) for p in str(value).split(",") if "=" in p)
            iface: dict[str, Any] = {"name": parts.get("name", f"eth{index}"), "hwaddr": parts.get("hwaddr", "").lower()}
            ip = parts.get("ip", "")
            if "/" in ip:
                iface["inet"] = ip
            elif ip == "dhcp":
                iface["inet"] = f"{self.subnet}.{10 + (vmid + index) % 240}/24"
            if "/" in parts.get("ip6", ""):
                iface["inet6"] = parts["ip6"]
            result.append(iface)
        return result


# --------------------------------------------------------------------------- state


class ApiError(Exception):
    """An API answer other than 200: Proxmox's status, message and per-parameter errors."""

    def __init__(self, status: int, message: str = "", errors: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None


def param_error(errors: Mapping[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.\n", errors)


class TaskError(Exception):
    """A ``die`` inside a task: the task ends with this text."""


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    operation: str
    injected: str | None = None
    status: str = "running"
    exitstatus: str | None = None
    log: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Access:
    """A token's rights: with ``privsep`` only ``acl`` (path -> privileges, propagated to what is
    below the path) counts; without it, the user's rights (root@pam: everything)."""

    privsep: bool = False
    acl: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Fault:
    kind: str | int  # "reset" or an HTTP status
    method: str
    path: re.Pattern[str]
    times: int
    message: str = "Connection refused\n"  # the answer's message, for an HTTP status


@dataclass
class Container:
    vmid: int
    config: dict[str, Any]
    status: str = "stopped"
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float | None = None
    pid: int | None = None
    pending: dict[str, Any] = field(default_factory=dict)  # option -> new value (None: delete)
    ha: str | None = None  # HA-managed: the requested state ("started", "stopped")

    def with_pending(self) -> dict[str, Any]:
        merged = dict(self.config)
        for key, value in self.pending.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def digest(self) -> str:
        """SHA1 of the config "file" (as Proxmox's digest), so it changes with every write."""
        lines = [f"{k}: {v}" for k, v in sorted(self.config.items())]
        if self.pending:
            lines.append("[pve:pending]")
            lines.extend(f"{k}: {v}" for k, v in sorted(self.pending.items()))
        for name, snap in sorted(self.snapshots.items()):
            lines.append(f"[{name}]")
            lines.extend(f"{k}: {v}" for k, v in sorted(snap.items()) if k != "config")
            lines.extend(f"{k}: {v}" for k, v in sorted(snap["config"].items()))
        return hashlib.sha1(("\n".join(lines) + "\n").encode()).hexdigest()


def decode_urlencoded(data: str) -> dict[str, str | None]:
    """``PVE::APIServer::AnyEvent::decode_urlencoded``: pairs split on ``&`` and ``;``, a
    repeated key joined with NUL, and -- like Perl's ``split(/=/, $kv)`` -- only the text up
    to a second unencoded ``=`` kept as the value."""
    res: dict[str, str | None] = {}
    if not data:
        return res
    for kv in re.split(r"[&;]", data):
        pieces = kv.split("=")
        key = urllib.parse.unquote(pieces[0].replace("+", " "), errors="replace")
        value: str | None = None
        if len(pieces) > 1:
            value = urllib.parse.unquote(pieces[1].replace("+", " "), errors="replace")
            old = res.get(key)
            if old is not None:
                value = f"{old}\0{value}"
        res[key] = value
    return res


def _reason(message: str, status: int) -> str:
    first = (message or "").split("\n", 1)[0].strip()
    first = first.encode("latin-1", "replace").decode("latin-1")
    return first or http.HTTPStatus(status).phrase


# --------------------------------------------------------------------------- the double


class PveDouble(GuestFirewall):
    """A Proxmox VE API (``/api2/json``) for one node, backed by a Realizer.

    ``url``        ``http://127.0.0.1:PORT`` once started (API under ``/api2/json``, see ``api``);
                   ``https://`` with ``tls=True``, and then ``ca_file`` is the certificate
                   to trust (``port`` is the port alone, for clients such as proxmoxer)
    ``requests``   every request: {"method", "path" (below /api2/json), "params" (query and
                   body as sent), "status"}
    ``fail_next``  operation -> message: the next task of that operation ends with that
                   exitstatus without calling the realizer (``create``, ``start``,
                   ``shutdown``, ``stop``, ``destroy``, ``snapshot``, ``rollback``,
                   ``delete_snapshot``; also ``set_config`` and ``interfaces``, which then
                   answer HTTP 500 with the message)
    """

    def __init__(
        self,
        realizer: Realizer,
        node: str = "pve",
        token: tuple[str, str] = ("root@pam!proximity", "secret-uuid"),
        schema: Schema | None = None,
        *,
        lock_timeout: float = 10.0,
        tls: bool = False,
    ):
        self.realizer = realizer
        self.tls = tls
        self.ca_file: str | None = None  # with tls=True: the certificate to trust
        self.port: int | None = None
        self.node = node
        self.token = token
        self.schema = schema if schema is not None else Schema.load()
        self.lock_timeout = lock_timeout
        self.url: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.fail_next: dict[str, str] = {}
        # the modes (see the module docstring)
        self.secrets: dict[str, str] = {token[0]: token[1]}
        self.access: dict[str, Access] = {token[0]: Access()}
        self.storages: dict[str, dict[str, Any]] | None = None  # None: any storage, all content, snapshots
        self.templates: set[str] | None = None  # None: every template exists
        self.bridges: dict[str, dict[str, Any]] | None = None  # name -> {"ports": [...], "vlan_aware": bool}
        self.hotplug = True
        self.ha_delay = 0.3
        self.claim_next_ids = 0
        self.edit_after_get = 0
        self.task_log_noise = 0
        self.other_resources: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._local = threading.local()
        self._state = threading.RLock()
        self._cts: dict[int, Container] = {}
        self._tasks: dict[str, Task] = {}
        self._vm_locks: dict[int, threading.Lock] = {}
        self._pids = itertools.count(random.randint(0x1000, 0x8000))
        self._server: http.server.ThreadingHTTPServer | None = None
        self._timers: list[threading.Timer] = []
        self._serve_thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "/cluster/nextid"): self._nextid,
            ("GET", "/cluster/resources"): self._resources,
            ("GET", "/access/permissions"): self._permissions,
            ("GET", "/nodes/{node}/storage"): self._storage_list,
            ("GET", "/nodes/{node}/lxc/{vmid}/pending"): self._pending,
            ("GET", "/nodes/{node}/lxc/{vmid}/feature"): self._feature,
            ("GET", "/nodes/{node}/lxc"): self._list,
            ("POST", "/nodes/{node}/lxc"): self._create,
            ("DELETE", "/nodes/{node}/lxc/{vmid}"): self._destroy,
            ("GET", "/nodes/{node}/lxc/{vmid}/config"): self._get_config,
            ("PUT", "/nodes/{node}/lxc/{vmid}/config"): self._set_config,
            ("GET", "/nodes/{node}/lxc/{vmid}/status/current"): self._status,
            ("POST", "/nodes/{node}/lxc/{vmid}/status/start"): self._start,
            ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown"): self._shutdown,
            ("POST", "/nodes/{node}/lxc/{vmid}/status/stop"): self._stop,
            ("GET", "/nodes/{node}/lxc/{vmid}/snapshot"): self._list_snapshots,
            ("POST", "/nodes/{node}/lxc/{vmid}/snapshot"): self._snapshot,
            ("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"): self._rollback,
            ("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}"): self._delete_snapshot,
            ("GET", "/nodes/{node}/lxc/{vmid}/interfaces"): self._interfaces,
            ("GET", "/nodes/{node}/tasks/{upid}/status"): self._task_status,
            ("GET", "/nodes/{node}/tasks/{upid}/log"): self._task_log,
            ("GET", "/nodes/{node}/firewall/rules"): self._fw_rules,
            ("POST", "/nodes/{node}/firewall/rules"): self._fw_add,
            ("DELETE", "/nodes/{node}/firewall/rules/{pos}"): self._fw_delete,
            ("GET", "/cluster/firewall/options"): lambda p: {"enable": int(self.firewall_enabled), "policy_in": "DROP"},
            **self._guest_fw_routes(),
        }
        # The node's host firewall (host.fw): its rules, and who compiles them (pve-firewall's part).
        self.firewall_enabled = False
        self.host_rules: list[dict[str, Any]] = []
        self.on_host_rules: Callable[[list[dict[str, Any]]], None] | None = None
        self._create_props = self.schema.properties("POST", "/nodes/{node}/lxc")
        self._option_props = {
            k: v for k, v in self.schema.properties("PUT", "/nodes/{node}/lxc/{vmid}/config").items()
            if k not in NOT_OPTIONS
        }

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> PveDouble:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.double = self  # type: ignore[attr-defined]
        scheme = "http"
        if self.tls:
            cert, key = self_signed_certificate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            # the handshake happens on the first read, in the request's thread
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self.ca_file, scheme = cert, "https"
        self._server = server
        self.port = server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name="pve-double"
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._serve_thread is not None:
            self._serve_thread.join(5)
            self._serve_thread = None
        for timer in self._timers:
            timer.cancel()
            timer.join(self.lock_timeout + 5)
        for task in list(self._tasks.values()):
            if task.thread is not None:
                task.thread.join(self.lock_timeout + 5)

    def __enter__(self) -> PveDouble:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def api(self) -> str:
        """Base URL of the API, ``http://127.0.0.1:PORT/api2/json``."""
        return f"{self.url}{API_BASE}/json"

    @property
    def auth_header(self) -> str:
        """The ``Authorization`` header value proxmoxer would send for ``token``."""
        return f"PVEAPIToken={self.token[0]}={self.token[1]}"

    # ----------------------------------------------------------------- modes
    def add_token(self, token_id: str, secret: str, *, privsep: bool = True,
                  acl: Mapping[str, Any] | None = None) -> str:
        """Another API token; returns the Authorization header value for it."""
        self.secrets[token_id] = secret
        self.set_access(token_id, privsep=privsep, acl=acl)
        return f"PVEAPIToken={token_id}={secret}"

    def set_access(self, token_id: str | None = None, *, privsep: bool = True,
                   acl: Mapping[str, Any] | None = None) -> None:
        """Rights of ``token_id`` (default: the double's token): ``acl`` maps a path to privileges."""
        self.access[token_id or self.token[0]] = Access(privsep, {p: set(v) for p, v in (acl or {}).items()})

    def make_ha_managed(self, vmid: int) -> None:
        with self._state:
            ct = self._cts[vmid]
            ct.ha = "started" if ct.status == "running" else "stopped"

    def inject(self, kind: str | int, method: str = "GET", path: str = r"/tasks/[^/]+/status$",
               times: int = 1, message: str | None = None) -> None:
        """The next ``times`` requests matching ``method`` and the ``path`` regex (below /api2/json) fail;
        ``message`` is the answer's (e.g. ``Permission check failed (/vms/100, VM.Config.Network)``)."""
        self.faults.append(Fault(kind, method.upper(), re.compile(path), times, message or "Connection refused\n"))

    # ----------------------------------------------------------------- inspection
    def container(self, vmid: int) -> dict[str, Any] | None:
        """A copy of the double's state for ``vmid`` (config, status, snapshots), or None."""
        with self._state:
            ct = self._cts.get(vmid)
            if ct is None:
                return None
            return {"config": dict(ct.config), "status": ct.status, "snapshots": copy.deepcopy(ct.snapshots)}

    def task(self, upid: str) -> Task | None:
        with self._state:
            return self._tasks.get(upid)

    def wait_tasks(self, timeout: float = 10.0) -> bool:
        """Wait until every task so far has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        for task in list(self._tasks.values()):
            if not task.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # ----------------------------------------------------------------- HTTP entry
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, dict]:
        """One HTTP request -> (status, reason, JSON body); records it in ``requests``."""
        method = method.upper()
        split = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(split.path)
        rel = path
        m = re.search(rf"^{API_BASE}/+([a-z][a-z0-9]+)(/.*)?$", path)
        if m:
            rel = m.group(2) or "/"
        try:
            sent = self._params(method, split.query, headers, body)
        except ApiError:
            sent = {}
        fault = self._fault(method, rel)
        if fault is not None:
            self.requests.append({"method": method, "path": rel, "params": sent, "status": fault.kind})
            if fault.kind == "reset":
                return 0, "reset", {}
            return int(fault.kind), _reason(fault.message, int(fault.kind)), {"data": None, "message": fault.message}
        try:
            status, reason, payload = 200, "OK", self._dispatch(method, path, split.query, headers, body)
        except ApiError as exc:
            status, reason = exc.status, _reason(exc.message, exc.status)
            payload = {"data": None}
            if exc.status != 401:
                if exc.errors:
                    payload["errors"] = exc.errors
                payload["message"] = exc.message or http.HTTPStatus(exc.status).phrase
        except Exception as exc:  # a bug in the double: say so like Proxmox would
            status, reason = 500, _reason(str(exc), 500)
            payload = {"data": None, "message": f"internal error in the double: {exc!r}\n"}
        self.requests.append({"method": method, "path": rel, "params": sent, "status": status})
        return status, reason, payload

    def _fault(self, method: str, rel: str) -> Fault | None:
        with self._state:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path.search(rel):
                    fault.times -= 1
                    return fault
        return None

    def _params(self, method: str, query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if body and method not in ("POST", "PUT"):
            raise ApiError(501, f"Unexpected content for method '{method}'")
        if body:
            if len(body) > MAX_POST:
                raise ApiError(501, "for data too large")
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                try:
                    decoded = json.loads(body.decode("utf-8"))
                except ValueError as exc:
                    raise ApiError(501, f"malformed JSON string - {exc}") from None
                if not isinstance(decoded, dict):
                    raise ApiError(501, "JSON body is not an object")
                params = decoded
            elif ctype in ("", "application/x-www-form-urlencoded"):
                params = decode_urlencoded(body.decode("utf-8", "replace"))
            else:
                raise ApiError(506, f"upload 'Content-Type '{ctype}' not implemented")
        params.update(decode_urlencoded(query))
        params.pop("_dc", None)
        return params

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        header = headers.get("Authorization") or ""
        m = re.search(r"(?:^|\s)PVEAPIToken(?:=|\s)(.*)$", header)
        if not m:
            raise ApiError(401, "No ticket")
        tm = re.search(r"^(.+?)[=:](.+)$", m.group(1).strip())
        if not tm or self.secrets.get(tm.group(1)) != tm.group(2):
            raise ApiError(401, "authentication failure")
        self._local.token = tm.group(1)

    def _dispatch(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> dict:
        m = re.search(rf"^{API_BASE}/+([a-z][a-z0-9]+)(/.*)?$", path)
        if not path.startswith(API_BASE):
            raise ApiError(501, f"no such file '{path}'")
        if not m:
            raise ApiError(501, "no such uri")
        fmt, rel = m.group(1), m.group(2) or "/"
        self._check_auth(headers)
        if fmt != "json":
            raise ApiError(501, f"no formatter for uri {rel}, {fmt}")
        params = self._params(method, query, headers, body)
        found = self.schema.match(method, rel)
        if found is None:
            raise ApiError(501, f"Method '{method} {rel}' not implemented")
        template, path_params = found
        merged = {**params, **path_params}
        errors = self.schema.validate(method, template, merged)
        if errors:
            raise param_error(errors)
        handler = self._routes.get((method, template))
        if handler is None:
            raise ApiError(501, f"Method '{method} {template}' not implemented by the double",
                           {"path": "not implemented by the double"})
        node = path_params.get("node")
        if node is not None and node != self.node:
            raise ApiError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                "Name or service not known\n",
            )
        check = (self.schema.info(method, template).get("permissions") or {}).get("check")
        if check and check[0] == "perm":
            path = re.sub(r"\{(\w+)\}", lambda m: str(merged.get(m.group(1), "")), check[1])
            self._require(path, *check[2], any_="any" in check[3:])
        props = self.schema.properties(method, template)
        typed: dict[str, Any] = {}
        for key, value in merged.items():
            found_prop = lookup_property(props, key)
            typed[key] = coerce(value, found_prop[1]) if found_prop else value
        result = handler(typed)
        if isinstance(result, _WithTotal):
            return {"data": result.data, "total": result.total}
        return {"data": result}

    # ----------------------------------------------------------------- permissions
    def _rights(self) -> dict[str, set[str]] | None:
        """The caller's ACL, or None for every right."""
        token_id = getattr(self._local, "token", self.token[0])
        access = self.access.get(token_id) or Access(privsep=True)
        if not access.privsep and token_id.split("!")[0] == "root@pam":
            return None
        return access.acl

    def _allowed(self, path: str, *privileges: str, any_: bool = False) -> bool:
        rights = self._rights()
        if rights is None:
            return True

        def has(privilege: str) -> bool:
            return any(privilege in privs and (acl_path in ("/", path) or path.startswith(acl_path.rstrip("/") + "/"))
                       for acl_path, privs in rights.items())

        return any(map(has, privileges)) if any_ else all(map(has, privileges))

    def _require(self, path: str, *privileges: str, any_: bool = False) -> None:
        """``PVE::RPCEnvironment::check``: 403 naming the path and the privilege."""
        if any_:
            if not self._allowed(path, *privileges, any_=True):
                raise ApiError(403, f"Permission check failed ({path}, {'|'.join(privileges)})\n")
            return
        for privilege in privileges:
            if not self._allowed(path, privilege):
                raise ApiError(403, f"Permission check failed ({path}, {privilege})\n")

    def _require_networks(self, vmid: int, options: Mapping[str, Any]) -> None:
        """pve-container's check_ct_modify_config_perm for net[n]: VM.Config.Network, and SDN.Use on the bridge."""
        for key, value in options.items():
            if re.fullmatch(r"net\d+", key) and value is not None:
                self._require(f"/vms/{vmid}", "VM.Config.Network")
                bridge = re.search(r"(?:^|,)bridge=([^,]+)", str(value))
                if bridge:
                    self._require(f"/sdn/zones/localnetwork/{bridge.group(1)}", "SDN.Use")

    # ----------------------------------------------------------------- helpers
    def _ct_or_500(self, vmid: int) -> Container:
        ct = self._cts.get(vmid)
        if ct is None:
            raise ApiError(500, self._no_config(vmid))
        return ct

    def _no_config(self, vmid: int) -> str:
        return f"Configuration file 'nodes/{self.node}/lxc/{vmid}.conf' does not exist\n"

    def _load(self, vmid: int) -> Container:
        """``load_config`` inside a task: dies with Proxmox's message."""
        with self._state:
            ct = self._cts.get(vmid)
        if ct is None:
            raise TaskError(self._no_config(vmid))
        return ct

    @staticmethod
    def _check_lock(ct: Container, *, allow: tuple[str, ...] = ()) -> None:
        lock = ct.config.get("lock")
        if lock and lock not in allow:
            raise TaskError(f"CT is locked ({lock})\n")

    def _vm_lock(self, vmid: int) -> _Held:
        with self._state:
            lock = self._vm_locks.setdefault(vmid, threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise TaskError(f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout\n")
        return _Held(lock)

    def _random_mac(self) -> str:
        return MAC_PREFIX + "".join(f":{random.randrange(256):02X}" for _ in range(3))

    def _normalize(self, key: str, value: Any, vmid: int, storage: str, props: Mapping[str, Any],
                   used_disks: list[int]) -> Any:
        """A container option as Proxmox writes it to the config."""
        found = lookup_property(props, key)
        schema = found[1] if found else {}
        fmt = schema.get("format")
        if not isinstance(fmt, dict):
            return coerce(value, schema)
        try:
            data = parse_property_string(fmt, perl_str(value), key)
            if re.fullmatch(r"net\d+", key):
                data["type"] = "veth"
                if not data.get("hwaddr"):
                    data["hwaddr"] = self._random_mac()
            if key == "rootfs" or re.fullmatch(r"mp\d+", key):
                m = NEW_DISK_RE.search(perl_str(data.get("volume", "")))
                if m:
                    number = next(i for i in itertools.count() if i not in used_disks)
                    used_disks.append(number)
                    data["volume"] = f"{m.group(2) or storage}:vm-{vmid}-disk-{number}"
                    data["size"] = f"{m.group(3)}G"
            return print_property_string(data, fmt)
        except FormatError as exc:  # validated already; only print-time problems land here
            raise ApiError(400, "Parameter verification failed.\n", {key: f"invalid format - {exc}"}) from None

    def _vmstatus(self, ct: Container) -> dict[str, Any]:
        conf = ct.config
        rootfs_size = 0
        m = re.search(r"(?:^|,)size=([^,]+)", str(conf.get("rootfs", "")))
        if m:
            rootfs_size = parse_size(m.group(1)) or 0
        running = ct.status == "running"
        status: dict[str, Any] = {
            "vmid": ct.vmid,
            "name": conf.get("hostname", f"CT{ct.vmid}"),
            "status": ct.status,
            "type": "lxc",
            "maxmem": int(conf.get("memory", 512)) * 1024 * 1024,
            "maxswap": int(conf.get("swap", 512)) * 1024 * 1024,
            "maxdisk": rootfs_size,
            "cpus": conf.get("cores") or os.cpu_count() or 1,
            "cpu": 0,
            "mem": 0,
            "swap": 0,
            "disk": 0,
            "uptime": int(time.time() - ct.started) if running and ct.started else 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
        }
        if running and ct.pid:
            status["pid"] = ct.pid
        for key in ("lock", "tags"):
            if conf.get(key):
                status[key] = conf[key]
        if conf.get("template"):
            status["template"] = 1
        return status

    # ----------------------------------------------------------------- tasks
    def _spawn(self, operation: str, dtype: str, vmid: int, body: Callable[[Task], None]) -> str:
        with self._state:
            injected = self.fail_next.pop(operation, None)
            pid = next(self._pids)
            pstart = int(time.monotonic() * 100) & 0xFFFFFFFF
            starttime = int(time.time())
            user = self.token[0]
            upid = f"UPID:{self.node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{dtype}:{vmid}:{user}:"
            task = Task(upid, self.node, pid, pstart, starttime, dtype, str(vmid), user, operation, injected)
            self._tasks[upid] = task
            thread = threading.Thread(target=self._run_task, args=(task, body), daemon=True, name=upid)
            task.thread = thread
        thread.start()
        return upid

    def _run_task(self, task: Task, body: Callable[[Task], None]) -> None:
        error: str | None = None
        for n in range(self.task_log_noise):
            self._tlog(task, f"progress line {n + 1}")
        try:
            body(task)
        except Exception as exc:  # every die in a worker ends the task with its text
            error = str(exc).strip() or type(exc).__name__
        with self._state:
            if error is None:
                task.log.append("TASK OK")
                task.exitstatus = "OK"
            else:
                lines = f"TASK ERROR: {error}".split("\n")
                task.log.extend(lines)
                last = lines[-1]
                task.exitstatus = last[len("TASK ERROR: "):] if last.startswith("TASK ERROR: ") else "unexpected status"
            task.status = "stopped"
        task.done.set()

    def _tlog(self, task: Task, line: str) -> None:
        with self._state:
            task.log.append(line)

    def _realize(self, task: Task, operation: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the realizer, unless ``fail_next`` injected a failure for this task's operation."""
        if operation is not None and operation == task.operation and task.injected is not None:
            message, task.injected = task.injected, None
            raise TaskError(message)
        return fn(*args)

    # ----------------------------------------------------------------- handlers
    # ----------------------------------------------------------------- the host firewall
    def _fw_digest(self) -> str:
        return hashlib.sha1(json.dumps(self.host_rules, sort_keys=True).encode()).hexdigest()

    def _fw_rules(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        with self._state:
            digest = self._fw_digest()
            return [{**rule, "pos": pos, "digest": digest} for pos, rule in enumerate(self.host_rules)]

    def _fw_changed(self) -> None:
        if self.on_host_rules is not None:
            self.on_host_rules([dict(rule) for rule in self.host_rules])

    def _fw_add(self, p: dict[str, Any]) -> None:
        rule = {k: v for k, v in p.items() if k not in ("node", "pos", "digest")}
        if "action" not in rule and "macro" not in rule:
            raise param_error({"action": "property is missing and it is not optional"})
        with self._state:
            if p.get("digest") not in (None, self._fw_digest()):
                raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
            self.host_rules.insert(min(int(p.get("pos", len(self.host_rules))), len(self.host_rules)), rule)
            self._fw_changed()

    def _fw_delete(self, p: dict[str, Any]) -> None:
        with self._state:
            if p.get("digest") not in (None, self._fw_digest()):
                raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
            pos = int(p["pos"])
            if not 0 <= pos < len(self.host_rules):
                raise ApiError(500, f"no rule at position {pos}")
            del self.host_rules[pos]
            self._fw_changed()

    def _nextid(self, p: dict[str, Any]) -> str:
        with self._state:
            if p.get("vmid") is not None:
                if p["vmid"] in self._cts:
                    raise param_error({"vmid": f"VM {p['vmid']} already exists"})
                return str(p["vmid"])
            vmid = 100
            while vmid in self._cts:
                vmid += 1
            if self.claim_next_ids > 0:  # another creator (GUI, Terraform) takes the id before our caller
                self.claim_next_ids -= 1
                self._cts[vmid] = Container(vmid, {"hostname": f"other-{vmid}", "memory": 512, "swap": 512,
                                                   "rootfs": f"local:vm-{vmid}-disk-0,size=4G"})
            return str(vmid)

    def _list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        with self._state:  # only what the token may see: a token without rights gets [], not 403
            return [self._vmstatus(ct) for vmid, ct in sorted(self._cts.items()) if self._allowed(f"/vms/{vmid}", "VM.Audit")]

    def _resources(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if p.get("type") not in (None, "vm"):
            return []
        with self._state:
            result = []
            for vmid, ct in sorted(self._cts.items()):
                entry = {**self._vmstatus(ct), "id": f"lxc/{vmid}", "node": self.node}
                if ct.ha:
                    entry["hastate"] = ct.ha
                result.append(entry)
            result.extend(copy.deepcopy(self.other_resources))
        return [r for r in result if self._allowed(f"/vms/{r['vmid']}", "VM.Audit")]

    def _permissions(self, p: dict[str, Any]) -> dict[str, dict[str, int]]:
        rights = self._rights()
        if rights is None:
            granted = {"/": {privilege: 1 for privilege in ALL_PRIVILEGES}}
        else:
            granted = {path: {privilege: 1 for privilege in sorted(privs)} for path, privs in rights.items()}
        if p.get("path"):
            path = p["path"]
            return {path: {priv: 1 for priv in ALL_PRIVILEGES if self._allowed(path, priv)}}
        return granted

    def _storage_config(self) -> dict[str, dict[str, Any]]:
        if self.storages is not None:
            return self.storages
        # permissive: what is listed, and any other name, holds everything (and can snapshot)
        return {"local": {"type": "dir", "content": "backup,images,iso,rootdir,vztmpl"},
                "local-lvm": {"type": "lvmthin", "content": "images,rootdir"}}

    def _storage_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = set(split_list(p.get("content")))
        result = []
        for name, scfg in sorted(self._storage_config().items()):
            content = set(scfg["content"].split(","))
            if wanted and not wanted & content:
                continue
            if p.get("storage") and p["storage"] != name:
                continue
            if not self._allowed(f"/storage/{name}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True):
                continue
            result.append({"storage": name, "type": scfg["type"], "content": scfg["content"], "active": 1,
                           "enabled": 1, "shared": 0, "total": 100 << 30, "used": 10 << 30, "avail": 90 << 30})
        return result

    def _pending(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        with self._state:
            ct = self._ct_or_500(p["vmid"])
            result = []
            for key in sorted(set(ct.config) | set(ct.pending)):
                item: dict[str, Any] = {"key": key}
                if key in ct.config:
                    item["value"] = perl_str(ct.config[key])
                if key in ct.pending:
                    if ct.pending[key] is None:
                        item["delete"] = 1
                    else:
                        item["pending"] = perl_str(ct.pending[key])
                result.append(item)
            return result

    def _has_snapshots(self, ct: Container) -> bool:
        """``PVE::LXC::Config->has_feature('snapshot')``: every volume on storage that can snapshot, no bind mounts."""
        for key, value in ct.config.items():
            if key != "rootfs" and not re.fullmatch(r"mp\d+", key):
                continue
            volume = str(value).split(",", 1)[0]
            if volume.startswith("/"):
                return False  # a bind mount or a device
            if self.storages is not None:
                scfg = self.storages.get(volume.split(":", 1)[0])
                if scfg is None or scfg["type"] not in SNAPSHOT_STORAGE_TYPES:
                    return False
        return True

    def _feature(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._state:
            ct = self._ct_or_500(p["vmid"])
            has = self._has_snapshots(ct) if p["feature"] == "snapshot" else True
        return {"hasFeature": int(has), "nodes": [self.node]}

    def _create(self, p: dict[str, Any]) -> str:
        vmid = p["vmid"]
        if p.get("restore"):
            raise ApiError(501, "restore is not implemented by the double", {"restore": "not implemented by the double"})
        storage = p.get("storage") or "local"
        used_disks: list[int] = []
        self._require(f"/vms/{vmid}", "VM.Allocate")
        self._require_networks(vmid, p)
        rootfs_storage = str(p.get("rootfs", f"{storage}:4")).split(",", 1)[0].split(":", 1)[0]
        if self.storages is not None and not rootfs_storage.startswith("/"):
            scfg = self.storages.get(rootfs_storage)
            if scfg is None:  # PVE::Storage::storage_config
                raise ApiError(500, f"storage '{rootfs_storage}' does not exist\n")
            if "rootdir" not in scfg["content"].split(","):
                raise param_error({"storage": f"storage '{rootfs_storage}' does not support container directories"})
        if not rootfs_storage.startswith("/"):
            self._require(f"/storage/{rootfs_storage}", "Datastore.AllocateSpace")
        with self._state:
            if vmid in self._cts:
                raise ApiError(500, f"CT {vmid} already exists on node '{self.node}'\n")
            config: dict[str, Any] = {}
            rootfs = p.get("rootfs", f"{storage}:4")  # pve-container: "$storage:4", 4 GiB
            config["rootfs"] = self._normalize("rootfs", rootfs, vmid, storage, self._create_props, used_disks)
            for key, value in p.items():
                if key in CREATE_ONLY or key == "rootfs" or value is None:
                    continue
                config[key] = self._normalize(key, value, vmid, storage, self._create_props, used_disks)
            config.setdefault("arch", "amd64")
            config.setdefault("ostype", self._ostype(str(p["ostemplate"])))
            config.setdefault("hostname", f"CT{vmid}")
            config.setdefault("memory", 512)
            config.setdefault("swap", 512)
            if p.get("unprivileged"):
                config["unprivileged"] = 1
            ct = Container(vmid, {**config, "lock": "create"})
            self._cts[vmid] = ct
        realizer_params = {k: v for k, v in p.items() if k not in ("node", "vmid") and v is not None}
        realizer_params.update(config)
        start_after = bool(p.get("start"))

        def body(task: Task) -> None:
            with self._vm_lock(vmid):
                try:
                    if self.templates is not None and p["ostemplate"] not in self.templates:
                        raise TaskError(f"volume '{p['ostemplate']}' does not exist\n")
                    self._tlog(task, f"extracting archive '{p['ostemplate']}'")
                    self._realize(task, "create", self.realizer.create, vmid, realizer_params)
                    self._tlog(task, f"Detected container architecture: {config['arch']}")
                except BaseException:
                    with self._state:
                        if self._cts.get(vmid) is ct:
                            del self._cts[vmid]  # destroy_config after a failed create
                    raise
                with self._state:
                    ct.config.pop("lock", None)
            if start_after:
                self._do_start(task, vmid, skiplock=False)

        return self._spawn("create", "vzcreate", vmid, body)

    @staticmethod
    def _ostype(ostemplate: str) -> str:
        base = ostemplate.rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
        name = re.split(r"[-_]", base, maxsplit=1)[0]
        known = {"debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos"}
        name = OSTYPE_ALIASES.get(name, name)
        return name if name in known else "unmanaged"

    def _get_config(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("snapshot") and p.get("current"):
            message = "cannot use 'snapshot' parameter with 'current'"
            raise param_error({"snapshot": message, "current": message})
        with self._state:
            ct = self._ct_or_500(p["vmid"])
            if p.get("snapshot"):
                snap = ct.snapshots.get(p["snapshot"])
                if snap is None:
                    raise ApiError(500, f"snapshot '{p['snapshot']}' does not exist\n")
                result = dict(snap["config"])
                result.update({k: v for k, v in snap.items() if k not in ("config",) and v is not None})
            else:
                result = dict(ct.config) if p.get("current") else ct.with_pending()
            result["digest"] = ct.digest()
            if self.edit_after_get > 0 and not p.get("snapshot"):  # someone else, right after our read
                self.edit_after_get -= 1
                ct.config["description"] = f"edited elsewhere ({self.edit_after_get})"
            return result

    def _set_config(self, p: dict[str, Any]) -> None:
        vmid = p["vmid"]
        options = {k: v for k, v in p.items() if k not in ("node", "vmid", "digest")}
        if not options:
            raise ApiError(500, "no options specified\n")
        delete = split_list(options.pop("delete", None))
        revert = split_list(options.pop("revert", None))
        for opt in revert:
            if lookup_property(self._option_props, opt) is None:
                raise param_error({"revert": f"unknown option '{opt}'"})
            if options.get(opt) is not None:
                raise param_error({"revert": f"you can't use '-{opt}' and '-revert {opt}' at the same time"})
        for opt in delete:
            if lookup_property(self._option_props, opt) is None:
                raise param_error({"delete": f"unknown option '{opt}'"})
            if options.get(opt) is not None:
                raise param_error({"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"})
            if opt in revert:
                raise param_error({"delete": f"you can't use '-delete {opt}' and '-revert {opt}' at the same time"})
        self._require_networks(vmid, options)
        try:
            held = self._vm_lock(vmid)
        except TaskError as exc:
            raise ApiError(500, str(exc)) from None
        with held:
            with self._state:
                ct = self._ct_or_500(vmid)
                if ct.config.get("lock"):
                    raise ApiError(500, f"CT is locked ({ct.config['lock']})\n")
                if p.get("digest") and p["digest"] != ct.digest():
                    raise ApiError(500, "detected modified configuration - file changed by other user? Try again.\n")
                for opt in delete:
                    if opt in ("hostname", "memory", "rootfs"):
                        raise ApiError(500, f"unable to delete required option '{opt}'\n")
                storage = str(ct.config.get("rootfs", "local:")).split(":", 1)[0]
                used = [int(n) for n in re.findall(rf"vm-{vmid}-disk-(\d+)", json.dumps(ct.config))]
                changes: dict[str, Any] = {
                    k: self._normalize(k, v, vmid, storage, self._option_props, used)
                    for k, v in options.items() if v is not None
                }
                changes.update({opt: None for opt in delete if opt in ct.config})
            injected = self.fail_next.pop("set_config", None)
            with self._state:
                if ct.status == "running" and not self.hotplug:  # written as pending, applied at the next start
                    ct.pending.update(changes)
                    return None
            if changes:
                try:
                    if injected is not None:
                        raise TaskError(injected)
                    self.realizer.set_config(vmid, dict(changes))
                except Exception as exc:
                    raise ApiError(500, str(exc).rstrip("\n") + "\n") from None
            with self._state:
                for key, value in changes.items():
                    if value is None:
                        ct.config.pop(key, None)
                    else:
                        ct.config[key] = value
        return None

    def _status(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._state:
            ct = self._ct_or_500(p["vmid"])
            ha = {"managed": 1, "state": ct.ha} if ct.ha else {"managed": 0}
            return {**self._vmstatus(ct), "ha": ha}

    def _do_start(self, task: Task, vmid: int, *, skiplock: bool) -> None:
        with self._vm_lock(vmid):
            ct = self._load(vmid)
            if ct.config.get("template"):
                raise TaskError("you can't start a CT if it's a template\n")
            if not skiplock:
                self._check_lock(ct, allow=("mounted",))
            self._prepare_start(ct)
            self._realize(task, "start", self.realizer.start, vmid)
            self._running(ct)

    def _running(self, ct: Container) -> None:
        with self._state:
            ct.status, ct.started, ct.pid = "running", time.time(), random.randint(1000, 4_000_000)

    def _prepare_start(self, ct: Container) -> None:
        """Before lxc-start: pending changes are applied, then every net[n] is plugged into its bridge."""
        with self._state:
            pending, ct.pending = dict(ct.pending), {}
        if pending:
            self.realizer.set_config(ct.vmid, dict(pending))
            with self._state:
                ct.config = {**{k: v for k, v in ct.config.items() if k not in pending},
                             **{k: v for k, v in pending.items() if v is not None}}
        if self.bridges is None:
            return
        for key, value in sorted(ct.config.items()):
            if not re.fullmatch(r"net\d+", key):
                continue
            net = dict(part.split("=", 1) for part in str(value).split(",") if "=" in part)
            bridge = self.bridges.get(net.get("bridge", ""))
            if bridge is None:  # pve-common PVE::Network
                raise TaskError(f"bridge '{net.get('bridge')}' does not exist\n")
            if net.get("tag") and not bridge.get("vlan_aware") and not bridge.get("ports"):
                raise TaskError(f"no physical interface on bridge '{net['bridge']}'\n")

    # HA: pve-container hands start/stop of an HA-managed CT to ha-manager and returns at once.
    def _ha_request(self, vmid: int, state: str) -> str:
        dtype = "hastart" if state == "started" else "hastop"

        def body(task: Task) -> None:
            with self._state:
                self._cts[vmid].ha = state
            self._tlog(task, f"Requesting HA {'start' if state == 'started' else 'stop'} for CT {vmid}")
            timer = threading.Timer(self.ha_delay, self._ha_act, args=(vmid, state))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

        return self._spawn(dtype, dtype, vmid, body)

    def _ha_act(self, vmid: int, state: str) -> None:
        """What the HA manager does later: the real start or stop (an error puts the service in 'error')."""
        try:
            with self._vm_lock(vmid):
                ct = self._load(vmid)
                if state == "started" and ct.status != "running":
                    self._prepare_start(ct)
                    self.realizer.start(vmid)
                    self._running(ct)
                elif state == "stopped" and ct.status == "running":
                    self.realizer.shutdown(vmid, 60)
                    self._stopped(ct)
        except Exception:
            with self._state:
                if vmid in self._cts:
                    self._cts[vmid].ha = "error"

    def _start(self, p: dict[str, Any]) -> str:
        vmid = p["vmid"]
        with self._state:
            ct = self._cts.get(vmid)
            if ct is not None and ct.status == "running":
                raise ApiError(500, f"CT {vmid} already running\n")
        if ct is not None and ct.ha:
            return self._ha_request(vmid, "started")
        skiplock = bool(p.get("skiplock"))
        return self._spawn("start", "vzstart", vmid, lambda task: self._do_start(task, vmid, skiplock=skiplock))

    def _require_running(self, vmid: int) -> None:
        with self._state:
            ct = self._cts.get(vmid)
            if ct is None or ct.status != "running":
                raise ApiError(500, f"CT {vmid} not running\n")

    def _stopped(self, ct: Container) -> None:
        with self._state:
            ct.status, ct.started, ct.pid = "stopped", None, None

    def _shutdown(self, p: dict[str, Any]) -> str:
        vmid = p["vmid"]
        self._require_running(vmid)
        if self._cts[vmid].ha:
            return self._ha_request(vmid, "stopped")
        timeout = p.get("timeout")
        timeout = 60 if timeout is None else timeout
        force = bool(p.get("forceStop"))

        def body(task: Task) -> None:
            with self._vm_lock(vmid):
                ct = self._load(vmid)
                self._check_lock(ct)
                try:
                    self._realize(task, "shutdown", self.realizer.shutdown, vmid, timeout)
                except Exception as exc:
                    if not force:
                        raise
                    self._tlog(task, f"shutdown failed ({str(exc).strip()}) - stopping container")
                    self.realizer.stop(vmid)
                self._stopped(ct)

        return self._spawn("shutdown", "vzshutdown", vmid, body)

    def _stop(self, p: dict[str, Any]) -> str:
        vmid = p["vmid"]
        self._require_running(vmid)
        if self._cts[vmid].ha:
            return self._ha_request(vmid, "stopped")
        skiplock = bool(p.get("skiplock"))

        def body(task: Task) -> None:
            with self._vm_lock(vmid):
                ct = self._load(vmid)
                if not skiplock:
                    self._check_lock(ct, allow=("mounted",))
                self._realize(task, "stop", self.realizer.stop, vmid)
                self._stopped(ct)

        return self._spawn("stop", "vzstop", vmid, body)

    def _destroy(self, p: dict[str, Any]) -> str:
        vmid = p["vmid"]
        force = bool(p.get("force"))
        running_msg = f"unable to destroy CT {vmid} - container is running\n"
        with self._state:
            ct = self._ct_or_500(vmid)
            if ct.config.get("protection"):
                raise ApiError(500, f"can't remove CT {vmid} - protection mode enabled\n")
            if ct.ha and not p.get("purge"):
                raise ApiError(500, f"unable to remove CT {vmid} - used in HA resources and purge parameter not set.\n")
            if ct.status == "running" and not force:
                raise ApiError(500, running_msg)

        def body(task: Task) -> None:
            with self._vm_lock(vmid):
                ct = self._load(vmid)
                self._check_lock(ct)
                if ct.status == "running":
                    if not force:
                        raise TaskError(running_msg)
                    self.realizer.stop(vmid)
                    self._stopped(ct)
                self._realize(task, "destroy", self.realizer.destroy, vmid)
                with self._state:
                    if self._cts.get(vmid) is ct:
                        del self._cts[vmid]
                self._guest_fw_destroyed(vmid)

        return self._spawn("destroy", "vzdestroy", vmid, body)

    def _list_snapshots(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        with self._state:
            ct = self._ct_or_500(p["vmid"])
            result = []
            for name, snap in ct.snapshots.items():
                item = {"name": name, "snaptime": snap.get("snaptime") or 0, "description": snap.get("description") or ""}
                if snap.get("parent") is not None:
                    item["parent"] = snap["parent"]
                if snap.get("snapstate"):
                    item["snapstate"] = snap["snapstate"]
                result.append(item)
            current = {"name": "current", "digest": ct.digest(), "running": int(ct.status == "running"),
                       "description": "You are here!"}
            if ct.config.get("parent") is not None:
                current["parent"] = ct.config["parent"]
            result.append(current)
            return result

    def _snapshot(self, p: dict[str, Any]) -> str:
        vmid, name = p["vmid"], p["snapname"]
        for reserved in ("current", "vzdump"):
            if name == reserved:
                raise ApiError(500, f"unable to use snapshot name '{reserved}' (reserved name)\n")
        description = p.get("description")

        # Like pve-container: prepare and commit under the config flock, the storage work in
        # between protected only by "lock: snapshot" (so other calls fail fast, not wait).
        def body(task: Task) -> None:
            with self._vm_lock(vmid):
                ct = self._load(vmid)
                with self._state:
                    self._check_lock(ct)
                    if name in ct.snapshots:
                        raise TaskError(f"snapshot name '{name}' already used\n")
                    if not self._has_snapshots(ct):
                        raise TaskError("snapshot feature is not available\n")
                    saved = {k: v for k, v in ct.config.items() if k not in ("lock", "parent")}
                    snap: dict[str, Any] = {"config": saved, "snapstate": "prepare", "snaptime": int(time.time())}
                    if ct.config.get("parent") is not None:
                        snap["parent"] = ct.config["parent"]
                    if description:
                        snap["description"] = description
                    ct.snapshots[name] = snap
                    ct.config["lock"] = "snapshot"
            try:
                self._realize(task, "snapshot", self.realizer.snapshot, vmid, name)
            except BaseException:
                with self._vm_lock(vmid), self._state:
                    ct.snapshots.pop(name, None)
                    ct.config.pop("lock", None)
                raise
            with self._vm_lock(vmid), self._state:
                snap.pop("snapstate", None)
                ct.config.pop("lock", None)
                ct.config["parent"] = name

        return self._spawn("snapshot", "vzsnapshot", vmid, body)

    def _lock_for_snapshot(self, vmid: int, name: str, lock: str,
                           snapstate: str | None = None) -> tuple[Container, dict[str, Any]]:
        """Take ``lock`` on a CT for work on its snapshot ``name``, as pve-container does first."""
        with self._vm_lock(vmid):
            ct = self._load(vmid)
            with self._state:
                snap = ct.snapshots.get(name)
                if snap is None:
                    raise TaskError(f"snapshot '{name}' does not exist\n")
                self._check_lock(ct)
                if snapstate:
                    snap["snapstate"] = snapstate
                ct.config["lock"] = lock
        return ct, snap

    def _rollback(self, p: dict[str, Any]) -> str:
        vmid, name = p["vmid"], p["snapname"]
        start_after = bool(p.get("start"))

        def body(task: Task) -> None:
            ct, snap = self._lock_for_snapshot(vmid, name, "rollback")
            if ct.status == "running":  # pve-container stops the CT before rolling back
                self.realizer.stop(vmid)
                self._stopped(ct)
            # A failed rollback leaves "lock: rollback" behind, as in Proxmox.
            self._realize(task, "rollback", self.realizer.rollback, vmid, name)
            with self._vm_lock(vmid), self._state:
                ct.config = {**copy.deepcopy(snap["config"]), "parent": name}
            if start_after:
                self._do_start(task, vmid, skiplock=False)

        return self._spawn("rollback", "vzrollback", vmid, body)

    def _delete_snapshot(self, p: dict[str, Any]) -> str:
        vmid, name = p["vmid"], p["snapname"]
        force = bool(p.get("force"))

        def body(task: Task) -> None:
            ct, snap = self._lock_for_snapshot(vmid, name, "snapshot-delete", snapstate="delete")
            try:
                self._realize(task, "delete_snapshot", self.realizer.delete_snapshot, vmid, name)
            except BaseException:
                if not force:
                    with self._vm_lock(vmid), self._state:
                        snap.pop("snapstate", None)
                        ct.config.pop("lock", None)
                    raise
            with self._vm_lock(vmid), self._state:
                parent = snap.get("parent")
                for other in ct.snapshots.values():
                    if other.get("parent") == name:
                        if parent is None:
                            other.pop("parent", None)
                        else:
                            other["parent"] = parent
                if ct.config.get("parent") == name:
                    if parent is None:
                        ct.config.pop("parent", None)
                    else:
                        ct.config["parent"] = parent
                del ct.snapshots[name]
                ct.config.pop("lock", None)

        return self._spawn("delete_snapshot", "vzdelsnapshot", vmid, body)

    def _interfaces(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        vmid = p["vmid"]
        with self._state:
            self._ct_or_500(vmid)
        self._require_running(vmid)
        injected = self.fail_next.pop("interfaces", None)
        try:
            if injected is not None:
                raise TaskError(injected)
            raw = self.realizer.interfaces(vmid)
        except Exception as exc:
            raise ApiError(500, str(exc).rstrip("\n") + "\n") from None
        return [_full_interface(i) for i in raw]

    def _task_status(self, p: dict[str, Any]) -> dict[str, Any]:
        upid = p["upid"]
        m = UPID_RE.search(upid)
        if not m:
            raise ApiError(500, f"unable to parse worker upid '{upid}'\n")
        with self._state:
            task = self._tasks.get(upid)
            if task is None:
                result: dict[str, Any] = {
                    "upid": upid, "node": m.group(1), "pid": int(m.group(3), 16), "pstart": int(m.group(4), 16),
                    "starttime": int(m.group(5), 16), "type": m.group(6), "id": m.group(7), "user": m.group(8),
                    "status": "stopped", "exitstatus": "unable to open file - No such file or directory",
                }
            else:
                result = {
                    "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                    "starttime": task.starttime, "type": task.type, "id": task.id, "user": task.user,
                    "status": task.status,
                }
                if task.status == "stopped":
                    result["exitstatus"] = task.exitstatus
        if "!" in result["user"]:
            result["user"], result["tokenid"] = result["user"].split("!", 1)
        return result

    def _task_log(self, p: dict[str, Any]) -> _WithTotal:
        upid = p["upid"]
        if not UPID_RE.search(upid):
            raise ApiError(500, f"unable to parse worker upid '{upid}'\n")
        start = p.get("start") or 0
        limit = p.get("limit")
        limit = 50 if limit is None else limit
        with self._state:
            task = self._tasks.get(upid)
            if task is None:
                return _WithTotal([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)
            lines = list(task.log)
        if not lines:
            return _WithTotal([{"n": 1, "t": "no content"}], 1)
        chosen = lines[start:] if limit == 0 else lines[start:start + limit]
        return _WithTotal([{"n": start + i + 1, "t": t} for i, t in enumerate(chosen)], len(lines))


@dataclass
class _WithTotal:
    data: Any
    total: int


class _Held:
    def __init__(self, lock: threading.Lock):
        self._lock = lock

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


def _full_interface(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in the keys PVE's ``GET .../interfaces`` always returns (``hardware-address``, ``ip-addresses``)."""
    iface = dict(raw)
    iface.setdefault("hwaddr", "")
    iface.setdefault("hardware-address", iface["hwaddr"])
    if "ip-addresses" not in iface:
        addresses = []
        for key, kind in (("inet", "inet"), ("inet6", "inet6")):
            if iface.get(key):
                address, _, prefix = str(iface[key]).partition("/")
                entry: dict[str, Any] = {"ip-address": address, "ip-address-type": kind}
                if prefix.isdigit():
                    entry["prefix"] = int(prefix)
                addresses.append(entry)
        iface["ip-addresses"] = addresses
    return iface


_CERTIFICATE: tuple[str, str] | None = None
_CERTIFICATE_LOCK = threading.Lock()


def self_signed_certificate() -> tuple[str, str]:
    """(cert, key) files for 127.0.0.1/localhost, made once per process with the openssl CLI."""
    global _CERTIFICATE
    with _CERTIFICATE_LOCK:
        if _CERTIFICATE is None:
            openssl = shutil.which("openssl")
            if openssl is None:
                raise RuntimeError("PveDouble(tls=True) needs the openssl command to make a certificate")
            directory = tempfile.mkdtemp(prefix="pve-double-tls-")
            cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                check=True, capture_output=True,
            )
            _CERTIFICATE = (cert, key)
        return _CERTIFICATE


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up or fails the TLS handshake is no error of the double's
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        double: PveDouble = self.server.double  # type: ignore[attr-defined]
        status, reason, payload = double.handle(self.command, self.path, self.headers, body)
        if status == 0:  # an injected connection reset: close with RST, no answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        raw = json.dumps(payload).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass
