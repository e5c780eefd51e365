"""The Proxmox VE backend: the real API through proxmoxer, with an API token.

Every call that returns a task id (UPID) is followed to its end through
``/nodes/{node}/tasks/{upid}/status``; a failed task raises with its exit
status and the tail of its log, which is what an operator needs to see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from proximity.containers.base import BackendError, Container, ContainerSpec


@dataclass(frozen=True)
class ProxmoxConfig:
    host: str
    node: str
    token_id: str  # "user@realm!tokenname"
    token_secret: str
    port: int = 8006
    verify_tls: bool = True
    ca_file: str | None = None  # a CA bundle to trust instead of the system's (self-signed PVE certs)
    storage: str = "local-lvm"
    template: str | None = None  # e.g. "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    task_timeout: float = 300.0


class ProxmoxBackend:
    name = "proxmox"

    def __init__(self, config: ProxmoxConfig, api: Any | None = None):
        self.config = config
        user, sep, token_name = config.token_id.partition("!")
        if not sep:
            raise BackendError(
                f"proxmox token id {config.token_id!r} must look like 'user@realm!tokenname' "
                "(Datacenter > Permissions > API Tokens)"
            )
        verify: bool | str = config.ca_file if (config.verify_tls and config.ca_file) else config.verify_tls
        self.api = api or ProxmoxAPI(
            config.host, port=config.port, user=user, token_name=token_name,
            token_value=config.token_secret, verify_ssl=verify, timeout=30,
        )
        self.node = self.api.nodes(config.node)

    # -- the interface -------------------------------------------------------------
    def next_id(self) -> int:
        return int(self._call(lambda: self.api.cluster.nextid.get()))

    def create(self, spec: ContainerSpec) -> Container:
        template = spec.template or self.config.template
        if not template:
            raise BackendError("no container template: pass --template or set proxmox_template in the settings")
        vmid = spec.vmid or self.next_id()
        params = {
            "vmid": vmid, "hostname": spec.hostname, "ostemplate": template, "net0": spec.net0,
            "memory": spec.memory, "cores": spec.cores, "unprivileged": 1, "storage": self.config.storage,
        }
        self._task(lambda: self.node.lxc.post(**params), f"create CT {vmid} ({spec.hostname})")
        return self.status(vmid)

    def start(self, vmid: int) -> None:
        self._task(lambda: self.node.lxc(vmid).status.start.post(), f"start CT {vmid}")

    def shutdown(self, vmid: int, timeout: float = 30) -> None:
        self._task(lambda: self.node.lxc(vmid).status.shutdown.post(timeout=int(timeout)), f"shut down CT {vmid}")

    def stop(self, vmid: int) -> None:
        self._task(lambda: self.node.lxc(vmid).status.stop.post(), f"stop CT {vmid}")

    def destroy(self, vmid: int) -> None:
        self._task(lambda: self.node.lxc(vmid).delete(), f"destroy CT {vmid}")

    def status(self, vmid: int) -> Container:
        current = self._call(lambda: self.node.lxc(vmid).status.current.get())
        config = self._call(lambda: self.node.lxc(vmid).config.get())
        return Container(vmid, config.get("hostname", current.get("name", "")), current["status"],
                         config.get("net0", ""), self.name)

    def list(self) -> list[Container]:
        found = []
        for entry in self._call(lambda: self.node.lxc.get()):
            vmid = int(entry["vmid"])
            net0 = self._call(lambda vmid=vmid: self.node.lxc(vmid).config.get()).get("net0", "")
            found.append(Container(vmid, entry.get("name", ""), entry["status"], net0, self.name))
        return sorted(found, key=lambda c: c.vmid)

    def get_net0(self, vmid: int) -> str:
        return self._call(lambda: self.node.lxc(vmid).config.get()).get("net0", "")

    def set_net0(self, vmid: int, value: str) -> None:
        result = self._call(lambda: self.node.lxc(vmid).config.put(net0=value))
        if isinstance(result, str) and result.startswith("UPID:"):
            self._follow(result, f"set net0 of CT {vmid}")

    def snapshot(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot.post(snapname=name), f"snapshot CT {vmid} as {name}")

    def rollback(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot(name).rollback.post(), f"roll CT {vmid} back to {name}")

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self._task(lambda: self.node.lxc(vmid).snapshot(name).delete(), f"delete snapshot {name} of CT {vmid}")

    # -- plumbing ------------------------------------------------------------------
    def _call(self, request):
        try:
            return request()
        except ResourceException as exc:
            errors = getattr(exc, "errors", None)
            detail = f" ({'; '.join(f'{k}: {v}' for k, v in errors.items())})" if errors else ""
            raise BackendError(f"Proxmox refused the request: {exc.status_code} {exc.content}{detail}") from None
        except Exception as exc:  # connection, TLS, timeout: say where we tried to go
            raise BackendError(
                f"cannot talk to Proxmox at {self.config.host}:{self.config.port}: {exc}. Check the host, "
                "the token, and TLS (proxmox_ca_file for a self-signed certificate)"
            ) from None

    def _task(self, request, what: str) -> None:
        upid = self._call(request)
        self._follow(upid, what)

    def _follow(self, upid: str, what: str) -> None:
        deadline = time.monotonic() + self.config.task_timeout
        delay = 0.05
        while True:
            status = self._call(lambda: self.node.tasks(upid).status.get())
            if status.get("status") == "stopped":
                break
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: task {upid} still running after {self.config.task_timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        exit_status = status.get("exitstatus", "")
        if exit_status != "OK" and not exit_status.startswith("WARNINGS"):
            log = self._call(lambda: self.node.tasks(upid).log.get(limit=500))
            tail = "\n    ".join(line.get("t", "") for line in log[-10:])
            raise BackendError(f"{what} failed: {exit_status}\n  task log (last lines):\n    {tail}")
