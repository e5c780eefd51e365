"""The one interface every container backend implements, and Proxmox's net0 property string."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from proximity.errors import ConflictError, HostError, NotFoundError


class BackendError(HostError):
    """A backend operation failed; the message says what failed and what to do."""


class ContainerNotFound(NotFoundError, BackendError):
    """The backend has no container with that id (exit code 2, HTTP 404)."""


class StillRunning(BackendError):
    """We stopped waiting, but the operation goes on (a Proxmox task): undoing anything now would race it."""


LOCK_MEANING = {  # Proxmox's config locks (pve-container LXC/Config.pm), and what each means
    "backup": "a backup (vzdump) is running",
    "snapshot": "a snapshot is being taken",
    "snapshot-delete": "a snapshot is being deleted",
    "rollback": "a snapshot rollback is running or failed",
    "migrate": "a migration to another node is running or failed",
    "create": "the container is still being created",
    "destroyed": "the container is being destroyed",
    "mounted": "its volumes are mounted (pct mount)",
    "disk": "a disk operation is running",
}


class ContainerLocked(ConflictError):
    """The container's config is locked by another operation; nothing was changed."""

    def __init__(self, vmid: int | None, lock: str):
        what = f"CT {vmid}" if vmid is not None else "the container"
        meaning = LOCK_MEANING.get(lock, "another operation holds it")
        super().__init__(
            f"{what} is locked ({lock}): {meaning}. Wait for it to finish; if nothing is running "
            f"(a crashed task), clear it on the Proxmox host with `pct unlock {vmid or 'VMID'}`"
        )
        self.vmid, self.lock = vmid, lock


@dataclass(frozen=True)
class ContainerSpec:
    """What to create. ``net0`` is a Proxmox property string (the network manager builds it)."""

    hostname: str
    net0: str
    memory: int = 256  # MiB
    cores: int = 1
    template: str | None = None  # backend-specific: a Proxmox volume id, ignored by lxc
    vmid: int | None = None  # None: the backend picks the next free id


@dataclass(frozen=True)
class Container:
    vmid: int
    hostname: str
    state: str  # "running" or "stopped"
    net0: str  # "" when not known (a listing that does not read every config)
    backend: str
    lock: str | None = None  # Proxmox's config lock (backup, snapshot, migrate, ...), None when free


class ContainerBackend(Protocol):
    name: str

    def next_id(self) -> int: ...
    def create(self, spec: ContainerSpec) -> Container: ...
    def start(self, vmid: int) -> None: ...
    def shutdown(self, vmid: int, timeout: float = 30) -> None: ...
    def stop(self, vmid: int) -> None: ...
    def destroy(self, vmid: int) -> None: ...
    def status(self, vmid: int) -> Container: ...
    def list(self) -> list[Container]: ...
    def get_net0(self, vmid: int) -> str: ...
    def set_net0(self, vmid: int, value: str) -> None: ...
    def can_snapshot(self, vmid: int) -> bool: ...
    def snapshot(self, vmid: int, name: str) -> None: ...
    def rollback(self, vmid: int, name: str) -> None: ...
    def delete_snapshot(self, vmid: int, name: str) -> None: ...


def dns_label(hostname: str) -> str:
    """The name a container has on prox-net: Proxmox accepts an FQDN hostname, DNS uses its first label."""
    return hostname.split(".", 1)[0]


@dataclass(frozen=True)
class Net0:
    """A parsed ``net[n]`` property string: ``name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr=...``."""

    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Net0:
        options: dict[str, str] = {}
        for part in filter(None, value.split(",")):
            key, sep, val = part.partition("=")
            if not sep:
                raise BackendError(f"net0 part {part!r} is not key=value (in {value!r})")
            options[key.strip()] = val.strip()
        return cls(options)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def __str__(self) -> str:
        return ",".join(f"{key}={val}" for key, val in self.options.items())
