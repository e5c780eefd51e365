"""Client namespaces: stand-ins for containers, each a veth on a bridge of the sandbox and a DHCP client.

``NAME-HOSTNAME`` holds ``eth0`` (a veth) whose peer ``pxcN`` in ``NAME`` is enslaved to the bridge
Proximity manages there (prox-net by default); busybox udhcpc configures it. The record
``<root>/clients/HOSTNAME.json`` is written before the namespace is created, so only clients the
sandbox can prove it made are ever removed.
"""

from __future__ import annotations

import os
import socket
from importlib import resources
from pathlib import Path
from typing import Any

from proximity.host import ETC_NETNS, Host
from proximity.revert import Reverter
from proximity.sandbox.commands import add_ns, delete_ns, ip, netlink, ns_run
from proximity.sandbox.layout import (
    NoSuchSandbox,
    CLIENT_NIC,
    CLIENT_VETH_PREFIX,
    Client,
    Sandbox,
    SandboxError,
    ns_exists,
    read_json,
    validate_hostname,
    write_json,
)
from proximity.sandbox.processes import ns_ids, pids_in_ns


def _client_ip(ns: str) -> str | None:
    if not ns_exists(ns):
        return None
    with netlink(ns) as ipr:
        idx = ipr.link_lookup(ifname=CLIENT_NIC)
        if not idx:
            return None
        for addr in ipr.get_addr(family=socket.AF_INET, index=idx[0]):
            if addr["scope"] == 0:  # global
                return str(addr.get_attr("IFA_ADDRESS"))
    return None


def _udhcpc_script(sb: Sandbox) -> Path:
    """Path of data/udhcpc.script, copied to run_dir if the installed copy is not executable."""
    ref = resources.files("proximity").joinpath("data", "udhcpc.script")
    path = Path(str(ref))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    copy = sb.run_dir / "udhcpc.script"
    Host().write_text(copy, ref.read_text(), mode=0o755)
    return copy


def _free_veth_name(sb: Sandbox) -> str:
    with netlink(sb.name) as ipr:
        names = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    n = 0
    while f"{CLIENT_VETH_PREFIX}{n}" in names:
        n += 1
    return f"{CLIENT_VETH_PREFIX}{n}"


def _bridge_of(sb: Sandbox) -> str:
    """The bridge Proximity manages in the sandbox, as its settings say."""
    return sb.settings().bridge


def attach_client(sb: Sandbox, hostname: str, bridge: str | None = None, timeout: float = 15) -> Client:
    """Create client namespace ``NAME-hostname`` on ``bridge`` and get a DHCP lease with udhcpc.

    ``bridge`` defaults to the one Proximity's settings name for the sandbox.
    """
    validate_hostname(hostname)
    ns = sb.client_ns(hostname)
    record = sb.client_record(hostname)
    if not ns_exists(sb.name):
        raise NoSuchSandbox(
            f"sandbox {sb.name} does not exist; create it with 'proximity sandbox create {sb.name}'"
        )
    if record.exists():
        raise SandboxError(
            f"client {hostname} is already attached to sandbox {sb.name}; detach it first"
        )
    if ns_exists(ns):
        raise SandboxError(
            f"network namespace {ns} exists already (another sandbox uses it); "
            "pick another hostname"
        )
    bridge = bridge or _bridge_of(sb)
    with netlink(sb.name) as ipr:
        if not ipr.link_lookup(ifname=bridge):
            raise SandboxError(
                f"bridge {bridge} does not exist in sandbox {sb.name}; set Proximity up in the "
                f"sandbox first (check with 'proximity status --sandbox {sb.name}')"
            )

    info: dict[str, Any] = {"hostname": hostname, "ns": ns, "bridge": bridge, "host_veth": None}
    write_json(record, info)  # before the namespace exists: proves ownership to destroy()
    with Reverter() as revert:
        revert.add(f"remove the half-attached client {hostname}", lambda: detach_client(sb, hostname))
        add_ns(ns)
        Host().write_text(ETC_NETNS / ns / "resolv.conf", "")  # udhcpc.script rewrites it in place

        for _attempt in range(5):  # another attach may take the same free name meanwhile
            veth = _free_veth_name(sb)
            try:
                ip(sb.name, "link", "add", veth, "type", "veth",
                   "peer", "name", CLIENT_NIC, "netns", ns)  # fmt: skip
                break
            except SandboxError as exc:
                if "exists" not in str(exc):
                    raise
        else:
            raise SandboxError(f"could not find a free {CLIENT_VETH_PREFIX}N name in {sb.name}")
        info["host_veth"] = veth
        write_json(record, info)
        ip(sb.name, "link", "set", veth, "master", bridge)
        ip(sb.name, "link", "set", veth, "up")
        ip(ns, "link", "set", CLIENT_NIC, "up")

        argv = [
            "busybox", "udhcpc", "-i", CLIENT_NIC, "-q", "-n", "-t", "5", "-T", "1",
            "-x", f"hostname:{hostname}", "-s", str(_udhcpc_script(sb)),
        ]  # fmt: skip
        proc = ns_run(ns, argv, timeout=timeout, check=False)
        address = _client_ip(ns)
        if proc.returncode != 0 or address is None:
            output = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-3:])
            raise SandboxError(
                f"client {hostname} got no DHCP lease on {bridge} in sandbox {sb.name} "
                f"(udhcpc exit {proc.returncode}: {output or 'no output'}); "
                f"check 'proximity status --sandbox {sb.name}'"
            )
        revert.success()
    return Client(hostname=hostname, ns=ns, ip=address)


def detach_client(sb: Sandbox, hostname: str) -> None:
    """Remove client ``hostname`` (namespace, veth, /etc/netns entry). No-op if not attached."""
    validate_hostname(hostname)
    ns = sb.client_ns(hostname)
    record = sb.client_record(hostname)
    info = read_json(record)
    if info is None:
        return  # not ours (or already gone): never touch a namespace we cannot prove we made
    host = Host()
    if ns_exists(ns):
        survivors = host.terminate(pids_in_ns(ns_ids([ns])))
        if survivors:
            raise SandboxError(
                f"processes {survivors} in client namespace {ns} survived SIGKILL; "
                "retry the detach later"
            )
    veth = info.get("host_veth")
    if veth and ns_exists(sb.name):
        with netlink(sb.name) as ipr:
            present = bool(ipr.link_lookup(ifname=veth))
        if present:
            ip(sb.name, "link", "del", veth)
    if ns_exists(ns):
        delete_ns(ns)
    host.remove_tree(ETC_NETNS / ns)
    host.remove(record)


def clients(sb: Sandbox) -> list[Client]:
    """The attached clients of the sandbox, by hostname, with their current addresses."""
    result = []
    for record in sb.client_records():
        info = read_json(record) or {}
        hostname = info.get("hostname") or record.stem
        ns = info.get("ns") or sb.client_ns(hostname)
        result.append(Client(hostname=hostname, ns=ns, ip=_client_ip(ns)))
    return result
