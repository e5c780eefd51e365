"""The local LXC backend for real: containers inside a sandbox host, on prox-net and on vmbr0.

A sandbox is created, `proximity up --sandbox` gives it prox-net (10.10.0.1/24, dnsmasq, NAT),
and two busybox containers (nginx-01, wordpress-02) are started in the sandbox's host namespace,
where their veths join prox-net. Everything waits on conditions, never on fixed sleeps, and the
teardown destroys the containers, runs `proximity down` and destroys the sandbox even on failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from proximity import sandbox as sandboxes
from proximity.containers.base import BackendError, ContainerSpec, Net0
from proximity.containers.lxc import LxcBackend
from tests.integration.tools import Listener, proximity, wait_or_fail

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, LXC)"),
    pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed: apt-get install lxc"),
]

NGINX, WORDPRESS = "nginx-01", "wordpress-02"
MACS = {NGINX: "02:50:58:00:01:01", WORDPRESS: "02:50:58:00:01:02"}
GATEWAY = "10.10.0.1"
STATIC_NET0 = "name=eth0,bridge=vmbr0,ip=198.51.100.50/24,gw=198.51.100.1"
TIMINGS: dict[str, float] = {}


def dhcp_net0(hostname: str) -> str:
    return f"name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr={MACS[hostname]}"


def ipv4(backend: LxcBackend, vmid: int) -> str | None:
    out = backend.exec(vmid, ["ip", "-4", "-o", "addr", "show", "eth0"], timeout=5).stdout
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else None


def ns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(ns: str) -> set[int]:
    target = ns_inode(f"/run/netns/{ns}")
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and target is not None and ns_inode(entry / "ns/net") == target:
            found.add(int(entry.name))
    return found


def cmdlines_with(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def memory_limit(pid: int) -> int | None:
    """The memory limit of the cgroup of ``pid``, v1 (memory.limit_in_bytes) or v2 (memory.max)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text())
        if controllers == "" and Path(f"/sys/fs/cgroup{path}/memory.max").exists():
            return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text())
    return None


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


@pytest.fixture(scope="module")
def lab():
    """A sandbox with prox-net up and an LXC backend on it; everything removed afterwards."""
    name = f"lx{os.getpid() % 10000}"
    links_before = root_links()
    sandboxes.destroy(name)  # leftovers of an interrupted run of the same pid
    sb = sandboxes.create(name)
    backend = LxcBackend(sb.name, sb.state_dir / "lxc")
    upped = False
    try:
        proximity("up", "--sandbox", name)
        upped = True
        yield sb, backend, {}
    finally:
        problems = []
        for vmid in backend._ids():
            try:
                backend.destroy(vmid)
            except Exception as exc:  # last resort: kill the container's init (ends its pid namespace)
                problems.append(f"destroy CT {vmid}: {exc}")
                pid = None
                try:
                    pid = backend.container_pid(vmid)
                except Exception:
                    pass
                if pid:
                    os.kill(pid, signal.SIGKILL)
        if upped:
            proximity("down", "--sandbox", name, check=False)
        sandboxes.destroy(name)
        assert root_links() == links_before, "the machine's own network namespace changed"
        assert not problems, problems


@pytest.fixture(scope="module")
def pair(lab):
    """nginx-01 and wordpress-02 created, started, and holding a DHCP lease on prox-net."""
    sb, backend, state = lab
    vmids = {}
    for hostname in (NGINX, WORDPRESS):
        started = time.monotonic()
        container = backend.create(ContainerSpec(hostname, dhcp_net0(hostname)))
        TIMINGS[f"create {hostname}"] = time.monotonic() - started
        assert container.state == "stopped" and container.net0 == dhcp_net0(hostname)
        vmids[hostname] = container.vmid
    assert sorted(vmids.values()) == [100, 101]
    for hostname, vmid in vmids.items():
        started = time.monotonic()
        backend.start(vmid)
        TIMINGS[f"start {hostname}"] = time.monotonic() - started
        ip = wait_or_fail(lambda: ipv4(backend, vmid), 20, f"a DHCP lease in {hostname}")
        TIMINGS[f"start->lease {hostname}"] = time.monotonic() - started
        state[hostname] = ip
    return sb, backend, vmids, state


def test_create_start_and_lease(pair):
    sb, backend, vmids, ips = pair
    for hostname, vmid in vmids.items():
        container = backend.status(vmid)
        assert (container.hostname, container.state, container.backend) == (hostname, "running", "lxc")
        assert backend.get_net0(vmid) == dhcp_net0(hostname)
        assert ips[hostname].startswith("10.10.0.")
        mac = backend.exec(vmid, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        assert mac == MACS[hostname]
        # dnsmasq's lease file has the container's MAC, address and hostname
        leases = sb.leases_file.read_text()
        assert re.search(rf"{MACS[hostname]} {re.escape(ips[hostname])} {hostname} ", leases), leases
        pid = backend.container_pid(vmid)
        assert pid and Path(f"/proc/{pid}/root/etc/hostname").read_text().strip() == hostname
        # the veth is in the sandbox's host namespace, enslaved to prox-net
        out = sandboxes.ns_run(sb.name, ["ip", "-o", "link", "show", f"veth{vmid}i0"]).stdout
        assert "master prox-net" in out
    assert {c.vmid for c in backend.list()} == set(vmids.values())
    if backend.cgroups != "none":  # memory=256 (the default) is a real cgroup limit
        assert memory_limit(backend.container_pid(vmids[NGINX])) == 256 * 1024 * 1024
    print(f"\ntimings: {', '.join(f'{k} {v:.3f}s' for k, v in TIMINGS.items())}")


def test_list_asks_lxc_once(pair, monkeypatch):
    """list() gives each container the state lxc-info gives it, from one lxc-ls for all; a container
    lxc-ls cannot see (no config) and a failed lxc-ls fall back to lxc-info per container."""
    sb, backend, vmids, _ = pair
    idle = backend.create(ContainerSpec("idle-03", "name=eth0,bridge=prox-net,ip=dhcp"))
    noconf = backend.create(ContainerSpec("noconf-04", "name=eth0,bridge=prox-net,ip=dhcp"))
    (backend.lxcpath / str(noconf.vmid) / "config").unlink()
    try:
        each = []
        for vmid in sorted([*vmids.values(), idle.vmid, noconf.vmid]):
            try:
                each.append(backend.status(vmid))
            except BackendError:
                pass  # list() skips it too
        assert {c.state for c in each} == {"running", "stopped"}
        calls: list[str] = []
        run = backend._run
        monkeypatch.setattr(backend, "_run", lambda argv, **kw: calls.append(argv[0]) or run(argv, **kw))
        assert backend.list() == each
        assert calls == ["lxc-ls", "lxc-info"], calls  # lxc-info for the one without a config only

        def fails() -> set[int]:
            raise BackendError("lxc-ls failed")

        monkeypatch.setattr(backend, "_running_ids", fails)
        assert backend.list() == each
    finally:
        for vmid in (idle.vmid, noconf.vmid):
            backend.destroy(vmid)


def test_dns_route_and_http_between_containers(pair):
    sb, backend, vmids, ips = pair
    wp = vmids[WORDPRESS]
    pid = backend.container_pid(wp)
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert f"nameserver {GATEWAY}" in resolv.splitlines() and "search prox.local" in resolv
    routes = backend.exec(wp, ["ip", "route"]).stdout
    assert re.search(rf"^default via {GATEWAY} dev eth0", routes, re.M), routes

    def page() -> str:  # no wget -T: Debian's busybox < 1.36.1-5 lacks it and segfaults; exec's timeout is enough
        return backend.exec(wp, ["wget", "-qO-", f"http://{NGINX}.prox.local"], timeout=5).stdout

    assert wait_or_fail(lambda: "hello from nginx-01" in page(), 10, "http://nginx-01.prox.local")
    lookup = backend.exec(wp, ["nslookup", f"{NGINX}.prox.local"], timeout=5).stdout
    assert ips[NGINX] in lookup


def test_internet_through_nat(pair):
    sb, backend, vmids, _ = pair
    with Listener(sb.lan_ns, sandboxes.INTERNET_HOST, 18080) as listener:
        out = backend.exec(vmids[WORDPRESS], ["sh", "-c", f"nc {sandboxes.INTERNET_HOST} 18080 </dev/null"],
                           timeout=10, check=True).stdout
        assert f"hello from {sandboxes.INTERNET_HOST}" in out
        assert listener.next_peer() == "198.51.100.2"  # masqueraded to vmbr0's address


def test_errors_are_clear(pair):
    sb, backend, vmids, _ = pair
    nginx = vmids[NGINX]
    with pytest.raises(BackendError, match="running.*shut it down first"):
        backend.set_net0(nginx, STATIC_NET0)
    with pytest.raises(BackendError, match="no bridge"):
        backend.create(ContainerSpec("bad", "name=eth0,ip=dhcp"))
    with pytest.raises(BackendError, match="hwaddr"):
        backend.create(ContainerSpec("bad", "name=eth0,bridge=prox-net,hwaddr=01:00:00:00:00:01"))
    with pytest.raises(BackendError, match="already exists"):
        backend.create(ContainerSpec("dup", dhcp_net0(NGINX), vmid=nginx))
    with pytest.raises(BackendError, match="does not exist"):
        backend.status(999)
    gone = backend.create(ContainerSpec("nobridge", "name=eth0,bridge=nosuchbr,ip=dhcp"))
    try:
        with pytest.raises(BackendError, match="bridge nosuchbr does not exist in network namespace"):
            backend.start(gone.vmid)
        with pytest.raises(BackendError, match="not running"):
            backend.exec(gone.vmid, ["true"])
        assert backend.container_pid(gone.vmid) is None
    finally:
        backend.destroy(gone.vmid)
    assert not (backend.lxcpath / str(gone.vmid)).exists()
    with pytest.raises(BackendError, match="timed out"):
        backend.exec(nginx, ["sleep", "30"], timeout=1)
    assert backend.exec(nginx, ["false"]).returncode == 1


def test_stop_start_keeps_mac_and_address(pair):
    sb, backend, vmids, ips = pair
    nginx = vmids[NGINX]
    started = time.monotonic()
    backend.shutdown(nginx, timeout=10)
    TIMINGS["shutdown"] = time.monotonic() - started
    assert backend.status(nginx).state == "stopped"
    assert backend.container_pid(nginx) is None
    backend.start(nginx)
    assert wait_or_fail(lambda: ipv4(backend, nginx), 20, "a lease after restart") == ips[NGINX]
    assert backend.exec(nginx, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() == MACS[NGINX]
    started = time.monotonic()
    backend.stop(nginx)
    TIMINGS["stop -k"] = time.monotonic() - started
    assert backend.status(nginx).state == "stopped"
    backend.start(nginx)
    assert wait_or_fail(lambda: ipv4(backend, nginx), 20, "a lease after a hard stop") == ips[NGINX]


def test_snapshot_static_net0_and_rollback(pair):
    sb, backend, vmids, ips = pair
    wp = vmids[WORDPRESS]
    backend.snapshot(wp, "premigrate")  # of the running container, as Proxmox allows
    assert backend.snapshots(wp) == ["premigrate"]
    with pytest.raises(BackendError, match="already has a snapshot"):
        backend.snapshot(wp, "premigrate")
    backend.shutdown(wp)
    backend.set_net0(wp, STATIC_NET0)
    net0 = Net0.parse(backend.get_net0(wp))
    assert net0.options == {**Net0.parse(STATIC_NET0).options, "hwaddr": MACS[WORDPRESS]}  # the MAC stays
    backend.start(wp)
    assert wait_or_fail(lambda: ipv4(backend, wp), 10, "the static address") == "198.51.100.50"
    assert re.search(r"^default via 198\.51\.100\.1 dev eth0", backend.exec(wp, ["ip", "route"]).stdout, re.M)
    assert backend.exec(wp, ["ping", "-c", "1", "-W", "2", sandboxes.LAN_GATEWAY], timeout=5).returncode == 0
    out = sandboxes.ns_run(sb.name, ["ip", "-o", "link", "show", f"veth{wp}i0"]).stdout
    assert "master vmbr0" in out

    backend.shutdown(wp)
    backend.rollback(wp, "premigrate")
    assert backend.get_net0(wp) == dhcp_net0(WORDPRESS)
    assert backend.status(wp).state == "stopped"
    backend.start(wp)
    assert wait_or_fail(lambda: ipv4(backend, wp), 20, "a lease after rollback") == ips[WORDPRESS]
    backend.delete_snapshot(wp, "premigrate")
    assert backend.snapshots(wp) == []
    with pytest.raises(BackendError, match="no snapshot"):
        backend.rollback(wp, "premigrate")


def test_destroy_removes_everything(pair):
    sb, backend, vmids, _ = pair
    init_pids = [backend.container_pid(vmid) for vmid in vmids.values()]
    assert all(init_pids)
    for vmid in vmids.values():
        started = time.monotonic()
        backend.destroy(vmid)  # running: stopped first
        TIMINGS[f"destroy {vmid}"] = time.monotonic() - started
    assert backend.list() == []
    assert list(backend.lxcpath.iterdir()) == []
    lxc_ls = sandboxes.ns_run(sb.name, ["lxc-ls", "-P", str(backend.lxcpath), "-1"]).stdout
    assert lxc_ls.strip() == ""
    for pid in init_pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    assert cmdlines_with(str(backend.lxcpath)) == []  # no lxc monitor left
    links = sandboxes.ns_run(sb.name, ["ip", "-o", "link", "show"]).stdout
    assert "veth10" not in links
    own = {int(p.read_text().split()[0]) for p in sb.run_dir.glob("*.pid") if p.read_text().strip()}
    assert pids_in_netns(sb.name) <= own, cmdlines_with("lxc")
    print(f"\ntimings: {', '.join(f'{k} {v:.3f}s' for k, v in TIMINGS.items())}")
