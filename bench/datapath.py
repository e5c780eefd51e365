"""TCP throughput (iperf3) on Proximity's data path, each against the same path without Proximity.

(a) container to container over ``prox-net`` (two client namespaces, veth -> bridge -> veth)
    against a direct veth pair between two fresh namespaces. Two diagnostic rows take turns with it on
    the same bridge: without Proximity's table, and without the table and br_netfilter's IP hooks
    (``bridge-nf-call-iptables=0`` in the sandbox host), so each run shows what the bridge costs alone;
(b) container to the "internet" test host 203.0.113.10 through Proximity's NAT (bridge, routing,
    the nft table's masquerade out of vmbr0) against the same path routed without NAT (the table's
    postrouting chain flushed in the sandbox host, a return route 10.10.0.0/16 via 198.51.100.2 in
    NAME-lan).

Everything happens inside this module's own sandbox namespaces. Run alone:
``.venv/bin/python bench/datapath.py [--quick]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


from common import Row, median
from scale import (
    LightClients,
    destroy_sandbox,
    ip_batch,
    kill_pids,
    proximity_up,
    sandbox_name,
    sandbox_settings,
)

from proximity import sandbox as sandboxes
from proximity.host import Host

SERVER_ADDR, CLIENT_ADDR = "10.10.0.21", "10.10.0.22"  # outside the default DHCP range
PAIR_A, PAIR_B = "192.0.2.1", "192.0.2.2"  # the direct veth pair (TEST-NET-1, inside its namespaces)
PORT = 5201


def iperf3(server_ns: str, client_ns: str, server_addr: str, seconds: float) -> float:
    """One TCP run, client -> server; Gbit/s received. The server is one-off (-1) and killed by pid."""
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{server_ns}", "iperf3", "-s", "-1", "-B", server_addr,
                               "-p", str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the server listens
            listening = subprocess.run(["nsenter", f"--net=/run/netns/{server_ns}", "ss", "-Hltn",
                                        f"sport = :{PORT}"], capture_output=True, text=True, timeout=10, check=False).stdout
            if server_addr in listening:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 server in {server_ns} did not start: {server.stderr.read()}")
            time.sleep(0.02)
        result = subprocess.run(["nsenter", f"--net=/run/netns/{client_ns}", "iperf3", "-c", server_addr,
                                 "-p", str(PORT), "-t", f"{seconds:g}", "-J"],
                                capture_output=True, text=True, timeout=seconds + 30, check=False)
        data = json.loads(result.stdout or "{}")
        if result.returncode != 0 or "error" in data:
            raise RuntimeError(f"iperf3 {client_ns} -> {server_addr} failed: {data.get('error') or result.stderr}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if server.poll() is None:
            kill_pids([server.pid], "iperf3")
        server.wait(timeout=10)


class VethPair:
    """Two fresh namespaces ``SB-va`` and ``SB-vb`` joined by one veth pair (the baseline of (a)).

    Recorded as sandbox clients first, so ``sandbox.destroy`` removes them whatever happens.
    """

    def __init__(self, sb: sandboxes.Sandbox):
        self.sb = sb
        self.hostnames = ["va", "vb"]
        self.a, self.b = (f"{sb.name}-{h}" for h in self.hostnames)

    def create(self) -> None:
        records = self.sb.root / sandboxes.CLIENTS_DIR
        records.mkdir(parents=True, exist_ok=True)
        for hostname in self.hostnames:
            (records / f"{hostname}.json").write_text(json.dumps({"hostname": hostname, "ns": f"{self.sb.name}-{hostname}",
                                                                  "bridge": None, "host_veth": None}) + "\n")
        ip_batch([f"netns add {self.a}", f"netns add {self.b}"])
        ip_batch(["link set lo up", f"link add eth0 type veth peer name eth0 netns {self.b}",
                  f"addr add {PAIR_A}/24 dev eth0", "link set eth0 up"], ns=self.a)
        ip_batch(["link set lo up", f"addr add {PAIR_B}/24 dev eth0", "link set eth0 up"], ns=self.b)

    def destroy(self) -> None:
        for ns in (self.a, self.b):
            if (Path("/run/netns") / ns).exists():
                subprocess.run(["ip", "netns", "delete", ns], check=True, timeout=30)
        for hostname in self.hostnames:
            (self.sb.root / sandboxes.CLIENTS_DIR / f"{hostname}.json").unlink(missing_ok=True)


def run(quick: bool = False) -> list[Row]:
    if shutil.which("iperf3") is None:
        raise RuntimeError("iperf3 is not installed: apt-get install iperf3")
    seconds, rounds = (1, 1) if quick else (3, 5)
    name = sandbox_name("bp")
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    gbps: dict[str, list[float]] = {"bridge": [], "veth": [], "no table": [], "bare bridge": [], "nat": [], "routed": []}
    try:
        proximity_up(name)
        settings = sandbox_settings(sb)
        host = Host(name)
        clients = LightClients(sb, 2, tag="d")
        clients.create()
        server_host, client_host = clients.hostnames
        clients.set_static(server_host, f"{SERVER_ADDR}/24")
        clients.set_static(client_host, f"{CLIENT_ADDR}/24")
        server_ns, client_ns = clients.ns(server_host), clients.ns(client_host)
        pair = VethPair(sb)
        pair.create()
        nf_call = host.read_sysctl("net.bridge.bridge-nf-call-iptables")  # None: br_netfilter not loaded

        # (a) container to container: over prox-net against a direct veth pair; then, as diagnostics, the
        # same bridge without Proximity's table, and without it and br_netfilter's IP hooks (the bare bridge)
        for _ in range(rounds):
            gbps["bridge"].append(iperf3(server_ns, client_ns, SERVER_ADDR, seconds))
            gbps["veth"].append(iperf3(pair.b, pair.a, PAIR_B, seconds))
            if nf_call is None:
                continue
            host.run(["nft", "delete", "table", "inet", "proximity"])
            try:
                gbps["no table"].append(iperf3(server_ns, client_ns, SERVER_ADDR, seconds))
                host.write_sysctl("net.bridge.bridge-nf-call-iptables", "0")
                gbps["bare bridge"].append(iperf3(server_ns, client_ns, SERVER_ADDR, seconds))
            finally:
                host.write_sysctl("net.bridge.bridge-nf-call-iptables", nf_call)
                host.run(["nft", "-f", str(settings.ruleset_file)])

        # (b) container to the internet host: through NAT against the same path routed without NAT
        for _ in range(rounds):
            gbps["nat"].append(iperf3(sb.lan_ns, client_ns, sandboxes.INTERNET_HOST, seconds))
            host.run(["nft", "flush", "chain", "inet", "proximity", "postrouting"])
            ip_batch([f"route add {settings.subnet.supernet(new_prefix=16)} via {sandboxes.HOST_UPLINK_ADDR.split('/')[0]}"],
                     ns=sb.lan_ns)
            try:
                gbps["routed"].append(iperf3(sb.lan_ns, client_ns, sandboxes.INTERNET_HOST, seconds))
            finally:
                ip_batch([f"route del {settings.subnet.supernet(new_prefix=16)}"], ns=sb.lan_ns)
                host.run(["nft", "-f", str(settings.ruleset_file)])
        pair.destroy()
        clients.destroy()
    finally:
        destroy_sandbox(name)

    bridge, veth, nat, routed = (median(gbps[k]) for k in ("bridge", "veth", "nat", "routed"))
    runs = f"iperf3 TCP, 1 stream, {seconds} s, median of {rounds}"
    return [
        Row("TCP container -> container over prox-net", bridge, veth, "Gbit/s", ">= 90% of a direct veth pair",
            bridge >= 0.9 * veth, lower_is_better=False,
            notes=f"{bridge / veth:.0%} of the baseline (a veth pair between two namespaces); {runs}; "
                  f"bridge-nf-call-iptables={nf_call or 'n/a (no br_netfilter)'} in the sandbox host",
            samples={"prox_net": gbps["bridge"], "veth_pair": gbps["veth"]}),
        *[Row(f"TCP container -> container over prox-net, {what} (diagnostic)", median(gbps[what]), veth, "Gbit/s",
              "", None, lower_is_better=False,
              notes=f"{median(gbps[what]) / veth:.0%} of the baseline (the same veth pair, same rounds); {how}; {runs}",
              samples={what.replace(" ", "_"): gbps[what], "veth_pair": gbps["veth"]})
          for what, how in (("no table", "Proximity's table deleted, bridge-nf-call-iptables as the host has it"),
                            ("bare bridge", "no table and bridge-nf-call-iptables=0: what the kernel's bridge costs alone"))
          if gbps[what]],
        Row("TCP container -> internet host through NAT", nat, routed, "Gbit/s", ">= 80% of the same path without NAT",
            nat >= 0.8 * routed, lower_is_better=False,
            notes=f"{nat / routed:.0%} of the baseline (masquerade removed, return route in the LAN); {runs}",
            samples={"nat": gbps["nat"], "routed": gbps["routed"]}),
    ]


if __name__ == "__main__":
    from scale import print_rows

    started = time.perf_counter()
    print_rows(run(quick="--quick" in sys.argv))
    print(f"({time.perf_counter() - started:.1f} s)")
