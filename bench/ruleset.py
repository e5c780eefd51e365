"""The nftables table against the iptables rules it replaced, and the cost of applying it.

(a) TCP (iperf3) from a container to the "internet" test host 203.0.113.10 through NAT: with
    Proximity's ``table inet proximity`` against the previous release's iptables rules (MASQUERADE
    and the FORWARD rules, ``firewall.legacy_rules``) on the same sandbox path, alternating;
(b) applying the table at 10 zones in one transaction, as ``up`` does: render, ``nft -c``, ``nft -f``.
    Timed inside a bare namespace by a process that runs there (as on a real host: no ``ip netns
    exec`` around each nft), p95 of many runs.

Everything happens inside this module's own namespaces. Run alone:
``.venv/bin/python bench/ruleset.py [--quick]`` (or ``bench/run.py --only firewall``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from common import Row, median, percentile
from datapath import iperf3
from scale import LightClients, destroy_sandbox, proximity_up, sandbox_name, sandbox_settings

from proximity import sandbox as sandboxes
from proximity.host import Host
from proximity.network import firewall

CLIENT_ADDR = "10.10.0.23/24"  # outside the default DHCP range
APPLY = r"""
import ipaddress, json, os, subprocess, sys, tempfile, time
from proximity.network import nft
zones = tuple(nft.FirewallZone(f"z{i}", f"prox-z{i}", (ipaddress.ip_interface(f"10.{50 + i}.0.1/24"),
              ipaddress.ip_interface(f"fd00:{50 + i}::1/64"))) for i in range(int(sys.argv[1])))
spec = nft.FirewallSpec(zones, "vmbr0", frozenset({frozenset({"z0", "z1"})}) if len(zones) > 1 else frozenset())
fd, path = tempfile.mkstemp(suffix=".nft")
os.close(fd)
times = {"all": [], "render": [], "check": [], "apply": []}
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    text = nft.render_table(spec)
    rendered = time.perf_counter()
    subprocess.run(["nft", "-c", "-f", "-"], input=text, text=True, check=True)
    checked = time.perf_counter()
    with open(path, "w") as fh:
        fh.write(text)
    subprocess.run(["nft", "-f", path], check=True)
    end = time.perf_counter()
    for key, value in (("all", end - start), ("render", rendered - start), ("check", checked - rendered),
                       ("apply", end - checked)):
        times[key].append(value * 1000)
os.unlink(path)
print(json.dumps(times))
"""


def nat_rows(quick: bool) -> list[Row]:
    if shutil.which("iperf3") is None:
        raise RuntimeError("iperf3 is not installed: apt-get install iperf3")
    seconds, rounds = (1, 2) if quick else (3, 5)
    name = sandbox_name("bf")
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    gbps: dict[str, list[float]] = {"nft": [], "iptables": []}
    try:
        proximity_up(name)
        settings = sandbox_settings(sb)
        host = Host(name)
        clients = LightClients(sb, 1, tag="f")
        clients.create()
        (hostname,) = clients.hostnames
        clients.set_static(hostname, CLIENT_ADDR)
        client_ns = clients.ns(hostname)
        legacy = firewall.legacy_rules(settings, sandboxes.UPLINK, False)
        for _ in range(rounds):
            gbps["nft"].append(iperf3(sb.lan_ns, client_ns, sandboxes.INTERNET_HOST, seconds))
            host.run(["nft", "delete", "table", "inet", "proximity"])  # today's path instead: the iptables rules
            for rule in legacy:
                host.run(rule.argv(rule.add_op))
            try:
                gbps["iptables"].append(iperf3(sb.lan_ns, client_ns, sandboxes.INTERNET_HOST, seconds))
            finally:
                for rule in legacy:
                    host.run(rule.argv("-D"))
                host.run(["nft", "-f", str(settings.ruleset_file)])
        clients.destroy()
    finally:
        destroy_sandbox(name)
    ours, base = median(gbps["nft"]), median(gbps["iptables"])
    return [Row("TCP container -> internet host through NAT: nft table vs iptables rules", ours, base, "Gbit/s",
                ">= 95% of the iptables rules on the same path", ours >= 0.95 * base, lower_is_better=False,
                notes=f"{ours / base:.0%} of the baseline; iperf3 TCP, 1 stream, {seconds} s, median of {rounds}, "
                      "alternating", samples={"nft": gbps["nft"], "iptables": gbps["iptables"]})]


def apply_rows(quick: bool, zones: int = 10) -> list[Row]:
    runs = 20 if quick else 100
    ns = f"bfa{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", APPLY, str(zones), str(runs)],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        parts = json.loads(out)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)
    times = parts["all"]
    p95 = percentile(times, 95)
    steps = ", ".join(f"{key} {median(parts[key]):.1f}" for key in ("render", "check", "apply"))
    return [Row(f"apply the nft table at {zones} zones (render + nft -c + nft -f, one transaction), p95", p95, None,
                "ms", "p95 < 20 ms", p95 < 20,
                notes=f"median {median(times):.1f} ms ({steps} ms), max {max(times):.1f} ms, {runs} runs",
                samples=parts)]


def run(quick: bool = False) -> list[Row]:
    return [*apply_rows(quick), *nat_rows(quick)]


if __name__ == "__main__":
    from scale import print_rows

    started = time.perf_counter()
    print_rows(run(quick="--quick" in sys.argv))
    print(f"({time.perf_counter() - started:.1f} s)")
