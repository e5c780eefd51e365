"""The local LXC backend: real LXC containers on this machine, or inside a sandbox host.

Containers are named by their vmid ("101", as Proxmox names them), live under ``lxcpath``
(every ``lxc-*`` call gets ``-P lxcpath``) and need no download: the rootfs is a directory with
this machine's busybox (:mod:`.rootfs`). The init asks for a DHCP lease (``ip=dhcp``) or finds
the static address LXC configured (``ip=CIDR,gw=GW``), then serves ``hello from <hostname>`` on
port 80.

The backend is :class:`LxcBackend` here; its parts: :mod:`.net0` (checking net0),
:mod:`.config` (rendering the LXC config), :mod:`.rootfs` (building the rootfs),
:mod:`.runtime` (commands in the namespace, LXC's state) and :mod:`.snapshots`.

Network namespaces: with ``netns`` set (the sandbox's host namespace), every LXC command runs
in that namespace: ``nsenter --net`` plus a private mount namespace with the namespace's sysfs
(``ip netns exec`` without hiding the cgroups, see _NETNS_EXEC_SH). The container's veth
(``veth<vmid>i0``, as Proxmox names it) is created by ``lxc-start`` in that namespace and
enslaved to the bridge there; nothing is created in the machine's own namespace. LXC's command
sockets are abstract unix sockets, which belong to a network namespace, so lxc-info, lxc-attach
and lxc-stop must run in the same one: a container started in another namespace looks STOPPED.

Files of container VMID, under ``lxcpath/VMID/``:

``config``               the LXC config, rendered from ``proximity.json`` on every change
``proximity.json``       the Proxmox view: hostname, net0, memory, cores (what status returns)
``rootfs/``              the directory rootfs
``lxc.log``              lxc-start's log (warnings and errors)
``proximity-snapshots/NAME/``  a snapshot: a copy of rootfs/ and proximity.json
``.proximity-creating``  while ``create`` builds it: the pid and start time of the process doing so

A directory without ``proximity.json`` is a container being built, or one whose build or
destroy was interrupted: :meth:`LxcBackend.strays` tells these apart by the marker's process.

Containers run as root (privileged). On a real Proxmox host, unprivileged containers are
Proxmox's business (the proxmox backend asks for ``unprivileged=1``); this backend is for the
sandbox and development. AppArmor is set to ``unconfined`` (this backend generates no profile).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proximity.containers.base import BackendError, Container, ContainerNotFound, ContainerSpec, Net0
from proximity.containers.lxc.config import META, cgroup_layout, render_config
from proximity.containers.lxc.net0 import parse_net0, random_mac
from proximity.containers.lxc.rootfs import INIT_LOG, ROOTFS, RootfsBuilder
from proximity.containers.lxc.runtime import LxcCommands, start_errors
from proximity.containers.lxc.snapshots import SNAPSHOTS, Snapshots
from proximity.host import Host, wait_for
from proximity.owner import Owner
from proximity.revert import Reverter
from proximity.settings import is_dns_name

log = logging.getLogger(__name__)

FIRST_VMID = 100
LAST_VMID = 999_999_999
CONFIG = "config"
START_LOG = "lxc.log"
CREATING = ".proximity-creating"
PATH_IN_CT = "/usr/sbin:/usr/bin:/sbin:/bin"


class LxcBackend(LxcCommands, RootfsBuilder, Snapshots):
    """Local LXC containers under ``lxcpath``, run in network namespace ``netns`` (None: this machine)."""

    name = "lxc"

    def __init__(self, netns: str | None, lxcpath: Path | str, domain: str = "prox.local",
                 command_timeout: float = 30.0):
        if netns is not None and (not netns or "/" in netns or netns in (".", "..")):
            raise BackendError(f"invalid network namespace name {netns!r}")
        self.netns = netns
        self.lxcpath = Path(lxcpath).absolute()
        self.domain = domain
        self.command_timeout = command_timeout
        self.cgroups = cgroup_layout()
        self._busybox_files: list[tuple[Path, str]] | None = None  # (source, path in rootfs)
        self._dhcpcd_files: list[tuple[Path, str]] | None = None
        self._applets: list[str] | None = None

    # -- files ---------------------------------------------------------------------
    def _dir(self, vmid: int) -> Path:
        return self.lxcpath / str(int(vmid))

    def _load(self, vmid: int) -> dict[str, Any]:
        path = self._dir(vmid) / META
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ContainerNotFound(f"CT {vmid} does not exist (no {path})", fix="see `proximity ct list`") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read {path}: {exc}; destroy CT {vmid} and create it again") from None
        if not isinstance(data, dict) or not {"hostname", "net0"} <= data.keys():
            raise BackendError(f"{path} is incomplete; destroy CT {vmid} and create it again")
        return data

    def _save(self, vmid: int, data: dict[str, Any]) -> None:
        Host().write_text(self._dir(vmid) / META, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _ids(self) -> list[int]:
        if not self.lxcpath.is_dir():
            return []
        return sorted(int(p.name) for p in self.lxcpath.iterdir()
                      if p.name.isdigit() and not p.name.startswith("0") and (p / META).is_file())

    def _write_config(self, vmid: int, data: dict[str, Any]) -> None:
        config = render_config(vmid, data, self._dir(vmid) / ROOTFS, self.cgroups)
        Host().write_text(self._dir(vmid) / CONFIG, config)

    # -- state ---------------------------------------------------------------------
    def _container(self, vmid: int, data: dict[str, Any], running: bool | None = None) -> Container:
        """``running``: known already (from :meth:`list`); None: ask LXC."""
        if running is None:
            running = self._running(vmid)
        state = "running" if running else "stopped"
        return Container(vmid=int(vmid), hostname=data["hostname"], state=state, net0=data["net0"],
                         backend=self.name)

    # -- the interface -------------------------------------------------------------
    def next_id(self) -> int:
        used = set(self._ids())
        if self.lxcpath.is_dir():
            used |= {int(p.name) for p in self.lxcpath.iterdir() if p.name.isdigit()}
        vmid = FIRST_VMID
        while vmid in used:
            vmid += 1
        return vmid

    def create(self, spec: ContainerSpec) -> Container:
        if not is_dns_name(spec.hostname):  # as Proxmox: FQDNs too (Proximity's own are checked before)
            raise BackendError(f"hostname {spec.hostname!r} is not a valid DNS name (RFC 1123: letters, digits "
                               "and '-', labels of at most 63 characters); pick a name like 'nginx-01'")
        if spec.memory < 16:
            raise BackendError(f"memory {spec.memory} MiB is too small: give at least 16")
        if spec.cores < 1:
            raise BackendError(f"cores {spec.cores}: give at least 1")
        if spec.vmid is not None and not FIRST_VMID <= spec.vmid <= LAST_VMID:
            raise BackendError(f"vmid {spec.vmid} is out of range: use {FIRST_VMID} to {LAST_VMID}")
        net = parse_net0(spec.net0)
        if not net.get("hwaddr"):  # Proxmox generates one and stores it in net0
            net = Net0({**net.options, "hwaddr": random_mac()})
        self._busybox()  # fail before anything is created
        if net.get("ip6") == "dhcp":
            self._dhcpcd()
        try:
            self.lxcpath.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create {self.lxcpath}: {exc}") from None

        vmid = spec.vmid
        with self._claim_lock():  # the id and its owner marker appear together (see strays)
            for _attempt in range(100):
                candidate = vmid if vmid is not None else self.next_id()
                try:
                    self._dir(candidate).mkdir()  # atomic claim of the id
                    vmid = candidate
                    break
                except FileExistsError:
                    if vmid is not None:
                        raise BackendError(f"CT {vmid} already exists in {self.lxcpath}; pick another vmid "
                                           "or destroy it first") from None
            else:
                raise BackendError(f"could not find a free vmid in {self.lxcpath}")
            assert vmid is not None
            me = Owner.me()
            Host().write_text(self._dir(vmid) / CREATING, json.dumps({"pid": me.pid, "start": me.start}) + "\n")

        data = {
            "vmid": vmid, "hostname": spec.hostname, "net0": str(net), "memory": spec.memory,
            "cores": spec.cores, "template": spec.template, "netns": self.netns,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            with Reverter() as revert:
                revert.add(f"remove the half-built {self._dir(vmid)}", lambda: Host().remove_tree(self._dir(vmid)))
                self._build_rootfs(self._dir(vmid) / ROOTFS, spec.hostname)
                self._write_net_env(vmid, net)
                self._write_config(vmid, data)
                self._save(vmid, data)  # last: a container without it is half-made and not listed
                (self._dir(vmid) / CREATING).unlink()
                revert.success()
        except OSError as exc:
            raise BackendError(f"cannot build CT {vmid} in {self._dir(vmid)}: {exc}") from None
        return self._container(vmid, data)

    def start(self, vmid: int, timeout: float = 30) -> None:
        """Start (a no-op when running) and wait until LXC says RUNNING."""
        data = self._load(vmid)
        if self._running(vmid):
            return
        net = Net0.parse(data["net0"])
        bridge = net.get("bridge") or ""
        probe = ["ip", "-n", self.netns] if self.netns else ["ip"]
        self._in_ns([])  # the namespace must exist
        if self._run([*probe, "-o", "link", "show", "dev", bridge], check=False, in_ns=False).returncode != 0:
            raise BackendError(
                f"cannot start CT {vmid} ({data['hostname']}): bridge {bridge} does not exist in {self._where}; "
                f"if it is Proximity's bridge, set up the network first ('proximity up"
                + (f" --sandbox {self.netns}" if self.netns else "") + f"'), else create {bridge} or set another "
                "bridge in net0"
            )
        veth = f"veth{vmid}i0"
        if self._run([*probe, "-o", "link", "show", "dev", veth], check=False, in_ns=False).returncode == 0:
            raise BackendError(
                f"cannot start CT {vmid} ({data['hostname']}): an interface {veth} exists already in {self._where} "
                f"(another container with id {vmid} runs there, from another lxcpath?); stop that container or "
                "give this one another vmid"
            )
        self._write_config(vmid, data)
        logfile = self._dir(vmid) / START_LOG
        offset = logfile.stat().st_size if logfile.exists() else 0
        proc = self._lxc("lxc-start", vmid, "-d", "-o", str(logfile), "-l", "WARN", timeout=timeout, check=False)
        if proc.returncode != 0 or not wait_for(lambda: self._state(vmid) == "RUNNING", timeout):
            output = (proc.stderr or proc.stdout).strip().splitlines()
            detail = start_errors(logfile, offset) or " | ".join(output[-3:])
            state = self._state(vmid)
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) did not start (lxc-start exit {proc.returncode}, state {state}): "
                f"{detail or 'no output'}; see {logfile} and {self._dir(vmid) / ROOTFS / INIT_LOG}"
            )

    def shutdown(self, vmid: int, timeout: float = 30) -> None:
        """Clean shutdown (SIGTERM to init); BackendError if it is still running after ``timeout``."""
        data = self._load(vmid)
        if not self._running(vmid):
            return
        seconds = max(1, math.ceil(timeout))
        proc = self._lxc("lxc-stop", vmid, "-t", str(seconds), "--nokill", timeout=seconds + 15, check=False)
        if self._running(vmid):
            detail = (proc.stderr or proc.stdout).strip()
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) did not shut down within {seconds} s"
                + (f" ({detail})" if detail else "") + "; stop it forcibly (stop) instead"
            )

    def stop(self, vmid: int) -> None:
        """Hard stop (kills init); a no-op when stopped."""
        self._load(vmid)
        if not self._running(vmid):
            return
        self._lxc("lxc-stop", vmid, "-k", timeout=30)
        if not wait_for(lambda: not self._running(vmid), 10):
            raise BackendError(f"CT {vmid} is still running after 'lxc-stop -k'; see {self._dir(vmid) / START_LOG}")

    def destroy(self, vmid: int) -> None:
        """Stop if running, then remove the container with its snapshots."""
        path = self._dir(vmid)
        if not path.is_dir():
            raise ContainerNotFound(f"CT {vmid} does not exist in {self.lxcpath}", fix="see `proximity ct list`")
        if (path / CONFIG).is_file():
            if self._running(vmid):
                self.stop(vmid)
            shutil.rmtree(path / SNAPSHOTS, ignore_errors=True)
            self._lxc("lxc-destroy", vmid, timeout=60,
                      fix=f"remove {path} by hand once the container is stopped")
        if path.exists():  # half-created, or lxc-destroy left files of ours
            shutil.rmtree(path)

    def status(self, vmid: int) -> Container:
        return self._container(vmid, self._load(vmid))

    def strays(self) -> builtins.list[Path]:
        """Directories of containers whose build or destroy was interrupted (no process is on them).

        Each can go with ``destroy(int(path.name))``. Reads only: safe in a dry run.
        """
        if not self.lxcpath.is_dir():
            return []
        found = []
        with self._claim_lock():
            for path in sorted(self.lxcpath.iterdir()):
                if not (path.name.isdigit() and path.is_dir()) or (path / META).exists():
                    continue
                try:
                    owner = Owner(**json.loads((path / CREATING).read_text()))
                except (OSError, ValueError, TypeError):
                    owner = None  # no marker: a destroy was interrupted (or the marker is damaged)
                if owner is None or not owner.alive():
                    found.append(path)
        return found

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        """Held while a new id is claimed and while strays are looked for (a lock on lxcpath itself)."""
        fd = os.open(self.lxcpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def list(self) -> list[Container]:
        """Every container, the states of all from one ``lxc-ls`` (``ct create`` lists them: one
        ``lxc-info`` each, each through the namespace wrapper, cost it ~15 ms per container)."""
        result = []
        ids = self._ids()
        try:
            running = self._running_ids() if ids else set()
        except BackendError:
            running = None  # ask each container, as lxc-info: each one that fails is skipped, with why
        for vmid in ids:
            try:
                data = self._load(vmid)
                # lxc-ls leaves out a stopped container without a config: lxc-info then says what is wrong
                known = None if running is None else True if vmid in running else \
                    False if (self._dir(vmid) / CONFIG).is_file() else None
                result.append(self._container(vmid, data, known))
            except BackendError as exc:
                log.warning("skipping CT %s: %s", vmid, exc)
        return result

    def get_net0(self, vmid: int) -> str:
        return str(self._load(vmid)["net0"])

    def set_net0(self, vmid: int, value: str) -> None:
        """Change net0 of a stopped container (a running one would need Proxmox's pending changes)."""
        data = self._load(vmid)
        if self._running(vmid):
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) is running: net0 can only change while it is stopped "
                "(Proxmox would keep it as a pending change); shut it down first"
            )
        net = parse_net0(value)
        if not net.get("hwaddr"):  # keep the container's MAC (and so its DHCP reservation)
            old = Net0.parse(data["net0"]).get("hwaddr") or random_mac()
            net = Net0({**net.options, "hwaddr": old})
        data["net0"] = str(net)
        self._write_net_env(vmid, net)
        self._write_config(vmid, data)
        self._save(vmid, data)

    # -- extras --------------------------------------------------------------------
    def container_pid(self, vmid: int) -> int | None:
        """The host pid of the container's init (read /proc/PID/root/... through it), None when stopped."""
        self._load(vmid)
        proc = self._lxc("lxc-info", vmid, "-p", "-H", timeout=10, check=False)
        text = proc.stdout.strip()
        return int(text) if proc.returncode == 0 and text.isdigit() else None

    def exec(self, vmid: int, argv: builtins.list[str], timeout: float = 30,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the running container (lxc-attach, clean environment).

        The command is wrapped in busybox ``timeout -s KILL`` inside the container, so nothing is left
        running there when ``timeout`` passes (BackendError). Its exit status is returned as is, unless
        ``check`` (BackendError on a non-zero status).
        """
        if not argv:
            raise BackendError("exec needs a command")
        data = self._load(vmid)
        if not self._running(vmid):
            raise BackendError(f"CT {vmid} ({data['hostname']}) is not running: start it first")
        seconds = max(1, math.ceil(timeout))
        cmd = ["lxc-attach", "-P", str(self.lxcpath), "-n", str(vmid), "--clear-env",
               "--set-var", f"PATH={PATH_IN_CT}", "--set-var", "HOME=/root", "--",
               "timeout", "-s", "KILL", str(seconds), *argv]
        started = time.monotonic()
        proc = self._run(cmd, timeout=seconds + 10, check=False)
        elapsed = time.monotonic() - started
        if proc.returncode != 0 and "lxc-attach: " in proc.stderr:
            raise BackendError(f"cannot run {shlex.join(argv)!r} in CT {vmid}: {proc.stderr.strip()}")
        if proc.returncode != 0 and elapsed >= seconds:
            raise BackendError(f"{shlex.join(argv)!r} in CT {vmid} timed out after {seconds} s (killed)")
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip() or "no output"
            raise BackendError(f"{shlex.join(argv)!r} failed in CT {vmid} (exit {proc.returncode}): {detail}")
        return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, proc.stderr)


__all__ = ["LxcBackend", "cgroup_layout", "parse_net0", "random_mac"]
