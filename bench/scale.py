"""Scale: a /22 pool with 1,000 light DHCP clients, reservations at 1,000, admission, API latency.

Each light client is a network namespace whose ``eth0`` (a veth) is a port of ``prox-net`` in the
sandbox host, running busybox ``udhcpc -x hostname:cNNNN``. They are built in batches (``ip -batch``,
ioctl) because ``sandbox.attach_client`` takes about 3 s each. Every namespace is recorded under the
sandbox's ``clients/`` directory before it exists, so ``sandbox.destroy`` removes it even when this
module dies half-way; this module also removes them itself, in ``finally``.

Run alone: ``.venv/bin/python bench/scale.py [--quick]``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path


import dns.exception
import dns.message
import dns.rdatatype
from common import Row, median, percentile

from proximity import sandbox as sandboxes
from proximity.host import Host, inside_netns, pid_cmdline
from proximity.network.dnsmasq import SupervisedDns
from proximity.settings import Settings, load_settings

GATEWAY = "10.10.0.1"
WIDE_POOL = {"gateway": "10.10.0.1/22", "dhcp_start": "10.10.0.10", "dhcp_end": "10.10.3.250"}
PEER_ADDR = "10.10.3.254/22"
LEASE_TIMEOUT = 60.0  # seconds for N clients to get their leases
BASELINE_TIMEOUT = 90.0  # outside the DHCP range: the peer that asks for the names
BRIDGE = "prox-net"
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP, IFF_RUNNING = 0x8913, 0x8914, 0x1, 0x40


# --------------------------------------------------------------------------- sandbox helpers


def sandbox_name(prefix: str) -> str:
    """A short unique sandbox name (<= 10 chars)."""
    return f"{prefix}{os.getpid() % 10000}"


def proximity_up(name: str, overrides: dict[str, str] | None = None) -> None:
    """``python -m proximity up --sandbox NAME`` with PROXIMITY_* settings in its environment."""
    env = dict(os.environ)
    env.update({f"PROXIMITY_{key.upper()}": value for key, value in (overrides or {}).items()})
    result = subprocess.run([sys.executable, "-m", "proximity", "up", "--sandbox", name], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"proximity up --sandbox {name} failed: {result.stderr[-2000:] or result.stdout[-2000:]}")


def sandbox_settings(sb: sandboxes.Sandbox, **overrides: object) -> Settings:
    return load_settings(**sb.settings_overrides(), **overrides)


def leftover_namespaces(name: str) -> list[str]:
    """Namespaces of sandbox ``name`` (its own, -lan, clients) still present."""
    return sorted(p.name for p in Path("/run/netns").iterdir() if p.name == name or p.name.startswith(f"{name}-"))


_LAUNCHERS: list[subprocess.Popen] = []  # udhcpc launchers: their children may wait at a gate, outside any namespace


def stop_launchers() -> None:
    """Kill every udhcpc launcher's process group (its own session) that is still running."""
    for launcher in _LAUNCHERS:
        if launcher.poll() is None:
            try:
                os.killpg(launcher.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            launcher.wait(timeout=10)
    _LAUNCHERS.clear()


def destroy_sandbox(name: str) -> None:
    """Destroy the sandbox (stops its dnsmasq, its LXC containers, removes its namespaces); check it."""
    stop_launchers()
    sandboxes.destroy(name)
    left = leftover_namespaces(name)
    if left:
        raise RuntimeError(f"namespaces left after destroying sandbox {name}: {left}")


def dnsmasq_pid(settings: Settings) -> int | None:
    return SupervisedDns(Host(settings.netns), settings).running_pid()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_sysctl_in(ns: str, key: str, value: str) -> None:
    """Write a sysctl of namespace ``ns`` (this thread enters it; /proc/sys/net follows the thread)."""
    with inside_netns(ns), open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
        fh.write(value)


def link_up(ns: str, *ifnames: str) -> None:
    """Set interfaces up inside ``ns`` with an ioctl (no process, about 50 µs)."""
    with inside_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for ifname in ifnames:
            req = struct.pack("16sh", ifname.encode(), 0)
            flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", ifname.encode(), flags | IFF_UP))
    finally:
        sock.close()


def link_running(ns: str, ifname: str) -> bool:
    """IFF_RUNNING: the kernel's link watcher has seen the carrier (until then the qdisc drops)."""
    with inside_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh", ifname.encode(), 0)
        return bool(struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1] & IFF_RUNNING)
    finally:
        sock.close()


def ip_batch(lines: Iterable[str], ns: str | None = None, timeout: float = 120) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    text = "".join(line + "\n" for line in lines)
    result = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()[-1000:]}")


def flush_neighbours(ns: str) -> None:
    """Forget the gateway's MAC. prox-net has no fixed MAC: it takes the lowest MAC of its ports and
    changes when that port goes away, which strands a client that cached the old one (see
    :func:`gateway_outage`); each measurement starts from a fresh ARP lookup."""
    ip_batch(["neigh flush all"], ns=ns)


def bridge_batch(ns: str, lines: Iterable[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    result = subprocess.run(["bridge", "-n", ns, "-batch", "-"], input=text, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"bridge -n {ns} -batch failed: {result.stderr.strip()[-1000:]}")


def kill_pids(pids: Iterable[int], must_contain: str) -> None:
    """SIGKILL each pid whose command line still contains ``must_contain`` (never a reused pid)."""
    for pid in pids:
        cmdline = pid_cmdline(pid)
        if cmdline and any(must_contain in part for part in cmdline):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- light clients


class LightClients:
    """``count`` client namespaces ``SB-<tag>NNNN`` with ``eth0`` on the sandbox's bridge.

    The host side of each veth is ``v<tag>NNNN`` in the sandbox host. IPv6 is off on both ends
    (1,000 ports each sending DAD/MLD/RS multicast would flood the bridge 1,000 x 1,000 times).
    """

    def __init__(self, sb: sandboxes.Sandbox, count: int, tag: str = "c", bridge: str = BRIDGE,
                 mac: Callable[[str], str] | None = None):
        if not tag.isalpha() or len(tag) > 3:
            raise ValueError("tag: 1-3 letters")
        self.sb, self.tag, self.bridge, self.mac = sb, tag, bridge, mac
        self.hostnames = [f"{tag}{i:04d}" for i in range(1, count + 1)]
        self.launchers: list[subprocess.Popen] = []
        self.pid_files: list[Path] = []
        self.pids: list[int] = []
        self.gate: Path | None = None
        self.rounds = 0

    def ns(self, hostname: str) -> str:
        return f"{self.sb.name}-{hostname}"

    @staticmethod
    def veth(hostname: str) -> str:
        return f"v{hostname}"  # <= 15 chars

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(h) for h in self.hostnames]

    def _record(self, hostname: str) -> Path:
        return self.sb.root / sandboxes.CLIENTS_DIR / f"{hostname}.json"

    def create(self) -> float:
        """Build every namespace and veth; returns the seconds it took."""
        start = time.perf_counter()
        records = self.sb.root / sandboxes.CLIENTS_DIR
        records.mkdir(parents=True, exist_ok=True)
        for hostname in self.hostnames:  # first: sandbox.destroy removes what these name
            self._record(hostname).write_text(json.dumps(
                {"hostname": hostname, "ns": self.ns(hostname), "bridge": self.bridge,
                 "host_veth": self.veth(hostname)}) + "\n")
        ip_batch(f"netns add {ns}" for ns in self.namespaces)
        for ns in self.namespaces:
            write_sysctl_in(ns, "net.ipv6.conf.default.disable_ipv6", "1")
            write_sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        host_default = "net.ipv6.conf.default.disable_ipv6"
        before = Host(self.sb.name).read_sysctl(host_default) or "0"
        write_sysctl_in(self.sb.name, host_default, "1")  # the new host-side veths only
        try:
            lines = []
            for hostname in self.hostnames:
                veth = self.veth(hostname)
                address = f" address {self.mac(hostname)}" if self.mac else ""
                lines += [f"link add {veth} type veth peer name eth0{address} netns {self.ns(hostname)}",
                          f"link set {veth} master {self.bridge}", f"link set {veth} up"]
            ip_batch(lines, ns=self.sb.name)
        finally:
            write_sysctl_in(self.sb.name, host_default, before)
        for ns in self.namespaces:
            link_up(ns, "lo", "eth0")
        self.wait_ready()
        return time.perf_counter() - start

    def wait_ready(self, timeout: float = 20) -> None:
        """Until every eth0 is running and every host-side port forwards (the kernel's link watcher
        acts up to 1 s after a carrier change; a DHCP discover sent before that is dropped)."""
        deadline = time.monotonic() + timeout
        pending = set(self.namespaces)
        ports = {self.veth(h) for h in self.hostnames}
        while time.monotonic() < deadline:
            pending = {ns for ns in pending if not link_running(ns, "eth0")}
            shown = subprocess.run(["bridge", "-n", self.sb.name, "-j", "link", "show"], capture_output=True,
                                   text=True, timeout=30, check=False).stdout
            forwarding = {p.get("ifname") for p in json.loads(shown or "[]") if p.get("state") == "forwarding"}
            if not pending and ports <= forwarding:
                return
            time.sleep(0.05)
        raise RuntimeError(f"clients not ready after {timeout:g} s: {len(pending)} eth0 down, "
                           f"{len(ports - forwarding)} ports not forwarding")

    def set_static(self, hostname: str, address: str, gateway: str | None = GATEWAY) -> None:
        ns = self.ns(hostname)
        lines = [f"addr add {address} dev eth0"] + ([f"route add default via {gateway}"] if gateway else [])
        ip_batch(lines, ns=ns)

    def prepare_dhcp(self, timeout: float = 60) -> None:
        """Fork one busybox udhcpc per client, each held at a gate (a FIFO) until :meth:`release`.

        The clock then measures the DHCP server, not 1,000 forks on 2 cores. Like a container's
        DHCP client, each one retries until it has a lease (3 discovers 1 s apart, then again after
        1 s) and exits once it has one (``-q``). ``-s /bin/true``: no address is configured.
        """
        run = self.sb.run_dir
        run.mkdir(parents=True, exist_ok=True)
        k = self.rounds = self.rounds + 1
        self.gate, pid_file = run / f"gate-{self.tag}-{k}", run / f"udhcpc-{self.tag}-{k}.pids"
        script = run / f"udhcpc-{self.tag}-{k}.sh"
        self.gate.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        os.mkfifo(self.gate)
        lines = ["#!/bin/sh", "pids="]
        for hostname in self.hostnames:
            lines.append(f"nsenter --net=/run/netns/{self.ns(hostname)} busybox udhcpc -i eth0 -f -q -t 3 -T 1 -A 1 "
                         f"-s /bin/true -x hostname:{hostname} <{self.gate} >/dev/null 2>&1 &")
            lines.append('pids="$pids $!"')
        lines += [f"echo $pids > {pid_file}.tmp", f"mv {pid_file}.tmp {pid_file}", "wait"]
        script.write_text("\n".join(lines) + "\n")
        # its own session: os.killpg reaches every child, even one still waiting at the gate
        launcher = subprocess.Popen(["sh", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        self.launchers.append(launcher)
        _LAUNCHERS.append(launcher)
        self.pid_files.append(pid_file)
        deadline = time.monotonic() + timeout
        while not pid_file.exists():
            if time.monotonic() > deadline or launcher.poll() is not None:
                raise RuntimeError(f"the udhcpc launcher did not fork {len(self.hostnames)} clients in {timeout:g} s")
            time.sleep(0.02)
        self.pids = [int(p) for p in pid_file.read_text().split()]

    def release(self) -> None:
        """Open the gate: every client starts now. The gate stays open until all have started."""
        fd = os.open(self.gate, os.O_WRONLY)  # returns as soon as the first client waits at the gate
        pids = list(self.pids)

        def close_when_started() -> None:
            deadline = time.monotonic() + 30
            pending = set(pids)
            while pending and time.monotonic() < deadline:
                pending = {p for p in pending if (c := pid_cmdline(p)) is not None and "udhcpc" not in c}
                time.sleep(0.05)
            os.close(fd)

        threading.Thread(target=close_when_started, daemon=True).start()

    def stop_dhcp(self) -> None:
        for launcher in self.launchers:
            if launcher.poll() is None:
                try:
                    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's own session: its children
                except ProcessLookupError:
                    pass
            launcher.wait(timeout=10)
        for pid_file in self.pid_files:
            try:
                pids = [int(p) for p in pid_file.read_text().split()]
            except (OSError, ValueError):
                pids = []
            kill_pids(pids, "udhcpc")
        self.launchers.clear()

    def destroy(self) -> None:
        """Stop the clients and delete their namespaces (the veths go with them)."""
        self.stop_dhcp()
        present = [ns for ns in self.namespaces if (Path("/run/netns") / ns).exists()]
        if present:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns delete {ns}\n" for ns in present),
                           capture_output=True, text=True, timeout=300, check=False)
        left = [ns for ns in self.namespaces if (Path("/run/netns") / ns).exists()]
        if left:
            raise RuntimeError(f"could not delete namespaces {left[:5]}...")
        # The kernel tears a namespace down in the background: wait until its veth has left the bridge
        # (prox-net may change its MAC then, see flush_neighbours).
        ours = {self.veth(h) for h in self.hostnames}
        deadline = time.monotonic() + 60
        while (Path("/run/netns") / self.sb.name).exists() and time.monotonic() < deadline:
            shown = subprocess.run(["ip", "-n", self.sb.name, "-j", "link", "show"], capture_output=True, text=True,
                                   timeout=30, check=False).stdout
            if not ours & {link.get("ifname") for link in json.loads(shown or "[]")}:
                break
            time.sleep(0.05)
        for hostname in self.hostnames:
            self._record(hostname).unlink(missing_ok=True)


# --------------------------------------------------------------------------- many DNS queries


class DnsProbe:
    """One UDP socket in ``ns`` asking ``server`` for many names at once (query id = name index)."""

    def __init__(self, ns: str, names: list[str], server: str = GATEWAY):
        if len(names) > 65536:
            raise ValueError("at most 65,536 names")
        with inside_netns(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.connect((server, 53))
        self.sock.setblocking(False)
        self.names = names
        self.wires = []
        for qid, name in enumerate(names):
            query = dns.message.make_query(name, "A")
            query.id = qid
            self.wires.append(query.to_wire())
        self.answers: dict[str, list[str]] = {}  # name -> A records (empty: an answer without any)

    def send(self, indexes: Iterable[int]) -> int:
        sent = 0
        for index in indexes:
            try:
                self.sock.send(self.wires[index])
                sent += 1
            except BlockingIOError:
                break
        return sent

    def receive(self, wait: float) -> None:
        """Read every answer that arrives within ``wait`` seconds."""
        import select

        deadline = time.perf_counter() + wait
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return
            while True:
                try:
                    data = self.sock.recv(4096)
                except BlockingIOError:
                    break
                try:
                    answer = dns.message.from_wire(data)
                except dns.exception.DNSException:  # not a DNS answer: ignore it
                    continue
                if answer.id < len(self.names):
                    self.answers[self.names[answer.id]] = [
                        item.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for item in rrset]

    def resolved(self, name: str) -> bool:
        return bool(self.answers.get(name))

    def close(self) -> None:
        self.sock.close()


def wait_resolves(probe: DnsProbe, index: int, expect: str, timeout: float = 10) -> float | None:
    """Seconds until names[index] resolves to ``expect`` (asking every ~2 ms), None if it never does."""
    start = time.perf_counter()
    name = probe.names[index]
    while time.perf_counter() - start < timeout:
        probe.answers.pop(name, None)
        probe.send([index])
        probe.receive(0.002)
        if expect in probe.answers.get(name, []):
            return time.perf_counter() - start
    return None


# --------------------------------------------------------------------------- leases


def leased_hostnames(settings: Settings) -> set[str]:
    try:
        text = settings.leases_file.read_text()
    except FileNotFoundError:
        return set()
    return {fields[3] for fields in (line.split() for line in text.splitlines()) if len(fields) == 5}


def lease_run(clients: LightClients, settings: Settings, peer_ns: str, timeout: float,
              resolve_names: bool = True) -> dict[str, object]:
    """Start every client's DHCP at once; seconds to N leases and to N names resolving."""
    flush_neighbours(peer_ns)
    names = [f"{h}.{settings.domain}" for h in clients.hostnames]
    index = {h: i for i, h in enumerate(clients.hostnames)}
    wanted = set(clients.hostnames)
    probe = DnsProbe(peer_ns, names) if resolve_names else None
    asked: dict[int, float] = {}
    leases_at = names_at = None
    curve: list[tuple[float, int]] = []
    try:
        clients.prepare_dhcp()
        start = time.perf_counter()
        clients.release()
        while time.perf_counter() - start < timeout:
            now = time.perf_counter()
            leased = leased_hostnames(settings) & wanted
            curve.append((round(now - start, 3), len(leased)))
            if leases_at is None and len(leased) == len(wanted):
                leases_at = now - start
            if probe is None:
                if leases_at is not None:
                    break
                time.sleep(0.02)
                continue
            # ask only for names already leased and not resolved, at most every 100 ms each
            due = [index[h] for h in leased if not probe.resolved(names[index[h]])
                   and now - asked.get(index[h], -1.0) > 0.1]
            for i in due:
                asked[i] = now
            probe.send(due)
            probe.receive(0.02)
            if names_at is None and all(probe.resolved(n) for n in names):
                names_at = time.perf_counter() - start
                break
    finally:
        if probe is not None:
            probe.close()
    final = len(leased_hostnames(settings) & wanted)
    resolved = sum(probe.resolved(n) for n in names) if probe else 0
    return {"leases_at": leases_at, "names_at": names_at, "leased": final, "resolved": resolved, "curve": curve}


# --------------------------------------------------------------------------- API latency


def endpoint_latency(settings: Settings, ns: str, requests: int) -> dict[str, list[float]]:
    """p50/p99 inputs: ms per GET of the two network endpoints, uvicorn in a thread, loopback of ``ns``."""
    import http.client

    import uvicorn

    from proximity.api.app import Context, create_app

    context = Context(settings, retry_every=3600)
    app = create_app(context, start_background=False)
    with inside_netns(ns):  # the sandbox host's own loopback: nothing on the machine's
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (as
        # uvicorn's own bind does); with proto 0, Nagle + delayed ACK add 40 ms to every response.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        client_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    results: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        client_sock.connect(("127.0.0.1", port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.sock = client_sock
        headers = {"Authorization": f"Bearer {context.tokens.ensure()}"}

        def get(path: str) -> tuple[float, bytes]:
            t = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - t) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
            return elapsed, body

        for path in ("/healthz", "/api/v1/system/network/status", "/api/v1/system/network/leases"):
            for _ in range(10):  # warm up (the status snapshot's first full refresh included)
                get(path)
            results[path] = [get(path)[0] for _ in range(requests)]
        results["_leases_served"] = [float(len(json.loads(get("/api/v1/system/network/leases")[1])["data"]))]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        listener.close()
        client_sock.close()
    return results


# --------------------------------------------------------------------------- reservations


def reservations_at(settings: Settings, count: int, prefix: str = "r") -> list:
    from proximity.network.reservations import Reservation, stable_mac

    start = int(settings.dhcp_start)
    if count > settings.pool_size:
        raise ValueError(f"{count} reservations do not fit a pool of {settings.pool_size}")
    # r0001, r0002, ... like LightClients' hostnames
    return [Reservation(f"{prefix}{i:04d}", stable_mac(f"{prefix}{i:04d}"), str(ipaddress.IPv4Address(start + i - 1)))
            for i in range(1, count + 1)]


def write_reservations(settings: Settings, host: Host, reservations: list) -> None:
    """Write reservations.json in one go, and the two files dnsmasq reads from it."""
    from proximity.network.reservations import Reservations

    host.write_text(settings.reservations_db, json.dumps([asdict(r) for r in reservations], indent=1) + "\n")
    Reservations(settings, host).ensure_files()


def add_reservation_timings(settings: Settings, host: Host, peer_ns: str, count: int, adds: int) -> dict[str, object]:
    """Add ``adds`` reservations when ``count`` exist: incremental (SIGHUP) against a full restart."""
    from proximity.network.reservations import Reservations

    class RestartingReservations(Reservations):
        """The same files, applied by a full dnsmasq restart instead of SIGHUP."""

        def _reload_dnsmasq(self) -> None:
            SupervisedDns(self.host, self.settings).restart()

    flush_neighbours(peer_ns)
    dnsd = SupervisedDns(host, settings)
    dnsd.stop()
    settings.leases_file.unlink(missing_ok=True)  # the pool belongs to the reservations now
    write_reservations(settings, host, reservations_at(settings, count))
    dnsd.start()
    names = [f"inc{k}.{settings.domain}" for k in range(adds)] + [f"rst{k}.{settings.domain}" for k in range(adds)]
    probe = DnsProbe(peer_ns, names)
    out: dict[str, list[float]] = {"inc_call": [], "inc_resolve": [], "rst_call": [], "rst_resolve": []}
    pids: list[tuple[int | None, int | None]] = []
    try:
        for kind, reservations in (("inc", Reservations(settings, host)), ("rst", RestartingReservations(settings, host))):
            for k in range(adds):
                before = dnsd.running_pid()
                start = time.perf_counter()
                with reservations.locked():
                    made = reservations.reserve(f"{kind}{k}", [])
                called = time.perf_counter() - start
                waited = wait_resolves(probe, names.index(f"{kind}{k}.{settings.domain}"), made.ip)
                if waited is None:
                    raise RuntimeError(f"{kind}{k} never resolved to {made.ip}")
                out[f"{kind}_call"].append(called * 1000)
                out[f"{kind}_resolve"].append((called + waited) * 1000)
                if kind == "inc":
                    pids.append((before, dnsd.running_pid()))
                with reservations.locked():  # back to `count` reservations (not timed)
                    Reservations(settings, host).release(f"{kind}{k}")
    finally:
        probe.close()
    return {**out, "pids": pids}


def admission_timings(sb: sandboxes.Sandbox, repeats: int) -> dict[str, object]:
    """Default pool (151 addresses) full of reservations: the 152nd container is refused."""
    from proximity.containers.lxc import LxcBackend
    from proximity.containers.manager import ContainerManager
    from proximity.network.reservations import AdmissionError
    from proximity.network.reconciler import NetworkManager

    state = sb.root / "admission"
    settings = load_settings(**{**sb.settings_overrides(), "state_dir": str(state), "run_dir": str(state / "run"),
                                "leases_file": str(state / "dnsmasq.leases")})
    host = Host(sb.name)
    write_reservations(settings, host, reservations_at(settings, settings.pool_size, prefix="ct"))
    manager = ContainerManager(NetworkManager(settings), LxcBackend(sb.name, state / "lxc"))
    plan, reserve = [], []
    errors: set[str] = set()
    for _ in range(repeats):
        for samples, attempt in ((plan, lambda: manager.plan_create("ct-extra")),
                                 (reserve, lambda: manager.reservations.reserve("ct-extra", manager.network.leases()[0]))):
            start = time.perf_counter()
            try:
                attempt()
            except AdmissionError as exc:
                samples.append((time.perf_counter() - start) * 1000)
                errors.add(str(exc).split(":")[0])
            else:
                raise RuntimeError("a full pool admitted another container")
    return {"pool": settings.pool_size, "plan": plan, "reserve": reserve, "errors": sorted(errors)}


# --------------------------------------------------------------------------- the gateway's MAC


def gateway_outage(sb: sandboxes.Sandbox, peer_ns: str, settings: Settings, cap: float) -> dict[str, object]:
    """Seconds the peer cannot reach the gateway after the bridge port whose MAC prox-net uses goes away
    (a container with the numerically lowest veth MAC stops). 0 when the bridge's MAC is fixed."""
    mover = LightClients(sb, 1, tag="m")
    mover.create()
    port = mover.veth(mover.hostnames[0])
    try:
        def bridge_mac() -> str:
            shown = subprocess.run(["ip", "-n", sb.name, "-j", "link", "show", settings.bridge], capture_output=True,
                                   text=True, timeout=10, check=False).stdout
            return json.loads(shown)[0]["address"]

        ip_batch([f"link set {port} address 02:00:00:00:00:01"], ns=sb.name)  # the lowest MAC on the bridge
        before = bridge_mac()
        flush_neighbours(peer_ns)
        name = f"gateway-probe.{settings.domain}"
        if Host(peer_ns).resolve(name, GATEWAY) is None:
            raise RuntimeError("the peer gets no DNS answer from the gateway before the port goes away")
        ip_batch([f"link del {port}"], ns=sb.name)  # what stopping that container does
        after = bridge_mac()
        start = time.perf_counter()
        answered = False
        while time.perf_counter() - start < cap:
            if Host(peer_ns).resolve(name, GATEWAY, timeout=0.2, attempts=1) is not None:
                answered = True
                break
        outage = time.perf_counter() - start
    finally:
        mover.destroy()
    return {"outage": outage, "answered": answered, "before": before, "after": after}


# --------------------------------------------------------------------------- the benchmark


def progress(text: str, started: float) -> None:
    print(f"[bench {Path(__file__).stem}] {text} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)


def lease_rate(count: int, result: dict, timeout: float) -> float:
    """Leases per second: N over the time to N, or (when not all came) those granted over the time limit."""
    return count / result["leases_at"] if result["leases_at"] else result["leased"] / timeout


def lease_rows(label: str, count: int, result: dict, build_s: float, naks: int, timeout: float,
               targeted: bool) -> list[Row]:
    """``targeted``: the rows the 10 s targets apply to (clients with the reservations Proximity gives
    the containers it creates); the others are diagnostics."""
    leases_at, names_at = result["leases_at"], result["names_at"]
    missed = "" if leases_at else f"; only {result['leased']}/{count} leases within {timeout:g} s"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    within = lambda at: bool(at and at <= 10) if targeted else None  # noqa: E731
    return [
        Row(f"{label}: leases/s, {count} clients at once", lease_rate(count, result, timeout), None, "leases/s",
            f"{count} leases within 10 s" if targeted else "", within(leases_at), lower_is_better=False,
            notes=f"{leases_at or float('nan'):.2f} s to {count} leases in the lease file; {naks} DHCPNAK; "
                  f"building the namespaces took {build_s:.1f} s (not timed); load average {load}{missed}",
            samples={"leases_at_s": [leases_at or float("nan")], "curve_s_leases": [x for p in result["curve"] for x in p]}),
        Row(f"{label}: all {count} names resolve", names_at, None, "s", f"{count} names within 10 s" if targeted else "",
            within(names_at),
            notes=f"from the start of the clients; {result['resolved']}/{count} resolved from a peer namespace",
            samples={"names_at_s": [names_at or float("nan")]}),
    ]


def count_naks(settings: Settings) -> int:
    try:
        return settings.dns_log_file.read_text(errors="replace").count("DHCPNAK")
    except FileNotFoundError:
        return 0


def fresh_dnsmasq(settings: Settings, host: Host, conf: str | None = None) -> int:
    """Stop dnsmasq, forget every lease and its log, (re)write its conf, start it; its pid."""
    dnsd = SupervisedDns(host, settings)
    dnsd.stop()
    settings.leases_file.unlink(missing_ok=True)
    settings.dns_log_file.unlink(missing_ok=True)
    if conf is not None:
        settings.dnsmasq_conf.write_text(conf)
    dnsd.start()
    return dnsd.running_pid()


def run(quick: bool = False) -> list[Row]:
    """Every number of this module, in a fresh sandbox that is destroyed at the end."""
    from proximity.network.reservations import stable_mac

    count = 100 if quick else 1000
    baseline_count = 30 if quick else 100
    adds = 3 if quick else 5
    requests = 50 if quick else 300
    name = sandbox_name("bs")
    started = time.perf_counter()
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    rows: list[Row] = []
    try:
        proximity_up(name, WIDE_POOL)
        settings = sandbox_settings(sb, **WIDE_POOL)
        host = Host(name)
        proximity_conf = settings.dnsmasq_conf.read_text()
        peer = LightClients(sb, 1, tag="p")
        peer.create()
        peer.set_static(peer.hostnames[0], PEER_ADDR)
        peer_ns = peer.ns(peer.hostnames[0])
        pid = fresh_dnsmasq(settings, host)
        idle_rss = rss_kib(pid)

        progress("sandbox up", started)
        # 1. N unreserved clients at once (dnsmasq picks the addresses).
        clients = LightClients(sb, count)
        build_s = clients.create()
        result = lease_run(clients, settings, peer_ns, timeout=LEASE_TIMEOUT)
        clients.stop_dhcp()
        rss = rss_kib(pid)
        rows += lease_rows("unreserved (diagnostic: clients Proximity did not create)", count, result, build_s,
                           count_naks(settings), LEASE_TIMEOUT, targeted=False)
        rows.append(Row(f"dnsmasq RSS at {result['leased']} leases", rss / 1024, None, "MiB", "", None,
                        notes=f"VmRSS; idle (0 leases): {idle_rss / 1024:.1f} MiB", samples={"rss_kib": [rss, idle_rss]}))

        progress("unreserved clients done", started)
        # 2. The API at N leases.
        latency = endpoint_latency(settings, name, requests)
        served = int(latency.pop("_leases_served")[0])
        floor = percentile(latency.pop("/healthz"), 99)
        for path, samples in latency.items():
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            rows.append(Row(f"GET {path.removeprefix('/api/v1/system')} p99 at {served} leases", p99, None, "ms",
                            "p99 < 20 ms", p99 < 20,
                            notes=f"p50 {p50:.2f} ms, max {max(samples):.2f} ms, {len(samples)} requests one after "
                                  f"another, uvicorn in-process on loopback (GET /healthz p99 {floor:.2f} ms)",
                            samples={"ms": samples}))
        clients.destroy()

        progress("API latency done", started)
        # 3. N clients that each have a reservation: what Proximity gives the containers it creates.
        reserved = LightClients(sb, count, tag="r", mac=stable_mac)
        build_s = reserved.create()
        write_reservations(settings, host, reservations_at(settings, count))  # r0001.. with stable_mac(r0001)..
        fresh_dnsmasq(settings, host)
        result = lease_run(reserved, settings, peer_ns, timeout=LEASE_TIMEOUT)
        reserved.stop_dhcp()
        rows += lease_rows("reserved (as `ct create` makes them)", count, result, build_s, count_naks(settings),
                           LEASE_TIMEOUT, targeted=True)
        # Diagnostic: the same, with the clients' bridge ports isolated from each other, so that no
        # client's broadcast is copied to the other N-1 ports (containers need to reach each other:
        # this is not a setting for Proximity, it shows what the L2 broadcast flood costs).
        bridge_batch(name, [f"link set dev {reserved.veth(h)} isolated on" for h in reserved.hostnames])
        fresh_dnsmasq(settings, host)
        isolated = lease_run(reserved, settings, peer_ns, timeout=LEASE_TIMEOUT)
        reserved.destroy()
        rows.append(Row(f"reserved, ports isolated (diagnostic): leases/s, {count} clients",
                        lease_rate(count, isolated, LEASE_TIMEOUT), None, "leases/s", "", None, lower_is_better=False,
                        notes=f"{isolated['leases_at'] or float('nan'):.2f} s to {isolated['leased']} leases, names "
                              f"{isolated['names_at'] or float('nan'):.2f} s: no client broadcast is flooded to the "
                              f"other {count - 1} ports",
                        samples={"leases_at_s": [isolated["leases_at"] or float("nan")]}))
        write_reservations(settings, host, [])

        progress("reserved clients done", started)
        # 4. Baseline: the seed's plain dnsmasq (no rapid commit, ping check on), same clients.
        from containers import seed_conf

        baseline = LightClients(sb, baseline_count, tag="b")
        baseline.create()
        rates: dict[str, float | None] = {}
        for label, conf in (("proximity", proximity_conf), ("seed", seed_conf(settings))):
            fresh_dnsmasq(settings, host, conf)
            res = lease_run(baseline, settings, peer_ns, timeout=BASELINE_TIMEOUT, resolve_names=False)
            baseline.stop_dhcp()
            rates[label] = lease_rate(baseline_count, res, BASELINE_TIMEOUT)
            rates[f"{label}_at"] = res["leases_at"]
            rates[f"{label}_leased"] = res["leased"]
        baseline.destroy()
        settings.dnsmasq_conf.write_text(proximity_conf)
        rows.append(Row(f"leases/s, {baseline_count} unreserved clients: Proximity vs seed dnsmasq", rates["proximity"],
                        rates["seed"], "leases/s", "", None, lower_is_better=False,
                        notes=f"same clients, fresh lease file each: {rates['proximity_at'] or float('nan'):.2f} s vs "
                              f"{rates['seed_at'] or float('nan'):.2f} s to all leases ({rates['proximity_leased']} and "
                              f"{rates['seed_leased']} within {BASELINE_TIMEOUT:g} s); the seed pings each new address "
                              f"for up to 3 s with DHCP blocked",
                        samples={"s_to_all": [rates["proximity_at"] or float("nan"), rates["seed_at"] or float("nan")]}))

        progress("seed baseline done", started)
        # 5. One more reservation when N exist: SIGHUP against a full restart.
        timings = add_reservation_timings(settings, host, peer_ns, count, adds)
        same_pid = all(b == a and a is not None for b, a in timings["pids"])
        rows.append(Row(f"add 1 reservation at {count}: name resolves", median(timings["inc_resolve"]),
                        median(timings["rst_resolve"]), "ms", "no dnsmasq restart (pid unchanged)", same_pid,
                        notes=f"incremental (files + SIGHUP) vs full restart (SupervisedDns.restart), same files, "
                              f"median of {adds}; reserve() returns in {median(timings['inc_call']):.1f} ms; dnsmasq "
                              f"pid {'unchanged' if same_pid else 'CHANGED'} across the {adds} incremental adds",
                        samples={k: v for k, v in timings.items() if k != "pids"}))

        progress("reservation adds done", started)
        # 6. Admission with the default pool (151 addresses) full.
        admission = admission_timings(sb, repeats=10 if quick else 30)
        for key, label in (("plan", "ContainerManager.plan_create"), ("reserve", "Reservations.reserve")):
            rows.append(Row(f"container #{admission['pool'] + 1} refused: {label}", median(admission[key]), None,
                            "ms", "AdmissionError, < 50 ms", median(admission[key]) < 50,
                            notes=f"{'; '.join(admission['errors'])}; max {max(admission[key]):.1f} ms",
                            samples={"ms": admission[key]}))
        progress("admission done", started)

        # 7. The gateway's MAC when a container's port goes away.
        cap = 5.0 if quick else 60.0
        gone = gateway_outage(sb, peer_ns, settings, cap)
        outage = gone["outage"]
        rows.append(Row("gateway cut off after a container stops", outage, None, "s", "0 s (prox-net keeps its MAC)",
                        outage < 1, notes=f"a client with the gateway's MAC cached gets no DNS answer for this long "
                                          f"after the port with the lowest MAC is deleted (prox-net MAC {gone['before']} "
                                          f"-> {gone['after']})" + ("" if gone["answered"] else
                                                                    f"; still cut off when the wait ended ({cap:g} s)"),
                        samples={"outage_s": [outage]}))
        peer.destroy()
    finally:
        destroy_sandbox(name)
    progress("sandbox destroyed", started)
    return rows


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        base = f"{row.baseline:.4g}" if row.baseline is not None else "-"
        prox = f"{row.proximity:.4g}" if row.proximity is not None else "-"
        met = {True: "met", False: "MISSED", None: ""}[row.met]
        print(f"{row.what:<55} {prox:>10} {base:>10} {row.unit:<9} {met:<6} {row.target}  {row.notes}")


if __name__ == "__main__":
    started = time.perf_counter()
    print_rows(run(quick="--quick" in sys.argv))
    print(f"({time.perf_counter() - started:.1f} s)")
