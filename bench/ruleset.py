"""The nftables table against the iptables rules it replaced, and the cost of applying it.

(a) TCP (iperf3) from a container to the "internet" test host 203.0.113.10 through NAT: with
    Proximity's ``table inet proximity`` against the previous release's iptables rules (MASQUERADE
    and the FORWARD rules, ``firewall.legacy_rules``) on the same sandbox path, alternating;
(b) applying the table at 10 zones in one transaction, as ``up`` does (``ApplyRuleset``: render, check,
    one transaction, digests recorded; in-process through libnftables), against the nft binary's
    ``nft -c`` then ``nft -f``, alternating. Timed inside a bare namespace by a process that runs there
    (as on a real host), and from outside it (as in a sandbox), p95 of many runs.

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
import ipaddress, json, os, shutil, sys, tempfile, time
from pathlib import Path
from proximity.host import Host
from proximity.network import nft
from proximity.network.changes import Env
from proximity.network.nft_changes import ApplyRuleset
from proximity.settings import load_settings
zones = tuple(nft.FirewallZone(f"z{i}", f"prox-z{i}", (ipaddress.ip_interface(f"10.{50 + i}.0.1/24"),
              ipaddress.ip_interface(f"fd00:{50 + i}::1/64"))) for i in range(int(sys.argv[1])))
spec = nft.FirewallSpec(zones, "vmbr0", frozenset({frozenset({"z0", "z1"})}) if len(zones) > 1 else frozenset())
tmp = Path(tempfile.mkdtemp())
settings = load_settings(dnsmasq_conf=str(tmp / "dnsmasq.conf"), state_dir=str(tmp / "state"),
                         leases_file=str(tmp / "leases"))
settings.ruleset_file.parent.mkdir(parents=True, exist_ok=True)
inside = sys.argv[3] == "inside"  # else: from outside, acting in namespace NAME
if os.stat(f"/run/netns/{sys.argv[4]}").st_ino != os.stat("/proc/self/ns/net").st_ino and inside:
    sys.exit(f"not inside network namespace {sys.argv[4]}: refusing to load a table here")
env = Env(Host(None if inside else sys.argv[4]), settings, None)
path = tmp / "binary.nft"
times = {"all": [], "render": [], "check+apply": [], "nft": [], "nft check": [], "nft apply": [], "dry-run check": []}
import ctypes
from proximity.network import libnft
lib = libnft.library()
lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]


def dry_run_check(ctx):  # what `nft -c` does, in-process: the kernel validates the batch, then aborts it
    lib.nft_ctx_set_dry_run(ctx.ctx, True)
    ctx.run(text)
    lib.nft_ctx_set_dry_run(ctx.ctx, False)


import threading


def settled():  # each step starts with the contexts of the one before closed (their close waits out a grace period)
    for thread in threading.enumerate():
        if thread.name == "libnft":
            thread.join()


for _ in range(int(sys.argv[2])):
    # Proximity: ApplyRuleset as `up` runs it (check, write, one transaction, digests recorded)
    settled()
    start = time.perf_counter()
    text = nft.render_table(spec)
    rendered = time.perf_counter()
    ApplyRuleset(settings.ruleset_file, text, env.host.read_text(settings.ruleset_file)).apply(env)
    end = time.perf_counter()
    times["all"].append((end - start) * 1000)
    times["render"].append((rendered - start) * 1000)
    times["check+apply"].append((end - rendered) * 1000)
    # baseline, alternating: the nft binary, `nft -c -f -` then `nft -f FILE`, as the previous ApplyRuleset
    # ran them (through `ip netns exec NAME` from outside the namespace)
    settled()
    start = time.perf_counter()
    text = nft.render_table(spec)
    assert env.host.query(["nft", "-c", "-f", "-"], input=text).ok
    checked = time.perf_counter()
    path.write_text(text)
    env.host.run(["nft", "-f", str(path)])
    end = time.perf_counter()
    times["nft"].append((end - start) * 1000)
    times["nft check"].append((checked - start) * 1000)
    times["nft apply"].append((end - checked) * 1000)
    # diagnostic, alternating: the in-process dry run (nft_ctx_set_dry_run) this does not use
    settled()
    start = time.perf_counter()
    libnft._in_thread(lib, env.host.netns or "", dry_run_check)
    times["dry-run check"].append((time.perf_counter() - start) * 1000)
shutil.rmtree(tmp)
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
    """Inside the namespace (as on a real host: Host(None), no ``ip netns exec``), and from outside it
    as in a sandbox (Host(NAME): the in-process path setns()es a thread; the binary runs through
    ``ip netns exec``). Each alternates with the nft binary's check + apply, in the same process."""
    runs = 20 if quick else 100
    ns = f"bfa{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        inside = json.loads(subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", APPLY, str(zones),
                                            str(runs), "inside", ns], capture_output=True, text=True, timeout=300,
                                           check=True).stdout)
        outside = json.loads(subprocess.run([sys.executable, "-c", APPLY, str(zones), str(runs // 2), "outside", ns],
                                            capture_output=True, text=True, timeout=300, check=True).stdout)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)
    ours, base = (percentile(inside[key], 95) for key in ("all", "nft"))
    sandbox = percentile(outside["all"], 95)
    steps = ", ".join(f"{key} {median(inside[key]):.1f}" for key in ("render", "check+apply", "nft check", "nft apply",
                                                                       "dry-run check"))
    return [Row(f"apply the nft table at {zones} zones (render, check, one transaction, digests recorded), p95",
                ours, base, "ms", "p95 < 20 ms", ours < 20,
                notes=f"median {median(inside['all']):.1f} ms, max {max(inside['all']):.1f} ms, {runs} runs, "
                      f"in-process (libnftables); baseline: the nft binary, nft -c then nft -f, alternating; "
                      f"medians: {steps} ms (p95 of the in-process dry-run check alone: "
                      f"{percentile(inside['dry-run check'], 95):.1f}); from outside the namespace (a sandbox: "
                      f"setns) p95 {sandbox:.1f} ms",
                samples={**inside, **{f"outside {key}": value for key, value in outside.items()}})]


def run(quick: bool = False) -> list[Row]:
    return [*apply_rows(quick), *nat_rows(quick)]


if __name__ == "__main__":
    from scale import print_rows

    started = time.perf_counter()
    print_rows(run(quick="--quick" in sys.argv))
    print(f"({time.perf_counter() - started:.1f} s)")
