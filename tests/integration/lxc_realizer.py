"""Backs the Proxmox API double with real LXC containers on a sandbox host."""

from __future__ import annotations

from typing import Any

from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend


class LxcRealizer:
    def __init__(self, backend: LxcBackend):
        self.backend = backend

    def create(self, vmid: int, params: dict[str, Any]) -> None:
        self.backend.create(ContainerSpec(
            hostname=params.get("hostname") or f"CT{vmid}", net0=params.get("net0", ""),
            memory=int(params.get("memory", 512)), cores=int(params.get("cores", 1)), vmid=vmid,
        ))

    def start(self, vmid: int) -> None:
        self.backend.start(vmid)

    def shutdown(self, vmid: int, timeout: int) -> None:
        self.backend.shutdown(vmid, timeout)

    def stop(self, vmid: int) -> None:
        self.backend.stop(vmid)

    def destroy(self, vmid: int) -> None:
        self.backend.destroy(vmid)

    def set_config(self, vmid: int, changes: dict[str, Any]) -> None:
        if changes.get("net0"):
            self.backend.set_net0(vmid, changes["net0"])

    def snapshot(self, vmid: int, name: str) -> None:
        self.backend.snapshot(vmid, name)

    def rollback(self, vmid: int, name: str) -> None:
        self.backend.rollback(vmid, name)

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self.backend.delete_snapshot(vmid, name)

    def interfaces(self, vmid: int) -> list[dict]:
        result = self.backend.exec(vmid, ["ip", "-4", "-o", "addr", "show", "eth0"], timeout=10)
        inet = result.stdout.split()[3] if result.returncode == 0 and result.stdout.split() else None
        return [{"name": "eth0", "hwaddr": None, "inet": inet}]
