"""The local LXC backend (see :mod:`.backend`); every name importable from ``proximity.containers.lxc``."""

from proximity.containers.lxc.backend import (
    CONFIG,
    CREATING,
    FIRST_VMID,
    LAST_VMID,
    PATH_IN_CT,
    START_LOG,
    LxcBackend,
)
from proximity.containers.lxc.config import CGROUP_ROOT, META, SECCOMP_PROFILE, cgroup_layout
from proximity.containers.lxc.net0 import parse_net0, random_mac
from proximity.containers.lxc.rootfs import INIT_LOG, NET_ENV, ROOTFS
from proximity.containers.lxc.snapshots import SNAPSHOTS

__all__ = [
    "CGROUP_ROOT", "CONFIG", "CREATING", "FIRST_VMID", "INIT_LOG", "LAST_VMID", "META", "NET_ENV", "PATH_IN_CT",
    "ROOTFS", "SECCOMP_PROFILE", "SNAPSHOTS", "START_LOG", "LxcBackend", "cgroup_layout", "parse_net0",
    "random_mac",
]
