import shutil
import subprocess

import pytest

from proximity.network import render
from proximity.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        dnsmasq_conf=str(tmp_path / "dnsmasq.conf"), leases_file=str(tmp_path / "leases"),
        systemd_dir=str(tmp_path / "systemd"),
    )


def test_stanza_is_the_seeds_and_loads_the_ruleset_file_at_boot(settings):
    lines = render.bridge_stanza(settings)
    assert lines[:6] == [
        "auto prox-net", "iface prox-net inet static", "\taddress 10.10.0.1/24",
        "\tbridge-ports none", "\tbridge-stp off", "\tbridge-fd 0",
    ]
    assert "\tpost-up echo 1 > /proc/sys/net/ipv4/ip_forward" in lines
    # Each rule is written once, in the ruleset file: the stanza only loads it (nft -f replaces the table).
    assert [line for line in lines if "nft" in line] == [f"\tpost-up nft -f {settings.ruleset_file}"]
    assert settings.ruleset_file == settings.dnsmasq_conf.parent / "proximity.nft"
    assert not any("iptables" in line or "post-down" in line for line in lines)


def test_dnsmasq_conf_binds_the_bridge_only_and_reads_nothing_else(settings):
    conf = render.dnsmasq_conf(settings)
    lines = conf.splitlines()
    for expected in [
        "interface=prox-net", "except-interface=lo", "bind-interfaces", "no-resolv", "no-hosts",
        "server=1.1.1.1", "server=8.8.8.8", "domain=prox.local", "local=/prox.local/",
        "dhcp-range=10.10.0.100,10.10.0.250,255.255.255.0,12h",
        "dhcp-option=option:router,10.10.0.1", "dhcp-option=option:dns-server,10.10.0.1",
        "dhcp-authoritative", "dhcp-rapid-commit", "no-ping", f"dhcp-leasefile={settings.leases_file}",
    ]:
        assert expected in lines
    assert not any(line.startswith(("conf-dir", "conf-file", "interface=vmbr0")) for line in lines)


@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq not installed")
def test_dnsmasq_accepts_the_rendered_config(settings, tmp_path):
    path = tmp_path / "test.conf"
    path.write_text(render.dnsmasq_conf(settings))
    result = subprocess.run(["dnsmasq", "--test", f"--conf-file={path}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr


def test_dnsmasq_argv_never_reads_the_distro_config(settings):
    for foreground in (True, False):
        argv = render.dnsmasq_argv(settings, "/usr/sbin/dnsmasq", foreground=foreground)
        assert f"--conf-file={settings.dnsmasq_conf}" in argv
        assert any(a.startswith("--pid-file=") for a in argv)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies(settings, tmp_path):
    unit = tmp_path / "proximity-dns.service"
    unit.write_text(render.systemd_unit(settings, shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"))
    text = unit.read_text()
    assert "After=network.target networking.service" in text
    assert "Restart=on-failure" in text
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "proximity-dns" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_container_net0(settings):
    assert render.container_net0(settings) == "name=eth0,bridge=prox-net,ip=dhcp,firewall=1"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_api_unit_verifies(settings, tmp_path):
    exe = tmp_path / "proximity"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "proximity-api.service"
    unit.write_text(render.api_unit(settings, str(exe), "127.0.0.1", 8080))
    assert "After=network-online.target networking.service proximity-dns.service" in unit.read_text()
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and "proximity-api" not in result.stderr, result.stderr
