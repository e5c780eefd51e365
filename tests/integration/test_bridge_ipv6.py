"""The bridge's inet6 stanza under real ifupdown2, in a sandbox host's namespace: its address is never
tentative, even on a bridge without ports (its pre-up turns DAD off after the inet stanza made the
bridge and before the address is added), so the zone's dnsmasq binds it and answers AAAA at once.

A second bridge with the same stanza minus the accept_dad line is the control: its address is
tentative (for good, on a bridge without ports: no carrier, so DAD never runs), so the check can fail. The dnsmasq is stopped by pid; the sandbox fixture deletes the
namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from proximity.host import Host
from proximity.network import render
from proximity.network.interfaces import IPV6_TAG, merge_block, merge_inet6
from proximity.network.reservations import Reservation, render_addn_hosts, render_dhcp_hosts
from proximity.sandbox.commands import ns_run
from proximity.sandbox.pve_host import ifreload
from proximity.settings import load_settings
from proximity.spec.state import ZoneState
from proximity.spec.zones import resolve
from tests.integration.tools import wait_or_fail

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(shutil.which("ifreload") is None or shutil.which("dnsmasq") is None,
                       reason="needs ifupdown2 and dnsmasq"),
]

# A DNS query for web-01.prox.local AAAA over UDP to the bridge's IPv6 address; prints the answer's
# last 16 bytes (the address) as text.
QUERY = r"""
import ipaddress, socket, struct, sys
name = b"".join(bytes([len(p)]) + p for p in b"web-01.prox.local".split(b".")) + b"\0"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0) + name + struct.pack(">HH", 28, 1), (sys.argv[1], 53))
answer = s.recv(512)
print(ipaddress.IPv6Address(answer[-16:]) if struct.unpack(">H", answer[6:8])[0] else "no answer")
"""


def addresses6(ns: str, bridge: str) -> list[dict]:
    out = ns_run(ns, ["ip", "-j", "-6", "addr", "show", "dev", bridge]).stdout
    return [a for link in json.loads(out or "[]") for a in link.get("addr_info", []) if a.get("scope") == "global"]


def stanzas(v, bridge: str, dad_off: bool) -> tuple[list[str], list[str]]:
    inet = [line.replace(v.bridge, bridge) for line in render.bridge_stanza(v) if "nft" not in line]  # no ruleset here
    inet6 = [line.replace(v.bridge, bridge) for line in render.bridge_stanza6(v) if dad_off or "accept_dad" not in line]
    assert any(IPV6_TAG in line for line in inet6)
    return inet, inet6


def test_the_bridge_address_is_never_tentative_and_dnsmasq_answers_on_it(sandbox):
    ns, host, sb = sandbox.name, Host(), sandbox  # the sandbox's directories: dnsmasq's own user reads them
    v = resolve(load_settings(ipv6="fd12:3456:789a:1::/64", state_dir=str(sb.state_dir), run_dir=str(sb.run_dir),
                              dnsmasq_conf=str(sb.dnsmasq_conf), leases_file=str(sb.state_dir / "leases")),
                ZoneState()).views()[0]
    control = resolve(load_settings(ipv6="fd12:3456:789a:2::/64", gateway="10.11.0.1/24",
                                    dhcp_start="10.11.0.100", dhcp_end="10.11.0.200"), ZoneState()).views()[0]
    original = host.read_text(sandbox.interfaces_file)
    text = merge_inet6(merge_block(original, stanzas(v, "pv6", True)[0]), "pv6", stanzas(v, "pv6", True)[1])
    inet, inet6 = stanzas(control, "pv6ctl", False)
    text += "\n" + "".join(line + "\n" for line in inet) + "\n" + "".join(line + "\n" for line in inet6)
    host.write_text(sandbox.interfaces_file, text)
    dnsmasq = None
    try:
        ifreload(ns)
        # Both read at once, not waited for: with DAD on, an address passes DAD 1-2 s later if the bridge
        # has a carrier (and never, without one). The control first, as soon as ifreload is done: the
        # same stanza without the accept_dad line, so its address is tentative.
        assert [(a["local"], a.get("tentative")) for a in addresses6(ns, "pv6ctl")] == [("fd12:3456:789a:2::1", True)]
        assert [(a["local"], a.get("tentative", False)) for a in addresses6(ns, "pv6")] == [
            ("fd12:3456:789a:1::1", False)]
        assert ns_run(ns, ["cat", "/proc/sys/net/ipv6/conf/pv6/accept_dad"]).stdout.strip() == "0"

        web = Reservation("web-01", "02:00:00:00:01:01", "10.10.0.100")
        v.dhcp_hosts_file.write_text(render_dhcp_hosts([web], v.subnet, v.ipv6_gateway))
        v.addn_hosts_file.write_text(render_addn_hosts([web], v.domain, v.subnet, v.ipv6_gateway))
        v.dnsmasq_conf.write_text(render.dnsmasq_conf(v).replace("interface=prox-net", "interface=pv6")
                                  .replace("ra-param=prox-net", "ra-param=pv6"))
        dnsmasq = subprocess.Popen(["ip", "netns", "exec", ns, "dnsmasq", f"--conf-file={v.dnsmasq_conf}",
                                    "--keep-in-foreground", "--log-facility=-", f"--pid-file={sb.run_dir / 'dns.pid'}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def answer() -> str | None:
            assert dnsmasq.poll() is None, f"dnsmasq exited: {dnsmasq.stdout.read()}"  # e.g. a bind refused
            result = ns_run(ns, [sys.executable, "-c", QUERY, "fd12:3456:789a:1::1"], check=False)
            return result.stdout.strip() if result.returncode == 0 else None

        assert wait_or_fail(answer, 10, "dnsmasq to answer AAAA on the bridge's IPv6 address") == "fd12:3456:789a:1::64"
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        host.write_text(sandbox.interfaces_file, original)
        ifreload(ns)
        for bridge in ("pv6", "pv6ctl"):  # ifreload leaves links it no longer configures
            ns_run(ns, ["ip", "link", "del", bridge], check=False)
