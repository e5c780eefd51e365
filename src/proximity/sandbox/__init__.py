"""A Proxmox-like host built from Linux network namespaces, to run Proximity for real.

Sandbox ``NAME`` consists of:

``NAME`` (the "Proxmox host", :mod:`.pve_host`)
    ``eno1`` (one end of a veth pair) enslaved to bridge ``vmbr0`` 198.51.100.2/24 with a
    default route via 198.51.100.1 -- configured by the real ifupdown2 (``ifreload -a``) from a
    Proxmox-style ``/etc/network/interfaces`` that lives under the sandbox root.
``NAME-lan`` (the LAN router and "the internet", :mod:`.lan`)
    ``lan0`` 198.51.100.1/24 (peer of ``eno1``), ``inet0`` 203.0.113.10/24 (the internet test
    host), an upstream DNS server (dnsmasq) on 198.51.100.1 answering ``internet.test``.
    ``net.ipv4.ip_forward`` is 0 and there is no route to Proximity's 10.10.0.0/24.
``NAME-HOSTNAME`` (clients, :mod:`.clients`)
    ``eth0`` (veth) whose peer ``pxcN`` in ``NAME`` is enslaved to a bridge (``prox-net``);
    configured by busybox udhcpc.

The other modules: :mod:`.layout` (names, addresses, files, records), :mod:`.commands` (commands
and netlink inside the namespaces), :mod:`.processes` (finding and stopping the sandbox's
processes) and :mod:`.lifecycle` (create, load, destroy).

Safety rules kept by this package: nothing is ever created in the machine's own network
namespace (every ``ip`` call is ``ip -n NS ...`` or ``ip netns exec NS ...``, veth peers are
created directly inside namespaces, netlink sockets are opened inside a named namespace and never
create one), only documentation ranges are used, and every process started is tracked by a pid
file under :attr:`Sandbox.run_dir` and stopped by pid on :func:`destroy`. Every side effect goes
through :class:`proximity.host.Host`.
"""

from __future__ import annotations

from proximity.sandbox.clients import attach_client, clients, detach_client
from proximity.sandbox.commands import ns_run
from proximity.sandbox.pve_host import apply_pending
from proximity.sandbox.layout import (
    CLIENTS_DIR,
    HOST_UPLINK_ADDR,
    INTERNET_HOST,
    INTERNET_NAME,
    LAN_GATEWAY,
    SANDBOX_ROOT,
    UPLINK,
    Client,
    Sandbox,
    SandboxError,
    validate_name,
)
from proximity.sandbox.lifecycle import create, destroy, load, names
from proximity.sandbox.pve_host import INTERFACES_TEMPLATE

__all__ = [
    "CLIENTS_DIR", "HOST_UPLINK_ADDR", "INTERFACES_TEMPLATE", "INTERNET_HOST", "INTERNET_NAME", "LAN_GATEWAY",
    "SANDBOX_ROOT", "UPLINK", "Client", "Sandbox", "SandboxError", "attach_client", "clients", "create",
    "apply_pending", "destroy", "detach_client", "load", "names", "ns_run", "validate_name",
]
