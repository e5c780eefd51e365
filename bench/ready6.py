"""Network-ready time of dual-stack containers: start to an IPv6 address past DAD whose AAAA record resolves.

Real LXC containers (the lxc backend, ``net0 ... ip=dhcp,ip6=dhcp``: udhcpc and dhcpcd, the kernel with
optimistic DAD, no router-solicitation delay and a 250 ms RetransTimer, see ``data/ct-init.sh``) on prox-net with
``zone set prox-net --ipv6 auto``, made by ``ContainerManager`` (a reservation: a stable IPv6 address and
its AAAA record in dnsmasq's hosts file before the first boot). Each container is started alone, as
``bench/containers.py`` does for IPv4, and timed from the start call:

- ``ip -ts monitor address`` in the container's namespace stamps the kernel's address events: the
  link-local, the SLAAC and the DHCPv6 address each added (tentative) and past DAD;
- a packet socket on prox-net (in the sandbox host) stamps the container's router solicitation, the
  router advertisement that answers it, and its DHCPv6 Solicit and dnsmasq's Reply;
- the AAAA record is asked of 10.10.0.1 from a peer namespace until it names the DHCPv6 address.

Network-ready is the later of "the reserved address passed DAD" and "its AAAA resolves". The rows
break it down so the floor shows: two DAD waits of RetransTimer each (the link-local one, which the
kernel's RS and dhcpcd's Solicit wait for, then the DHCPv6 address's own). A second row runs the same
containers, taking turns, with RFC 4861's default RetransTimer (1 s) instead of the init's 250 ms.

Run alone: ``.venv/bin/python bench/run.py --only "network-ready IPv6"``.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import Row, median, percentile

from proximity import sandbox as sandboxes
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.host import Host, inside_netns
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings

PROXIMITY = [sys.executable, "-m", "proximity"]
GATEWAY = "10.10.0.1"
ETH_P_ALL = 0x0003
KINDS = {133: "RS", 134: "RA"}  # ICMPv6 types; DHCPv6 message types 1 Solicit, 7 Reply
DHCP6 = {1: "Solicit", 7: "Reply"}


class Capture:
    """Router solicitations and advertisements and DHCPv6 Solicit/Reply on ``bridge``, stamped on arrival."""

    def __init__(self, ns: str, bridge: str):
        with inside_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((bridge, 0))
        self.sock.settimeout(0.2)
        self.events: list[tuple[float, str, str, str]] = []  # (time, kind, source MAC, destination MAC)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                frame = self.sock.recv(2048)
            except (socket.timeout, OSError):
                continue
            now = time.time()
            if len(frame) < 62 or frame[12:14] != b"\x86\xdd":
                continue
            dst, src, nh, l4 = frame[0:6].hex(":"), frame[6:12].hex(":"), frame[20], frame[54:]
            if nh == 58 and l4[0] in KINDS:
                self.events.append((now, KINDS[l4[0]], src, dst))
            elif nh == 17 and struct.unpack("!H", l4[2:4])[0] in (546, 547) and l4[8] in DHCP6:
                self.events.append((now, DHCP6[l4[8]], src, dst))

    def first(self, kind: str, after: float, src: str | None = None, dst: str | None = None) -> float | None:
        return next((t for t, k, s, d in sorted(self.events) if k == kind and t >= after
                     and (src is None or s == src) and (dst is None or d == dst)), None)

    def stop(self) -> None:
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


class Addresses:
    """The kernel's address events in a container's namespace: when each address was added and past DAD."""

    LINE = re.compile(r"\[([0-9T:.-]+)\] (Deleted )?.*inet6 (\S+)/\d+ scope (\S+) (.*)")

    def __init__(self, pid: int):
        self.added: dict[str, float] = {}
        self.passed: dict[str, float] = {}
        self.proc = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-ts", "-o", "monitor",
                                      "address", "dev", "eth0"], stdout=subprocess.PIPE, text=True)
        self.pid = pid
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.proc.stdout:
            m = self.LINE.match(line)
            if not m or m.group(2):
                continue
            stamp, addr = datetime.datetime.fromisoformat(m.group(1)).timestamp(), m.group(3)
            self.added.setdefault(addr, stamp)
            if "tentative" not in m.group(5):
                self.passed.setdefault(addr, stamp)

    def catch_up(self) -> None:
        """Addresses that were there before the monitor listened (added then, at the latest)."""
        out = subprocess.run(["nsenter", f"--net=/proc/{self.pid}/ns/net", "ip", "-6", "-o", "addr", "show", "dev",
                              "eth0"], capture_output=True, text=True, timeout=10).stdout
        now = time.time()
        for addr, rest in re.findall(r"inet6 (\S+)/\d+ (.*)", out):
            self.added.setdefault(addr, now)
            if "tentative" not in rest:
                self.passed.setdefault(addr, now)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.thread.join(timeout=5)


def measure(backend: LxcBackend, vmid: int, mac: str, fqdn: str, peer: Host, cap: Capture,
            ipv4: Callable[[], bool], timeout: float = 20) -> dict[str, float]:
    """Seconds from the start call to each step of one container's IPv6 (inf: not within ``timeout``)."""
    t0 = time.time()
    backend.start(vmid)
    pid = backend.container_pid(vmid)
    watch = Addresses(pid)
    watch.catch_up()
    expected = named = bound = None
    deadline = t0 + timeout
    while time.time() < deadline:
        answer = peer.resolve(fqdn, GATEWAY, timeout=0.2, attempts=1, rdtype="AAAA") or []
        if answer and expected is None:
            expected = answer[0]
        if expected and named is None and answer == [expected]:
            named = time.time()
        if bound is None and ipv4():
            bound = time.time()
        if expected and expected in watch.passed and named is not None and bound is not None:
            break
        time.sleep(0.01)
    watch.stop()
    inf = float("inf")

    def since(t: float | None) -> float:
        return inf if t is None else t - t0

    link_local = next((a for a in watch.passed if a.startswith("fe80:")), None)
    slaac = next((a for a in watch.passed if a != expected and not a.startswith("fe80:")), None)
    rs = cap.first("RS", t0, src=mac)
    ra = cap.first("RA", rs, dst=mac) or cap.first("RA", rs) if rs else None
    solicit = cap.first("Solicit", t0, src=mac)
    reply = cap.first("Reply", solicit, dst=mac) if solicit else None
    dad = watch.passed.get(expected) if expected else None
    steps = {
        "link-local added": since(watch.added.get(link_local) if link_local else None),
        "link-local past DAD": since(watch.passed.get(link_local) if link_local else None),
        "RS sent": since(rs), "RA received": since(ra),
        "Solicit sent": since(solicit), "Reply received": since(reply),
        "DHCPv6 address added": since(watch.added.get(expected) if expected else None),
        "DHCPv6 address past DAD": since(dad),
        "SLAAC address past DAD": since(watch.passed.get(slaac) if slaac else None),
        "AAAA resolves": since(named), "IPv4 bound": since(bound),
    }
    steps["network-ready"] = max(steps["DHCPv6 address past DAD"], steps["AAAA resolves"])
    return steps


def container_sysctls(backend: LxcBackend, vmid: int) -> str:
    names = ["optimistic_dad", "use_optimistic", "router_solicitation_delay", "dad_transmits"]
    paths = [f"/proc/sys/net/ipv6/conf/eth0/{k}" for k in names] + ["/proc/sys/net/ipv6/neigh/eth0/retrans_time_ms"]
    values = backend.exec(vmid, ["cat", *paths]).stdout.split()
    return ", ".join(f"{k}={v}" for k, v in zip([*names, "retrans_time_ms"], values))


def with_retrans_timer(backend: LxcBackend, vmid: int, ms: int) -> None:
    """The comparison row: the container's init sets RetransTimer, the wait of every DAD, to ``ms``."""
    init = backend.lxcpath / str(vmid) / "rootfs/sbin/init"
    text = init.read_text()
    shipped = 'echo 250 >"/proc/sys/net/ipv6/neigh/$1/retrans_time_ms"'
    if shipped not in text:
        raise RuntimeError(f"{init}: no {shipped!r} to patch: data/ct-init.sh changed")
    init.write_text(text.replace(shipped, shipped.replace("250", str(ms))))


RFC_RETRANS_MS = 1000  # RFC 4861's RETRANS_TIMER, the kernel's default


def run(count: int = 20) -> list[Row]:
    name = f"b6{os.getpid() % 10000}"
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    loads = [" ".join(Path("/proc/loadavg").read_text().split()[:3])]
    samples: dict[str, dict[str, list[float]]] = {"shipped": {}, "rfc": {}}
    sysctls: dict[str, str] = {}
    cap = None
    try:
        for argv in (["up"], ["zone", "set", "prox-net", "--ipv6", "auto"]):
            subprocess.run([*PROXIMITY, *argv, "--sandbox", name], check=True, capture_output=True, timeout=300)
        settings = load_settings(**sb.settings_overrides())
        peer = Host(sandboxes.attach_client(sb, "peer").ns)
        backend = LxcBackend(name, sb.state_dir / "lxc")
        manager = ContainerManager(NetworkManager(settings), backend)
        cap = Capture(name, settings.bridge)
        for i in range(count):  # take turns, so that a noisy moment falls on both alike
            for variant in samples:
                info = manager.create(f"{variant[0]}6-{i:02d}", start=False)
                if "ip6=dhcp" not in backend.get_net0(info.vmid):
                    raise RuntimeError(f"CT {info.vmid}'s net0 asks for no DHCPv6: {backend.get_net0(info.vmid)}")
                if variant == "rfc":
                    with_retrans_timer(backend, info.vmid, RFC_RETRANS_MS)
                resolv = backend.lxcpath / str(info.vmid) / "rootfs/etc/resolv.conf"
                steps = measure(backend, info.vmid, info.mac.lower(), f"{info.hostname}.{settings.domain}", peer, cap,
                                ipv4=lambda: resolv.exists() and resolv.stat().st_size > 0)
                for what, seconds in steps.items():
                    samples[variant].setdefault(what, []).append(seconds)
                sysctls.setdefault(variant, container_sysctls(backend, info.vmid))
                backend.stop(info.vmid)  # one running at a time, as on a host that starts them one by one
        loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
    finally:
        if cap is not None:
            cap.stop()
        sandboxes.destroy(name)
    shipped, rfc_default = samples["shipped"], samples["rfc"]
    ready, v4 = shipped["network-ready"], shipped["IPv4 bound"]
    p95 = percentile(ready, 95)
    return [
        Row(f"{count} dual-stack containers: start → DHCPv6 address past DAD and its AAAA, p95", p95,
            percentile(v4, 95), "s", "p95 < 2 s", p95 < 2,
            notes=f"baseline: the same containers' IPv4 (udhcpc bound; A record before boot); median "
                  f"{median(ready):.3f} s, max {max(ready):.3f} s; medians: {breakdown(shipped)}; container: "
                  f"{sysctls['shipped']}; load {' → '.join(loads)}",
            samples={"proximity": ready, "baseline": v4, **{f"step: {k}": v for k, v in shipped.items()}}),
        Row(f"the same with RFC 4861's default RetransTimer ({RFC_RETRANS_MS} ms) in the container, p95",
            percentile(rfc_default["network-ready"], 95), p95, "s", "", None,
            notes=f"baseline: as shipped (RetransTimer 250 ms), same run, taking turns; median "
                  f"{median(rfc_default['network-ready']):.3f} s; medians: {breakdown(rfc_default)}; container: "
                  f"{sysctls['rfc']}", samples={"proximity": rfc_default["network-ready"], "baseline": ready}),
    ]


def breakdown(samples: dict[str, list[float]]) -> str:
    def gap(a: str, b: str) -> float:
        return median([y - x for x, y in zip(samples[a], samples[b])])

    return (f"start → link-local added {median(samples['link-local added']):.3f} s; its DAD "
            f"{gap('link-local added', 'link-local past DAD'):.3f} s; LL past DAD → RS "
            f"{gap('link-local past DAD', 'RS sent') * 1000:.2f} ms; RS → RA {gap('RS sent', 'RA received') * 1000:.2f} "
            f"ms; LL past DAD → Solicit {gap('link-local past DAD', 'Solicit sent') * 1000:.2f} ms; Solicit → Reply "
            f"{gap('Solicit sent', 'Reply received') * 1000:.2f} ms; Reply → address added "
            f"{gap('Reply received', 'DHCPv6 address added') * 1000:.2f} ms; its DAD "
            f"{gap('DHCPv6 address added', 'DHCPv6 address past DAD'):.3f} s; AAAA resolves "
            f"{median(samples['AAAA resolves']):.3f} s; SLAAC past DAD {median(samples['SLAAC address past DAD']):.3f} s")


if __name__ == "__main__":
    from scale import print_rows

    print_rows(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
