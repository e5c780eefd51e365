"""The Proxmox VE backend: the real API through proxmoxer, with an API token.

It handles the ways a real cluster fails (pve-container's ``API2/LXC.pm``, ``LXC.pm``,
``LXC/Config.pm``):

- ``/cluster/nextid`` reserves nothing: a create that loses the id to another creator is
  retried with a fresh id, a bounded number of times;
- every task (UPID) is followed to its end; one failed poll (pveproxy restarting: connection
  reset, 595/596) is retried; a failed task shows its exit status and its log's last lines,
  the ``TASK ERROR`` line always among them; a timeout says that the task goes on in Proxmox;
- HA-managed containers answer start and shutdown with ``hastart``/``hastop`` tasks that end
  once the request is queued: the backend then waits for the real state;
- every config PUT carries the ``digest`` of the GET it is based on;
- a config ``lock`` (backup, snapshot, migrate, ...) is named in the error, with what to do;
- a 403 names the privilege and the path; a privilege-separated token's rights are checked
  once, through ``/access/permissions``, because such a token gets empty lists, not 403s.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

from proxmoxer.core import ResourceException
from requests.exceptions import SSLError

from proximity.containers.base import (BackendError, Container, ContainerLocked, ContainerNotFound, ContainerSpec, Net0,
                                      StillRunning)
from proximity.errors import InputError, ProxmoxError
from proximity.proxmox_client import connect, split_token_id, system_trust_store, tls_hint  # noqa: F401

ROLE_HINT = "grant them with the role commands in the README (section 'Proxmox permissions')"
# What Proximity needs, as (path, privileges); "{storage}" and "{bridge}" are filled in.
REQUIRED_PRIVILEGES = (
    ("/vms", ("VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory",
              "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback")),
    ("/storage/{storage}", ("Datastore.AllocateSpace", "Datastore.Audit")),
    ("/sdn/zones/localnetwork/{bridge}", ("SDN.Use",)),
)
ID_TAKEN = re.compile(r"\b(CT|VM) \d+ already exists|config file already exists")
LOCKED = re.compile(r"CT is locked \((\S+)\)")
DIGEST_MISMATCH = "detected modified configuration"
NO_CONFIG = re.compile(r"Configuration file 'nodes/[^/']+/lxc/\d+\.conf' does not exist")
TRANSIENT_STATUS = (502, 503, 595, 596)  # pveproxy restarting, or it could not reach the node


class ProxmoxBackendError(ProxmoxError, BackendError):
    """A Proxmox request or task failed; the message carries Proxmox's own words."""


class ProxmoxContainerNotFound(ContainerNotFound, ProxmoxBackendError):
    """Proxmox has no such container on this node (its answer: the config file does not exist)."""


class TaskFailed(ProxmoxBackendError):
    """A task ended with an error; the message ends with its log's last lines (``TASK ERROR: ...``)."""

    def __init__(self, message: str, upid: str, exitstatus: str):
        super().__init__(message)
        self.upid, self.exitstatus = upid, exitstatus


class TaskTimeout(ProxmoxBackendError, StillRunning):
    """We stopped waiting; the task itself goes on in Proxmox (nothing may be undone that would race it)."""

    def __init__(self, message: str, upid: str):
        super().__init__(message)
        self.upid = upid


class PermissionDenied(ProxmoxBackendError):
    """Proxmox answered 403, or the token lacks rights (named in the message)."""


def lock_error(vmid: int | None, text: str) -> ContainerLocked | None:
    m = LOCKED.search(text)
    return ContainerLocked(vmid, m.group(1)) if m else None


@dataclass(frozen=True)
class ProxmoxConfig:
    host: str
    node: str
    token_id: str  # "user@realm!tokenname"
    token_secret: str
    bridge: str  # the managed bridge: settings.bridge
    port: int = 8006
    verify_tls: bool = True
    ca_file: str | None = None  # a CA to trust besides the system store (Proxmox's own, self-signed)
    storage: str = "local-lvm"
    template: str | None = None  # e.g. "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    task_timeout: float = 300.0
    create_timeout: float = 3600.0  # a create is followed to its end: undoing it earlier would race it
    id_attempts: int = 5  # creates that lost their id to another creator, then give up
    poll_retries: int = 10  # failed task polls in a row (pveproxy restarting), then give up


class ProxmoxBackend:
    name = "proxmox"

    def __init__(self, config: ProxmoxConfig, api: Any | None = None):
        self.config = config
        split_token_id(config.token_id)  # a wrong token id is refused even with an api given
        self.api = api or connect(config.host, config.port, config.token_id, config.token_secret,
                                  verify_tls=config.verify_tls, ca_file=config.ca_file, timeout=30)
        self.node = self.api.nodes(config.node)
        self._rights_checked = False

    # -- the interface -------------------------------------------------------------
    def next_id(self) -> int:
        return int(self._call(lambda: self.api.cluster.nextid.get()))

    def create(self, spec: ContainerSpec) -> Container:
        self.check_rights()
        template = spec.template or self.config.template
        if not template:
            raise InputError("no container template: pass --template or set proxmox_template in the settings")
        self._check_storage()
        params = {
            "hostname": spec.hostname, "ostemplate": template, "net0": spec.net0, "memory": spec.memory,
            "cores": spec.cores, "unprivileged": 1, "features": "nesting=1", "storage": self.config.storage,
        }
        for attempt in itertools.count(1):
            vmid = spec.vmid or self.next_id()
            try:
                upid = self._call(lambda: self.node.lxc.post(vmid=vmid, **params))
                break
            except ProxmoxBackendError as exc:
                # nextid reserves nothing: another creator (GUI, Terraform, a second job) took the id
                if spec.vmid is not None or not ID_TAKEN.search(str(exc)) or attempt >= self.config.id_attempts:
                    raise
        self._follow(upid, f"create CT {vmid} ({spec.hostname})", self.config.create_timeout)
        return self.status(vmid)

    def start(self, vmid: int) -> None:
        self._task(lambda: self.node.lxc(vmid).status.start.post(), f"start CT {vmid}", vmid, "running")

    def shutdown(self, vmid: int, timeout: float = 30) -> None:
        """A clean shutdown; fails with "container did not stop" if it takes longer than ``timeout``."""
        self._task(lambda: self.node.lxc(vmid).status.shutdown.post(timeout=int(timeout)),
                   f"shut down CT {vmid}", vmid, "stopped")

    def stop(self, vmid: int) -> None:
        self._task(lambda: self.node.lxc(vmid).status.stop.post(), f"stop CT {vmid}", vmid, "stopped")

    def destroy(self, vmid: int) -> None:
        # purge: no backup job, replication job or HA resource keeps pointing at the id
        self._task(lambda: self.node.lxc(vmid).delete(**{"purge": 1, "destroy-unreferenced-disks": 1}),
                   f"destroy CT {vmid}")

    def status(self, vmid: int) -> Container:
        current = self._call(lambda: self.node.lxc(vmid).status.current.get(), vmid)
        config = self._call(lambda: self.node.lxc(vmid).config.get(), vmid)
        return Container(vmid, config.get("hostname", current.get("name", "")), current["status"],
                         config.get("net0", ""), self.name, lock=config.get("lock"))

    def list(self) -> list[Container]:
        """Every container on this node, from one cluster-wide call (so none can vanish between calls).

        ``net0`` is not part of that answer: it is left empty (read it with ``get_net0``).
        """
        self.check_rights()
        found = []
        for entry in self._call(lambda: self.api.cluster.resources.get(type="vm")):
            if entry.get("type") != "lxc" or entry.get("node") != self.config.node:
                continue  # QEMU VMs, and containers on other nodes
            found.append(Container(int(entry["vmid"]), entry.get("name", ""), entry.get("status", "unknown"), "",
                                   self.name, lock=entry.get("lock")))
        return sorted(found, key=lambda c: c.vmid)

    def get_net0(self, vmid: int) -> str:
        return self._call(lambda: self.node.lxc(vmid).config.get(), vmid).get("net0", "")

    def set_net0(self, vmid: int, value: str) -> None:
        """Write net0 with the digest of the config it is based on; one retry after a concurrent edit."""
        for attempt in (1, 2):
            config = self._call(lambda: self.node.lxc(vmid).config.get(), vmid)
            if config.get("lock"):
                raise ContainerLocked(vmid, config["lock"])
            try:
                result = self._call(lambda: self.node.lxc(vmid).config.put(net0=value, digest=config["digest"]), vmid)
            except ProxmoxBackendError as exc:
                if DIGEST_MISMATCH in str(exc) and attempt == 1:
                    continue  # someone else wrote the config in between: read it again, check again
                if DIGEST_MISMATCH in str(exc):
                    raise ProxmoxBackendError(
                        f"net0 of CT {vmid} not changed: its config was changed by someone else twice while "
                        "Proximity wrote it. Check who edits it (GUI, another tool), then run the command again"
                    ) from None
                raise
            if isinstance(result, str) and result.startswith("UPID:"):
                self._follow(result, f"set net0 of CT {vmid}")
            break
        # GET .../config shows pending values; current=1 shows what is in effect
        applied = self._call(lambda: self.node.lxc(vmid).config.get(current=1), vmid).get("net0", "")
        have = {k: v.lower() for k, v in Net0.parse(applied).options.items()}
        if any(have.get(k) != v.lower() for k, v in Net0.parse(value).options.items()):
            raise ProxmoxBackendError(
                f"net0 of CT {vmid} was written but is not in effect (pending: the container is running and "
                f"Proxmox could not hot-plug it); it is still {applied!r}. Stop the container and try again"
            )

    def guest_firewall(self, vmid: int) -> dict[str, Any]:
        """The guest firewall's options that are set (``/etc/pve/firewall/VMID.fw``; unset: Proxmox's defaults)."""
        return self._call(lambda: self.node.lxc(vmid).firewall.options.get(), vmid)

    def allow_guest_dhcp(self, vmid: int) -> None:
        """Set the guest firewall's ``dhcp`` option to 1 and nothing else (never ``enable``: that is the admin's)."""
        self._call(lambda: self.node.lxc(vmid).firewall.options.put(dhcp=1), vmid)

    def can_snapshot(self, vmid: int) -> bool:
        """False for storage without snapshots (dir, NFS raw) and for bind mounts."""
        answer = self._call(lambda: self.node.lxc(vmid).feature.get(feature="snapshot"), vmid)
        return bool(answer.get("hasFeature"))

    def snapshot(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot.post(snapname=name), f"snapshot CT {vmid} as {name}")

    def rollback(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot(name).rollback.post(), f"roll CT {vmid} back to {name}")

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot(name).delete(), f"delete snapshot {name} of CT {vmid}")

    # -- checks before acting ------------------------------------------------------
    def check_rights(self) -> None:
        """Once per backend: does the token hold what Proximity needs? (A privilege-separated token
        with no rights gets empty lists instead of 403s, so this is the only way to tell.)"""
        if self._rights_checked:
            return
        granted: dict[str, dict[str, Any]] = self._call(lambda: self.api.access.permissions.get())
        missing = []
        for template, privileges in REQUIRED_PRIVILEGES:
            path = template.format(storage=self.config.storage, bridge=self.config.bridge)
            lacking = [p for p in privileges if not _holds(granted, path, p)]
            if lacking:
                missing.append(f"{', '.join(lacking)} on {path}")
        if missing:
            raise PermissionDenied(
                f"the Proxmox token {self.config.token_id} lacks {'; '.join(missing)}. A token with privilege "
                f"separation has only the rights given to the token itself: {ROLE_HINT}"
            )
        self._rights_checked = True

    def _check_storage(self) -> None:
        storages = self._call(lambda: self.node.storage.get())
        usable = sorted(s["storage"] for s in storages if "rootdir" in str(s.get("content", "")).split(","))
        found = next((s for s in storages if s["storage"] == self.config.storage), None)
        if found is not None and self.config.storage in usable:
            return
        why = "does not exist" if found is None else "does not hold container root disks (content 'rootdir')"
        choices = f"storages that would work: {', '.join(usable)}" if usable else (
            "no storage on this node holds 'rootdir' content: enable it under Datacenter > Storage")
        raise InputError(f"setting proxmox_storage: storage {self.config.storage!r} {why} on node "
                         f"{self.config.node}; {choices}. Set PROXIMITY_PROXMOX_STORAGE to one of them")

    # -- plumbing ------------------------------------------------------------------
    def _call(self, request, vmid: int | None = None):
        try:
            return request()
        except Exception as exc:
            raise self._error(exc, vmid) from None

    def _error(self, exc: Exception, vmid: int | None) -> Exception:
        """Proximity's error for a failed request, in Proxmox's words and with what to do."""
        if isinstance(exc, SSLError):
            return ProxmoxBackendError(tls_hint(self.config.host, self.config.port, self.config.ca_file, exc))
        if not isinstance(exc, ResourceException):  # connection, TLS, timeout: say where we tried to go
            return ProxmoxBackendError(
                f"cannot talk to Proxmox at {self.config.host}:{self.config.port}: {exc}. Check the host, "
                "the token, and TLS (proxmox_ca_file for a self-signed certificate)"
            )
        errors = getattr(exc, "errors", None)
        detail = f" ({'; '.join(f'{k}: {v}' for k, v in errors.items())})" if errors else ""
        text = f"{exc.status_code} {exc.content}{detail}"
        if exc.status_code == 403:
            return PermissionDenied(
                f"Proxmox refused the request: {text}. The token {self.config.token_id} lacks the privilege "
                f"named there, on that path: {ROLE_HINT}"
            )
        if NO_CONFIG.search(str(exc.content)):
            return ProxmoxContainerNotFound(f"Proxmox has no CT {vmid} on node {self.config.node} ({text.strip()})",
                                            fix="see `proximity ct list`")
        return lock_error(vmid, str(exc.content)) or ProxmoxBackendError(f"Proxmox refused the request: {text}")

    def _task(self, request, what: str, vmid: int | None = None, state: str | None = None) -> None:
        upid = self._call(request, vmid)
        self._follow(upid, what)
        if state is not None and _task_type(upid) in ("hastart", "hastop"):
            self._wait_state(vmid, state, what)

    def _wait_state(self, vmid: int, state: str, what: str) -> None:
        """HA tasks end when the request is queued; the HA manager acts later. Wait for the state itself."""
        deadline = time.monotonic() + self.config.task_timeout
        delay = 0.05
        while self._poll(lambda: self.node.lxc(vmid).status.current.get())["status"] != state:
            if time.monotonic() > deadline:
                raise TaskTimeout(
                    f"{what}: CT {vmid} is HA-managed; the HA manager did not make it {state} within "
                    f"{self.config.task_timeout:.0f} s (see `ha-manager status` on the host). Nothing was undone",
                    "",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _poll(self, request):
        """A read that survives failures in a row: pveproxy restarting resets connections or answers 595/596."""
        for failures in itertools.count(1):
            try:
                return request()
            except Exception as exc:
                transient = not isinstance(exc, ResourceException) or exc.status_code in TRANSIENT_STATUS
                if not transient or failures > self.config.poll_retries:
                    raise self._error(exc, None) from None
            time.sleep(min(0.05 * 2 ** failures, 2.0))

    def _follow(self, upid: str, what: str, timeout: float | None = None) -> None:
        timeout = self.config.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self._poll(lambda: self.node.tasks(upid).status.get())
            if status.get("status") == "stopped":
                break
            if time.monotonic() > deadline:
                raise TaskTimeout(
                    f"{what}: task {upid} still running after {timeout:.0f} s. A timeout does not stop a Proxmox "
                    "task: it goes on (see Tasks in the GUI). Nothing was undone, as that would race it "
                    "('CT is locked')", upid,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        exit_status = status.get("exitstatus", "")
        if exit_status == "OK" or exit_status.startswith("WARNINGS"):
            return
        raise self._task_failed(upid, what, exit_status)

    def _task_failed(self, upid: str, what: str, exit_status: str) -> ProxmoxBackendError | ContainerLocked:
        vmid = _task_vmid(upid)
        locked = lock_error(vmid, exit_status)
        if locked is not None:
            return locked
        try:  # limit=0 reads to the end (PVE::Tools::dump_logfile): the TASK ERROR line is the last one
            log = self._poll(lambda: self.node.tasks(upid).log.get(start=0, limit=0))
        except ProxmoxBackendError:
            log = []
        tail = [line.get("t", "") for line in log[-10:]]
        if not any(line.startswith("TASK ERROR") for line in tail):
            tail.append(f"TASK ERROR: {exit_status}")
        lines = "\n    ".join(tail)
        return TaskFailed(f"{what} failed: {exit_status}\n  task log (last lines):\n    {lines}", upid, exit_status)


def _holds(granted: dict[str, dict[str, Any]], path: str, privilege: str) -> bool:
    """``/access/permissions`` lists each path with an ACL; a privilege on a path covers what is below it."""
    parts = path.rstrip("/").split("/")
    for end in range(len(parts), 0, -1):
        prefix = "/".join(parts[:end]) or "/"
        if privilege in granted.get(prefix, {}):
            return True
    return False


def _task_type(upid: str) -> str:
    parts = upid.split(":")
    return parts[5] if len(parts) > 6 else ""


def _task_vmid(upid: str) -> int | None:
    parts = upid.split(":")
    return int(parts[6]) if len(parts) > 6 and parts[6].isdigit() else None
