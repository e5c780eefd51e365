"""A Proxmox-like host built from Linux network namespaces, to run Proximity for real.

Sandbox ``NAME`` consists of:

``NAME`` (the "Proxmox host", :mod:`.pve_host`)
    ``eno1`` (one end of a veth pair) enslaved to bridge ``vmbr0`` 198.51.100.2/24 and
    2001:db8:198:51::2/64 with default routes via 198.51.100.1 and 2001:db8:198:51::1 --
    configured by the real ifupdown2 (``ifreload -a``) from a Proxmox-style
    ``/etc/network/interfaces`` (an ``inet`` and an ``inet6`` stanza) under the sandbox root.
``NAME-lan`` (the LAN router and "the internet", :mod:`.lan`)
    ``lan0`` 198.51.100.1/24 and 2001:db8:198:51::1/64 (peer of ``eno1``), ``inet0``
    203.0.113.10/24 and 2001:db8:203:113::10/64 (the internet test host), an upstream DNS server
    (dnsmasq) on 198.51.100.1 and 2001:db8:198:51::1 answering ``internet.test`` (A and AAAA).
    It forwards neither family and has no route to Proximity's subnets: a zone reaches the
    internet host through the host's NAT (NAT66 for IPv6), or, for a routed global prefix, after
    :func:`route_prefix` (``sandbox.route_prefix(sb, "2001:db8:100::/64")``) has given the LAN
    router a route for it via the host's uplink address; :func:`unroute_prefix` takes it away.
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
from proximity.sandbox.lan import route_prefix, unroute_prefix
from proximity.sandbox.pve_host import apply_pending
from proximity.sandbox.layout import (
    CLIENTS_DIR,
    DOC_PREFIX6,
    HOST_UPLINK_ADDR,
    HOST_UPLINK_ADDR6,
    INTERNET_HOST,
    INTERNET_HOST6,
    INTERNET_NAME,
    LAN_GATEWAY,
    LAN_GATEWAY6,
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
    "CLIENTS_DIR", "DOC_PREFIX6", "HOST_UPLINK_ADDR", "HOST_UPLINK_ADDR6", "INTERFACES_TEMPLATE", "INTERNET_HOST",
    "INTERNET_HOST6", "INTERNET_NAME", "LAN_GATEWAY", "LAN_GATEWAY6", "SANDBOX_ROOT", "UPLINK", "Client", "Sandbox",
    "SandboxError", "attach_client", "clients", "create", "apply_pending", "destroy", "detach_client", "load",
    "names", "ns_run", "route_prefix", "unroute_prefix", "validate_name",
]
