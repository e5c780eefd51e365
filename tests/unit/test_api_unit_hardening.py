"""The proximity-api unit's hardening: each setting the service's work allows, and none that breaks it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from proximity.network import render
from proximity.settings import load_settings


@pytest.fixture
def unit() -> str:
    return render.api_unit(load_settings(), "/usr/bin/proximity", "127.0.0.1", 8080)


def directives(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z][A-Za-z]+=", line))


def test_the_unit_is_hardened_as_far_as_its_work_allows(unit):
    d = directives(unit)
    assert d["NoNewPrivileges"] == "yes" and d["PrivateTmp"] == "yes"
    assert d["ProtectSystem"] == "full"  # /etc read-only but for what it writes (below)
    assert d["ProtectHome"] == "read-only"  # an admin's post-up script in /root still runs
    assert int(d["LimitNOFILE"]) >= 4096  # well above the server's 512-connection cap plus its own work
    writable = d["ReadWritePaths"].split()
    for path in ("/etc/network", "/etc/systemd/system", "/etc/proximity", "/var/lib/proximity", "/run/netns"):
        assert f"-{path}" in writable, writable
    caps = d["CapabilityBoundingSet"].split()
    for cap in ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_KILL"):
        assert cap in caps  # ip/iptables, the probe's DHCP client, ip netns add, ifupdown2's modprobe, dnsmasq
    for cap in ("CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_SYS_RAWIO", "CAP_MKNOD", "CAP_BPF", "CAP_AUDIT_WRITE"):
        assert cap not in caps
    assert set(d["RestrictNamespaces"].split()) == {"net", "mnt"}  # the probe's namespace, ip netns exec
    assert "AF_PACKET" in d["RestrictAddressFamilies"] and "AF_NETLINK" in d["RestrictAddressFamilies"]


def test_nothing_the_service_must_do_is_forbidden(unit):
    d = directives(unit)
    # /proc/sys is written (ip_forward, the admin's sysctls); modules are loaded by ifupdown2.
    for forbidden in ("ProtectKernelTunables", "ProtectKernelModules", "PrivateNetwork", "PrivateDevices",
                      "MemoryDenyWriteExecute", "ProtectClock", "User", "DynamicUser"):
        assert forbidden not in d, forbidden


def test_the_write_paths_follow_the_settings(tmp_path):
    settings = load_settings(interfaces_file=tmp_path / "net/interfaces", dnsmasq_conf=tmp_path / "conf/dnsmasq.conf")
    paths = directives(render.api_unit(settings, "/usr/bin/proximity", "127.0.0.1", 8080))["ReadWritePaths"].split()
    assert f"-{tmp_path}/net" in paths and f"-{tmp_path}/conf" in paths


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_hardened_unit_verifies_and_scores_better_than_unsafe(tmp_path):
    exe = tmp_path / "proximity"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    path = tmp_path / "proximity-api.service"
    path.write_text(render.api_unit(load_settings(), str(exe), "127.0.0.1", 8080))
    checked = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "proximity-api" not in checked.stderr, checked.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True,
                              text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for proximity-api.service: ([\d.]+)", security.stdout)[1])
    assert score <= 6.0, security.stdout  # 9.6 UNSAFE unhardened
