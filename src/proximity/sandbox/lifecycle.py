"""Create, load and destroy a sandbox.

Ownership: ``<root>/sandbox.json`` is written before anything else is created and
``<root>/clients/HOSTNAME.json`` before a client namespace is created, so :func:`destroy` only
ever removes namespaces and files that it can prove belong to the sandbox.
"""

from __future__ import annotations

import time
from typing import Any

from proximity.host import ETC_NETNS, Host, wait_for
from proximity.revert import Reverter
from proximity.sandbox import lan
from proximity.sandbox.commands import delete_ns
from proximity.sandbox.layout import (
    NoSuchSandbox,
    HOST_NIC,
    SANDBOX_ROOT,
    INTERNET_NIC,
    INTERNET_NIC_PEER,
    LAN_NIC,
    UPLINK,
    UPSTREAM_DNS_PID,
    Sandbox,
    SandboxError,
    check_ns_name,
    ns_exists,
    read_json,
    sandbox_named,
    validate_name,
    write_json,
)
from proximity.sandbox.processes import stop_all
from proximity.sandbox.pve_host import (
    etc_netns_is_ours,
    ifreload,
    uplink_problem,
    without_dad,
    write_etc_netns,
    write_host_files,
)


def _build(sb: Sandbox) -> dict[str, Any]:
    started = time.monotonic()
    meta: dict[str, Any] = {
        "name": sb.name,
        "status": "creating",
        "root": str(sb.root),
        "namespaces": [sb.name, sb.lan_ns],
        "etc_netns": [str(ETC_NETNS / sb.name)],
        "links": {sb.name: [HOST_NIC, UPLINK], sb.lan_ns: [LAN_NIC, INTERNET_NIC]},
        "pid_files": [str(sb.run_dir / UPSTREAM_DNS_PID)],
        "files": [str(sb.interfaces_file), str(sb.root / "etc/network/ifupdown2")],
    }
    write_json(sb.meta_file, meta)  # first: proves ownership to destroy()
    write_host_files(sb)

    meta["internet_nic_kind"] = lan.build_lan(sb)
    if meta["internet_nic_kind"] == "veth":
        meta["links"][sb.lan_ns].append(INTERNET_NIC_PEER)

    write_etc_netns(sb)
    with without_dad(sb.name):  # vmbr0 only: Proximity's bridges get a real host's defaults
        ifreload(sb.name)
    problems: list[str] = []

    def uplink_ok() -> bool:
        problems[:] = [uplink_problem(sb.name) or ""]
        return not problems[0]

    if not wait_for(uplink_ok, 10):
        raise SandboxError(
            f"after 'ifreload -a' in {sb.name}: {problems[0]}; "
            f"check {sb.interfaces_file} and 'ip netns exec {sb.name} ifquery -a --check'"
        )

    meta["upstream_dns_pid"] = lan.start_upstream_dns(sb)
    meta["status"] = "ready"
    meta["create_seconds"] = round(time.monotonic() - started, 3)
    write_json(sb.meta_file, meta)
    return meta


def create(name: str) -> Sandbox:
    """Create sandbox ``name``; on any failure it is destroyed again and the error re-raised."""
    validate_name(name)
    sb = sandbox_named(name)
    if ns_exists(sb.name):
        raise SandboxError(
            f"sandbox {name} exists; destroy it with 'proximity sandbox destroy {name}'"
        )
    if ns_exists(sb.lan_ns):
        raise SandboxError(
            f"network namespace {sb.lan_ns} exists already (used by another sandbox or client); "
            "choose another sandbox name"
        )
    leftovers = [str(p) for p in (sb.root, ETC_NETNS / name) if p.exists() or p.is_symlink()]
    if leftovers:
        raise SandboxError(
            f"leftovers of an earlier sandbox {name} exist ({', '.join(leftovers)}); "
            f"remove them with 'proximity sandbox destroy {name}'"
        )
    try:
        # an atomic claim of the name; 0755: dnsmasq drops to 'nobody' and must reach files below
        Host().mkdir(sb.root, mode=0o755, exist_ok=False)
    except FileExistsError:
        raise SandboxError(
            f"sandbox {name} is being created by someone else ({sb.root} appeared); "
            f"destroy it with 'proximity sandbox destroy {name}'"
        ) from None
    with Reverter() as revert:
        revert.add(f"destroy the half-created sandbox {name}", lambda: destroy(name))
        _build(sb)
        revert.success()
    return sb


def names() -> list[str]:
    """The sandboxes on this machine (those with a record), by name."""
    if not SANDBOX_ROOT.is_dir():
        return []
    return sorted(path.name for path in SANDBOX_ROOT.iterdir() if sandbox_named(path.name).meta_file.is_file())


def load(name: str) -> Sandbox:
    """The existing sandbox ``name``; SandboxError if it does not exist or is incomplete."""
    validate_name(name)
    sb = sandbox_named(name)
    if not ns_exists(name):
        raise NoSuchSandbox(
            f"sandbox {name} does not exist; create it with 'proximity sandbox create {name}'"
        )
    meta = read_json(sb.meta_file)
    if meta is None:
        raise SandboxError(
            f"network namespace {name} exists but is not a Proximity sandbox ({sb.meta_file} is "
            "missing); choose another sandbox name"
        )
    if meta.get("status") != "ready":
        raise SandboxError(
            f"sandbox {name} is incomplete (its creation did not finish); recreate it with "
            f"'proximity sandbox destroy {name}' and 'proximity sandbox create {name}'"
        )
    return sb


def _stop_containers(sb: Sandbox) -> list[str]:
    """LXC containers have network namespaces of their own: stop them by name, not by namespace."""
    lxcpath = sb.state_dir / "lxc"
    if not lxcpath.is_dir() or not ns_exists(sb.name):
        return []
    from proximity.containers.lxc import LxcBackend  # the sandbox works without LXC installed

    backend, errors = LxcBackend(sb.name, lxcpath), []
    for container in backend.list():
        try:
            backend.destroy(container.vmid)
        except Exception as exc:  # keep destroying the rest
            errors.append(f"container {container.vmid}: {exc}")
    return errors


def _namespaces(sb: Sandbox, meta: dict[str, Any]) -> list[str]:
    """The sandbox's namespaces, clients first, then the LAN, then the host."""
    namespaces: list[str] = []
    for record in sb.client_records():
        info = read_json(record) or {}
        namespaces.append(str(info.get("ns") or sb.client_ns(record.stem)))
    for ns in [*meta.get("namespaces", []), sb.lan_ns, sb.name]:
        if isinstance(ns, str) and ns not in namespaces:
            namespaces.append(ns)
    for ns in namespaces:
        check_ns_name(ns)
    return namespaces


def destroy(name: str, missing_ok: bool = True) -> None:
    """Stop every process and remove every namespace, /etc/netns entry and file of the sandbox.

    Idempotent with ``missing_ok``; without, a sandbox of which nothing is left is NoSuchSandbox.
    Refuses (SandboxError) to touch a namespace ``name`` that is not a sandbox.
    """
    validate_name(name)
    sb = sandbox_named(name)
    host = Host()
    meta = read_json(sb.meta_file)
    if meta is None and not missing_ok and not (sb.root.exists() or ns_exists(name) or (ETC_NETNS / name).exists()):
        raise NoSuchSandbox(f"sandbox {name} does not exist: nothing was destroyed",
                            fix="see `proximity sandbox list`, or pass --if-exists to accept that")
    if meta is None:
        if ns_exists(name):
            raise SandboxError(
                f"network namespace {name} exists but is not a Proximity sandbox "
                f"({sb.meta_file} is missing); not touching it (if it is yours, remove it with "
                f"'ip netns delete {name}')"
            )
        if etc_netns_is_ours(sb):
            host.remove_tree(ETC_NETNS / name)
        host.remove_tree(sb.root)
        return

    namespaces = _namespaces(sb, meta)
    errors = _stop_containers(sb)
    survivors = stop_all(sb.run_dir, [ns for ns in namespaces if ns_exists(ns)])
    if survivors:
        errors.append(f"processes {survivors} survived SIGKILL")
    from proximity.network.probe import remove_stale_probes  # a probe of its service, stopped midway

    remove_stale_probes(host)

    for ns in namespaces:
        if ns_exists(ns):
            try:
                delete_ns(ns)
            except SandboxError as exc:
                errors.append(str(exc))
        try:
            host.remove_tree(ETC_NETNS / ns)
        except OSError as exc:
            errors.append(f"cannot remove {ETC_NETNS / ns}: {exc}")

    if errors:
        raise SandboxError(
            f"destroying sandbox {name} is incomplete: {'; '.join(errors)}; "
            f"fix that and run 'proximity sandbox destroy {name}' again"
        )
    try:
        host.remove_tree(sb.root)
    except OSError as exc:
        raise SandboxError(
            f"cannot remove {sb.root}: {exc}; remove it by hand or run "
            f"'proximity sandbox destroy {name}' again"
        ) from exc
