"""The local LXC backend's rootfs parts that need no container: net0.env and the DHCPv6 client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proximity.containers.base import BackendError, Net0
from proximity.containers.lxc import NET_ENV, ROOTFS, LxcBackend
from proximity.containers.lxc import rootfs as rootfs_module


def backend_with_ct(tmp_path: Path) -> tuple[LxcBackend, Path]:
    backend = LxcBackend(None, tmp_path)
    rootfs = tmp_path / "101" / ROOTFS
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return backend, rootfs


def test_net_env_carries_ipv6_and_no_client_without_dhcp(tmp_path: Path) -> None:
    backend, rootfs = backend_with_ct(tmp_path)
    backend._write_net_env(101, Net0.parse("name=eth0,bridge=br0,ip=dhcp,ip6=auto"))
    env = (rootfs / NET_ENV).read_text()
    assert "NET0_IP=dhcp\n" in env and "NET0_IP6=auto\n" in env and "NET0_GW6=''\n" in env
    assert not (rootfs / "usr/sbin/dhcpcd").exists()  # SLAAC is the kernel's

    backend._write_net_env(101, Net0.parse("name=eth0,bridge=br0,ip=dhcp"))
    assert "NET0_IP6=manual\n" in (rootfs / NET_ENV).read_text()


@pytest.mark.skipif(shutil.which("dhcpcd") is None and not Path("/usr/sbin/dhcpcd").exists(),
                    reason="dhcpcd is not installed: apt-get install dhcpcd-base")
def test_ip6_dhcp_brings_dhcpcd_and_its_config(tmp_path: Path) -> None:
    backend, rootfs = backend_with_ct(tmp_path)
    for _ in range(2):  # idempotent: a second net0 change is fine
        backend._write_net_env(101, Net0.parse("name=eth0,bridge=br0,ip=dhcp,ip6=dhcp"))
    assert (rootfs / "usr/sbin/dhcpcd").stat().st_mode & 0o111
    assert any((rootfs / "lib").rglob("libc.so*")) or any((rootfs / "usr/lib").rglob("libc.so*"))
    conf = (rootfs / "etc/dhcpcd.conf").read_text()
    for line in ("ipv6only", "noipv6rs", "ia_na", "duid ll", "hostname", "nodelay"):
        assert f"\n{line}\n" in conf, line
    assert "dhcpcd" not in (rootfs / "etc/passwd").read_text()  # no privilege separation (see _install_dhcpcd)
    assert (rootfs / "var/lib/dhcpcd").is_dir() and (rootfs / "run/dhcpcd").is_dir()
    assert "NET0_IP6=dhcp\n" in (rootfs / NET_ENV).read_text()


def test_ip6_dhcp_without_dhcpcd_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs_module, "_program", lambda name, *paths: None)
    backend, rootfs = backend_with_ct(tmp_path)
    with pytest.raises(BackendError, match=r"ip6=dhcp .*apt-get install dhcpcd-base.*ip6=auto"):
        backend._write_net_env(101, Net0.parse("name=eth0,bridge=br0,ip=dhcp,ip6=dhcp"))
    assert not (rootfs / NET_ENV).exists()  # nothing changed
