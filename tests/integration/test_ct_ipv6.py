"""`ct create` on prox-net with IPv6 on (lxc backend, not started): the reservation's stable IPv6 address is
in dnsmasq's dhcp-hosts and its AAAA record in addn-hosts and answered before the first boot, and net0
asks for DHCPv6; the IPv4-only prox-net's net0 stays as it was."""

from __future__ import annotations

import shutil

import pytest

from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from tests.integration.tools import proximity, resolve

pytestmark = pytest.mark.skipif(shutil.which("dhcpcd") is None, reason="ip6=dhcp needs dhcpcd: apt-get install dhcpcd-base")


def manager_of(sb) -> ContainerManager:
    return ContainerManager(NetworkManager(load_settings(**sb.settings_overrides())), LxcBackend(sb.name, sb.state_dir / "lxc"))


def test_a_container_on_dual_stack_prox_net_has_its_aaaa_before_boot(sandbox):
    sb = sandbox
    proximity("up", "--sandbox", sb.name)
    try:
        v4 = manager_of(sb).create("plain-4", start=False)
        assert "ip6=" not in manager_of(sb).backend.get_net0(v4.vmid)
        proximity("zone", "set", "prox-net", "--ipv6", "auto", "--sandbox", sb.name)
        manager = manager_of(sb)
        info = manager.create("dual-6", start=False)
        assert ",ip6=dhcp," in manager.backend.get_net0(info.vmid)
        prefix = manager.settings.ipv6_gateway.network
        hosts = manager.settings.addn_hosts_file.read_text()
        aaaa = [line.split()[0] for line in hosts.splitlines() if "dual-6.prox.local" in line and ":" in line.split()[0]]
        assert len(aaaa) == 1 and aaaa[0].startswith(str(prefix.network_address).rstrip(":")), hosts
        assert f",[{aaaa[0]}],dual-6" in manager.settings.dhcp_hosts_file.read_text()
        plain = [line for line in manager.settings.dhcp_hosts_file.read_text().splitlines() if line.endswith(",plain-4")]
        assert len(plain) == 1 and ",[" in plain[0], plain  # the earlier reservation got its IPv6 address too
        assert resolve(sb.name, "dual-6.prox.local", "10.10.0.1", rdtype="AAAA") == aaaa
        assert json_up_actions(sb) == []  # `up` writes the same files: nothing to do
    finally:
        manager = manager_of(sb)
        for name in ("dual-6", "plain-4"):
            manager.destroy(name)
        proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False)


def json_up_actions(sb) -> list[str]:
    import json

    return json.loads(proximity("up", "--json", "--sandbox", sb.name).stdout)["actions"]
