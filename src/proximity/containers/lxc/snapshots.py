"""Snapshots of local LXC containers: a snapshot is a copy of the rootfs directory and of the Proxmox view.

``lxcpath/VMID/proximity-snapshots/NAME/`` holds ``rootfs/`` and ``proximity.json`` (net0 included).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import time

from proximity.containers.base import BackendError, Net0
from proximity.containers.lxc.config import META
from proximity.containers.lxc.rootfs import ROOTFS
from proximity.errors import HostError
from proximity.host import Host

SNAPSHOTS = "proximity-snapshots"
_SNAPSHOT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")  # Proxmox: 2-40 chars


class Snapshots:
    """Snapshot, list, roll back and delete. A base of :class:`~proximity.containers.lxc.LxcBackend`, whose
    ``_load``, ``_dir``, ``_running``, ``stop``, ``_write_net_env``, ``_write_config`` and ``_save`` it uses."""

    def can_snapshot(self, vmid: int) -> bool:
        return True  # a snapshot is a copy of the rootfs directory

    def snapshot(self, vmid: int, name: str) -> None:
        """Copy the rootfs and the Proxmox view (net0 included) to ``proximity-snapshots/NAME``."""
        data = self._load(vmid)
        if not _SNAPSHOT_RE.fullmatch(name or ""):
            raise BackendError(f"snapshot name {name!r} is invalid: 2-40 characters of letters, digits, '_' "
                               "and '-', starting with a letter")
        target = self._dir(vmid) / SNAPSHOTS / name
        if target.exists():
            raise BackendError(f"CT {vmid} already has a snapshot {name!r}; delete it first or pick another name")
        tmp = target.with_name(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            shutil.copytree(self._dir(vmid) / ROOTFS, tmp / ROOTFS, symlinks=True)
            snap = {**data, "snapshot": name, "snapshot_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            Host().write_text(tmp / META, json.dumps(snap, indent=2, sort_keys=True) + "\n")
            os.rename(tmp, target)
        except (OSError, HostError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BackendError(f"cannot snapshot CT {vmid} as {name!r}: {exc}") from None

    def snapshots(self, vmid: int) -> builtins.list[str]:
        self._load(vmid)
        base = self._dir(vmid) / SNAPSHOTS
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []

    def rollback(self, vmid: int, name: str) -> None:
        """Restore rootfs, hostname, net0, memory and cores; a running container is stopped first (as Proxmox)."""
        data = self._load(vmid)
        snap_dir = self._dir(vmid) / SNAPSHOTS / name
        if not (snap_dir / META).is_file():
            have = ", ".join(self.snapshots(vmid)) or "none"
            raise BackendError(f"CT {vmid} has no snapshot {name!r} (snapshots: {have})")
        snap = json.loads((snap_dir / META).read_text())
        if self._running(vmid):
            self.stop(vmid)
        ct_dir = self._dir(vmid)
        fresh, old = ct_dir / ".rootfs.rollback", ct_dir / ".rootfs.old"
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            shutil.copytree(snap_dir / ROOTFS, fresh, symlinks=True)
            os.rename(ct_dir / ROOTFS, old)
            os.rename(fresh, ct_dir / ROOTFS)
        except OSError as exc:
            if not (ct_dir / ROOTFS).exists() and old.exists():
                os.rename(old, ct_dir / ROOTFS)
            shutil.rmtree(fresh, ignore_errors=True)
            raise BackendError(f"cannot roll CT {vmid} back to {name!r}: {exc}") from None
        shutil.rmtree(old, ignore_errors=True)
        restored = {k: v for k, v in snap.items() if k not in ("snapshot", "snapshot_time")}
        restored["vmid"] = data.get("vmid", vmid)
        self._write_net_env(vmid, Net0.parse(restored["net0"]))
        self._write_config(vmid, restored)
        self._save(vmid, restored)

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self._load(vmid)
        snap_dir = self._dir(vmid) / SNAPSHOTS / name
        if not _SNAPSHOT_RE.fullmatch(name or "") or not snap_dir.is_dir():
            have = ", ".join(self.snapshots(vmid)) or "none"
            raise BackendError(f"CT {vmid} has no snapshot {name!r} (snapshots: {have})")
        shutil.rmtree(snap_dir)
