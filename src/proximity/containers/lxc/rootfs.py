"""The root file system of a local LXC container: this machine's busybox, the init and the DHCP scripts.

No download: the rootfs is a directory with busybox (plus the shared libraries it needs when it is
not the static build) and an applet symlink for each of its commands, ``/sbin/init`` =
``data/ct-init.sh``, ``/usr/share/udhcpc/default.script`` = ``data/udhcpc.script`` and
``/etc/proximity/net0.env``, net0 as the init reads it.

IPv6: busybox has no DHCPv6 client in Debian (no ``udhcpc6``), so a container whose net0 says
``ip6=dhcp`` also gets this machine's dhcpcd (Debian's dhcpcd-base: one binary on libc, stateful
DHCPv6, the FQDN option, a DUID-LL) with ``data/dhcpcd.conf``. SLAAC (``ip6=auto``) needs no
client: the kernel does it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from importlib import resources
from pathlib import Path

from proximity.containers.base import BackendError, Net0
from proximity.host import ETC_NETNS, Host

NET_ENV = "etc/proximity/net0.env"
INIT_LOG = "var/log/ct-init.log"
ROOTFS = "rootfs"
_DHCPCD_DIRS = ("var/lib/dhcpcd", "run/dhcpcd")  # the lease and DUID store, the control sockets


def _data_file(name: str) -> bytes:
    return resources.files("proximity").joinpath("data", name).read_bytes()


def _program(name: str, *paths: str) -> Path | None:
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    return Path(found).resolve() if found else None


class RootfsBuilder:
    """Builds and updates containers' root file systems. A base of
    :class:`~proximity.containers.lxc.LxcBackend`, which provides ``domain``, ``netns``, ``_dir`` and ``_run``."""

    domain: str
    netns: str | None
    _busybox_files: list[tuple[Path, str]] | None  # (source, path in rootfs)
    _dhcpcd_files: list[tuple[Path, str]] | None
    _applets: list[str] | None

    def _busybox(self) -> list[tuple[Path, str]]:
        """busybox and, unless it is static, the shared libraries it loads (from ldd)."""
        if self._busybox_files is None:
            found = _program("busybox", "/bin/busybox", "/usr/bin/busybox")
            if not found:
                raise BackendError("busybox is not installed: 'apt-get install busybox' (or busybox-static); "
                                   "the local containers are built from it")
            self._busybox_files = self._with_libraries(found, "bin/busybox", "install busybox-static instead")
        return self._busybox_files

    def _dhcpcd(self) -> list[tuple[Path, str]]:
        """dhcpcd and the shared libraries it loads: the DHCPv6 client of a container with ip6=dhcp."""
        if self._dhcpcd_files is None:
            found = _program("dhcpcd", "/usr/sbin/dhcpcd", "/sbin/dhcpcd")
            if not found:
                raise BackendError("net0 ip6=dhcp needs a DHCPv6 client in the container, taken from this machine: "
                                   "install dhcpcd ('apt-get install dhcpcd-base'), or use ip6=auto (SLAAC)")
            self._dhcpcd_files = self._with_libraries(found, "usr/sbin/dhcpcd", "install dhcpcd-base again")
        return self._dhcpcd_files

    def _with_libraries(self, program: Path, target: str, fix: str) -> list[tuple[Path, str]]:
        files = [(program, target)]
        proc = self._run(["ldd", str(program)], check=False, in_ns=False)
        if proc.returncode == 0:  # dynamic: copy what the loader needs, at the same paths
            for line in proc.stdout.splitlines():
                m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
                if m:
                    files.append((Path(m.group(1)).resolve(), m.group(1).lstrip("/")))
        elif "not a dynamic executable" not in (proc.stdout + proc.stderr):
            raise BackendError(f"cannot tell which libraries {program} needs ('ldd {program}': "
                               f"{(proc.stderr or proc.stdout).strip()}); {fix}")
        return files

    @staticmethod
    def _copy_files(rootfs: Path, files: list[tuple[Path, str]]) -> None:
        for source, target in files:
            dest = rootfs / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)

    def _install_dhcpcd(self, rootfs: Path) -> None:
        """dhcpcd, its config and its directories (idempotent).

        No ``dhcpcd`` user, so dhcpcd runs without privilege separation: with it, dhcpcd 9.4 opens the
        socket for its link-local address only after sending the first Solicit, and on a local bridge
        the Reply comes back before that (measured: 9 of 20 containers lost it and waited 1.1 s for the
        retransmission). The container runs everything as root anyway; dhcpcd logs "no such user
        dhcpcd" once and goes on.
        """
        self._copy_files(rootfs, self._dhcpcd())
        for d in _DHCPCD_DIRS:
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        Host().write_text(rootfs / "etc/dhcpcd.conf", _data_file("dhcpcd.conf").decode())

    def _applet_names(self) -> list[str]:
        if self._applets is None:
            busybox = str(self._busybox()[0][0])
            out = self._run([busybox, "--list"], in_ns=False).stdout.split()
            self._applets = sorted({a for a in out if re.fullmatch(r"[A-Za-z0-9_.\[-]+", a)} - {"busybox"})
        return self._applets

    def _build_rootfs(self, rootfs: Path, hostname: str) -> None:
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/share/udhcpc", "etc/proximity", "proc", "sys",
                  "dev", "tmp", "run", "var/log", "root", "www"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "root").chmod(0o700)
        self._copy_files(rootfs, self._busybox())
        for applet in self._applet_names():
            link = rootfs / "bin" / applet
            if not link.exists() and not link.is_symlink():
                link.symlink_to("busybox")
        init = rootfs / "sbin/init"
        if init.is_symlink():
            init.unlink()
        init.write_bytes(_data_file("ct-init.sh"))
        init.chmod(0o755)
        script = rootfs / "usr/share/udhcpc/default.script"
        script.write_bytes(_data_file("udhcpc.script"))
        script.chmod(0o755)
        etc = rootfs / "etc"
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
        (etc / "shadow").chmod(0o600)
        (etc / "resolv.conf").write_text("")
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")
        self._write_identity(rootfs, hostname)

    def _write_identity(self, rootfs: Path, hostname: str) -> None:
        short = hostname.split(".")[0]
        fqdn = hostname if "." in hostname else f"{hostname}.{self.domain}"
        (rootfs / "etc/hostname").write_text(f"{hostname}\n")
        (rootfs / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{fqdn} {short}\n"
                                          "::1\tlocalhost ip6-localhost ip6-loopback\n")

    def _host_resolv_conf(self) -> str:
        """The nameserver/search lines the host (namespace) uses: what Proxmox gives a static CT."""
        paths = ([ETC_NETNS / self.netns / "resolv.conf"] if self.netns else []) + [Path("/etc/resolv.conf")]
        for path in paths:
            try:
                text = path.read_text()
            except OSError:
                continue
            lines = [ln for ln in text.splitlines() if ln.split()[:1] in (["nameserver"], ["search"], ["domain"])]
            return "\n".join(lines) + ("\n" if lines else "")
        return ""

    def _write_net_env(self, vmid: int, net: Net0) -> None:
        rootfs = self._dir(vmid) / ROOTFS
        env = {"NET0_IFACE": net.get("name") or "eth0", "NET0_IP": net.get("ip") or "manual",
               "NET0_GW": net.get("gw") or "", "NET0_IP6": net.get("ip6") or "manual", "NET0_GW6": net.get("gw6") or ""}
        if env["NET0_IP6"] == "dhcp":  # first: a missing dhcpcd changes nothing
            self._install_dhcpcd(rootfs)
        path = rootfs / NET_ENV
        path.parent.mkdir(parents=True, exist_ok=True)
        Host().write_text(path, "# written by proximity from net0; read by /sbin/init\n"
                      + "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        if env["NET0_IP"] not in ("dhcp", "manual"):
            Host().write_text(rootfs / "etc/resolv.conf", self._host_resolv_conf())
