"""Pure rendering: settings in, text out (the firewall's table: ``network.nft``). No I/O here."""

from __future__ import annotations

import dataclasses

import hashlib
import shlex
import shutil

from proximity.network.interfaces import IPV6_TAG
from proximity.network.render_ipv6 import dnsmasq_ipv6_conf, view_subnet
from proximity.settings import RESERVED_HOSTNAMES, Settings
from proximity.spec.naming import TEMPLATE_SERVICE

HEADER = "# Managed by Proximity: 'proximity up' rewrites this file from its settings.\n"


def stable_mac(name: str, salt: int = 0) -> str:
    """A locally administered, unicast MAC derived from a name (02:xx:xx:xx:xx:xx)."""
    digest = hashlib.sha256(f"{name}/{salt}".encode()).digest()
    return "02:" + ":".join(f"{byte:02x}" for byte in digest[:5])


def bridge_mac(settings: Settings) -> str:
    """The bridge's own fixed MAC.

    Without it a Linux bridge takes the lowest MAC of its ports, so the gateway's MAC changes
    when a container stops and its peers lose the gateway until their ARP entry expires.
    """
    return stable_mac(f"bridge:{settings.bridge}")


def bridge_stanza(settings: Settings) -> list[str]:
    """The seed's stanza, with post-up commands that are safe to run again.

    The firewall is the one file ``up`` applies (``network.nft``): post-up loads that same file at
    boot, and ``nft -f`` replaces the table whole, so every ``ifreload -a`` leaves exactly one.
    """
    br = settings.bridge
    lines = [
        f"auto {br}",
        f"iface {br} inet static",
        f"\taddress {settings.gateway}",
        "\tbridge-ports none",
        "\tbridge-stp off",
        "\tbridge-fd 0",
        f"\thwaddress {bridge_mac(settings)}",
        "\tpost-up echo 1 > /proc/sys/net/ipv4/ip_forward",
    ]
    lines.append(f"\tpost-up nft -f {shlex.quote(str(settings.ruleset_file))}")
    return lines


def bridge_stanza6(settings: Settings) -> list[str]:
    """The bridge's IPv6 stanza, ``iface BR inet6 static`` (``[]`` when the zone has no IPv6).

    A stanza of its own after the inet one, as Proxmox's GUI writes a bridge's IPv6: Proxmox's writer
    keeps one ``address`` per family in a stanza (a second address line in the inet stanza loses the
    IPv4 one). It moves the inet6 stanza's comments into the inet stanza but keeps option lines
    verbatim, so the stanza is known as Proximity's by :data:`~proximity.network.interfaces.IPV6_TAG`
    at the end of its pre-up lines (a shell comment).

    The pre-up lines turn DAD off before the address is added: a tentative address (global or
    link-local) blocks dnsmasq's bind and the first advertisement. ifupdown2 (3.0) runs the two
    stanzas as one interface, every pre-up command before its bridge module creates the bridge and
    its address module adds the addresses, so the first line makes the bridge when it does not exist
    yet (ifupdown2 then finds it and configures it: "bridge already exists"). The bridge accepts no
    router advertisements from the zone's own containers.
    """
    gateway = getattr(settings, "ipv6_gateway", None)
    if gateway is None:
        return []
    conf = f"/proc/sys/net/ipv6/conf/{settings.bridge}"
    return [
        f"iface {settings.bridge} inet6 static",
        f"\taddress {gateway}",
        f"\tpre-up [ -d {conf} ] || ip link add {settings.bridge} type bridge {IPV6_TAG}",
        f"\tpre-up echo 0 > {conf}/accept_dad {IPV6_TAG}",
        f"\tpre-up echo 0 > {conf}/accept_ra {IPV6_TAG}",
    ]


def bridge_options6(settings: Settings) -> dict[str, str]:
    """What a hand-written ``iface BR inet6`` stanza must say for Proximity to adopt it (``{}``: no IPv6)."""
    gateway = getattr(settings, "ipv6_gateway", None)
    return {} if gateway is None else {"address": str(gateway)}


def bridge_options(settings: Settings) -> dict[str, str]:
    """What a hand-written stanza must say for Proximity to adopt it."""
    return {"address": str(settings.gateway), "bridge-ports": "none", "bridge-stp": "off", "bridge-fd": "0"}


def dnsmasq_conf(settings: Settings, *, ipv6_default_route: bool = False) -> str:
    """dnsmasq.conf for the bridge only: never the uplink, never lo, no distro config.

    A zone view with ``ipv6_gateway`` set gets router advertisements and DHCPv6 too
    (:mod:`proximity.network.render_ipv6`); ``ipv6_default_route``: whether the uplink has an IPv6
    default route (without one, the advertisement offers no route via this host).
    """
    s = settings
    upstream = "".join(f"server={server}\n" for server in s.upstream_dns)
    netmask = s.subnet.netmask
    v6 = view_subnet(s)
    ipv6 = "" if v6 is None else dnsmasq_ipv6_conf(s.bridge, v6, s.domain, s.lease_time, ipv6_default_route)
    # dnsmasq counts DHCPv4 and DHCPv6 leases against one limit: a dual-stack container holds one of each.
    lease_max = s.pool_size * (1 if v6 is None else 2)
    return (
        HEADER
        + f"""\
# Listen on the bridge address only, and answer nothing on the uplink or lo.
interface={s.bridge}
except-interface=lo
bind-interfaces
# Our own config only: no /etc/resolv.conf, no /etc/hosts, no /etc/dnsmasq.d.
no-resolv
no-hosts
{upstream}\
# Containers resolve as NAME.{s.domain}; the domain never goes upstream.
domain={s.domain}
local=/{s.domain}/
expand-hosts
domain-needed
bogus-priv
cache-size=1000
# DHCP: fast leases, no ping check, authoritative for the subnet.
dhcp-range={s.dhcp_start},{s.dhcp_end},{netmask},{s.lease_time}
dhcp-lease-max={lease_max}
dhcp-option=option:router,{s.gateway.ip}
dhcp-option=option:dns-server,{s.gateway.ip}
dhcp-authoritative
dhcp-rapid-commit
no-ping
dhcp-leasefile={s.leases_file}
{ipv6}\
# Reservations of managed containers (MAC,IP,hostname) and their names before first boot;
# both are re-read on SIGHUP.
dhcp-hostsfile={s.dhcp_hosts_file}
addn-hosts={s.addn_hosts_file}
"""
        + reserved_names_conf()
        + other_zones_conf(s)
    )


def other_zones_conf(settings: Settings) -> str:
    """The host's other zones' domains: a peered zone's names are asked of its dnsmasq, the others' are
    answered here (NXDOMAIN), never sent upstream."""
    peers = getattr(settings, "peer_domains", ())
    others = getattr(settings, "other_domains", ())
    if not peers and not others:
        return ""
    lines = [f"server=/{domain}/{gateway}\n" for domain, gateway in peers]
    lines += [f"local=/{domain}/\n" for domain in others]
    return "# The host's other zones: peered ones are asked, the rest stay here.\n" + "".join(lines)


RESERVED_TAG = "reserved_name"


def reserved_names_conf() -> str:
    """Reserved names never reach DNS: a client that asks for one (``wpad``, ``gateway``, ...) still
    gets a lease, but its name is ignored, as ``ct create`` refuses them (dnsmasq compares names
    without case)."""
    # "NAME.*" too: dnsmasq matches the name as sent, then drops its domain part ("gateway.evil" -> gateway).
    names = "".join(f"dhcp-name-match=set:{RESERVED_TAG},{name}\ndhcp-name-match=set:{RESERVED_TAG},{name}.*\n"
                    for name in sorted(RESERVED_HOSTNAMES))
    return f"# Reserved names: a lease, but never a name in DNS.\n{names}dhcp-ignore-names=tag:{RESERVED_TAG}\n"


def dnsmasq_argv(settings: Settings, dnsmasq: str, *, foreground: bool) -> list[str]:
    """The explicit argv dnsmasq runs with, so /etc/dnsmasq.conf is never read."""
    argv = [dnsmasq, f"--conf-file={settings.dnsmasq_conf}"]
    if foreground:  # under systemd: the journal gets the log
        return [*argv, "--keep-in-foreground", "--log-facility=-", f"--pid-file=/run/{settings.service_name}.pid"]
    return [*argv, f"--pid-file={settings.dns_pid_file}", f"--log-facility={settings.dns_log_file}"]


def systemd_unit(settings: Settings, dnsmasq: str) -> str:
    start = shlex.join(dnsmasq_argv(settings, dnsmasq, foreground=True))
    test = shlex.join([dnsmasq, "--test", f"--conf-file={settings.dnsmasq_conf}"])
    return f"""\
{HEADER}[Unit]
Description=Proximity DNS and DHCP for {settings.bridge} (dnsmasq)
Documentation=man:dnsmasq(8)
After=network.target networking.service
Wants=network.target

[Service]
Type=simple
ExecStartPre={test}
ExecStart={start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def dns_unit_files(settings: Settings, systemd: bool) -> dict:
    """The unit files dnsmasq runs from: the proximity-dns unit on a host with systemd, none elsewhere."""
    if not systemd:
        return {}
    if getattr(settings, "is_default", True):
        return {settings.unit_file: systemd_unit(settings, dnsmasq_binary())}
    # A further zone's: the one template unit every zone's instance runs from (proximity-dns@NAME).
    template = dataclasses.replace(settings, dnsmasq_conf=settings.dnsmasq_conf.with_name("%i.conf"),
                                   service_name=f"{TEMPLATE_SERVICE}%i", bridge="zone %i")
    return {settings.unit_file: systemd_unit(template, dnsmasq_binary())}


def dnsmasq_binary() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def container_net0(settings: Settings, hwaddr: str | None = None) -> str:
    """The Proxmox ``net0`` property string for a container on the bridge (``ip6=dhcp`` in a zone with IPv6:
    the reservation's stable address comes by DHCPv6, as its AAAA record says)."""
    v6 = ",ip6=dhcp" if getattr(settings, "ipv6_gateway", None) is not None else ""
    value = f"name=eth0,bridge={settings.bridge},ip=dhcp{v6},firewall=1"
    return f"{value},hwaddr={hwaddr}" if hwaddr else value


API_CAPABILITIES = (
    "CAP_NET_ADMIN",  # links, addresses, routes, iptables/nft (ip, ifupdown2, the admin's post-up lines)
    "CAP_NET_RAW",  # iptables; the probe's DHCP client (raw packet sockets)
    "CAP_NET_BIND_SERVICE",  # the API on a port below 1024, if so configured
    "CAP_SYS_ADMIN",  # the probe's `ip netns add` (mounts /run/netns) and `ip netns exec` (setns, sysfs)
    "CAP_SYS_MODULE",  # ifupdown2 loads the bridge, 8021q and vxlan modules it needs
    "CAP_SYS_PTRACE",  # doctor reads a container's /etc/resolv.conf through /proc/PID/root
    "CAP_KILL",  # signals dnsmasq, which runs as its own user
    "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN", "CAP_FSETID",  # root's file access
    "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP",  # commands that drop to another user (dnsmasq, udhcpc scripts)
)


def api_write_paths(settings: Settings) -> list[str]:
    """What the service writes (ProtectSystem=full leaves only these of /etc writable).

    Each is marked '-' (systemd starts the unit when one is missing yet): the install makes the
    config directory, and the others under /var and /run are writable in any case."""
    paths = [settings.interfaces_file.parent, settings.systemd_dir, settings.dnsmasq_conf.parent, settings.state_dir,
             settings.leases_file.parent, settings.run_dir, "/run/netns"]
    return ["-" + path for path in dict.fromkeys(str(path) for path in paths)]


def api_unit(settings: Settings, proximity: str, host: str, port: int) -> str:
    """The proximity-api unit: the service starts after the network and its DNS, hardened as far as its work allows.

    It runs as root: it drives ifupdown2, iptables, dnsmasq and systemd. Everything it runs inherits
    these settings (``ifreload -a`` with the admin's own post-up lines, ``ip netns add``, systemctl), so
    each one leaves what that work needs; a drop-in (``systemctl edit proximity-api``) widens them.
    """
    start = shlex.join([proximity, "serve", "--host", host, "--port", str(port)])
    return f"""\
{HEADER}[Unit]
Description=Proximity API and dashboard
After=network-online.target networking.service {settings.service_name}.service
Wants=network-online.target

[Service]
Type=simple
ExecStart={start}
Restart=on-failure
RestartSec=5
# Descriptors: the server serves at most 512 client connections and leaves the rest for its own
# work (heals run commands through pipes), so no client can make a heal fail for want of one.
LimitNOFILE=8192
# Hardening. Nothing the service or its commands run may gain privileges (no setuid binaries).
NoNewPrivileges=yes
# /usr, /boot and /etc read-only, but for what it writes: /etc/network (the stanza, ifupdown2),
# the systemd units it installs, its own config and token, its state, leases and run files.
# /var and /run stay writable (ifupdown2's state and logs); so does /proc/sys (ip_forward and
# the admin's sysctls in post-up lines), so ProtectKernelTunables is not set.
ProtectSystem=full
ReadWritePaths={" ".join(api_write_paths(settings))}
# Home directories read-only: an admin's post-up script kept in /root still runs.
ProtectHome=read-only
# A /tmp and /var/tmp of its own.
PrivateTmp=yes
# No hostname or kernel-log changes; no realtime scheduling, no setuid/setgid files, no
# personality changes; native system calls only, and none of the clock, debug, reboot, swap,
# raw-I/O or obsolete groups. (ProtectClock= is not set: it implies a device allow-list on
# systemd 252, which blocks /dev/net/tun for an admin's tuntap post-up line; the clock stays
# protected by the system call filter and the capability set.)
ProtectHostname=yes
ProtectKernelLogs=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=~@clock @cpu-emulation @debug @obsolete @reboot @swap @raw-io
SystemCallErrorNumber=EPERM
# Sockets: local, IPv4/IPv6, netlink (ip, iptables, nft, ifupdown2) and packet (the probe's DHCP client).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
# Namespaces: network and mount only (the probe's throwaway namespace and `ip netns exec`).
RestrictNamespaces=net mnt
# Kernel modules stay loadable (ifupdown2 loads bridge, 8021q, vxlan), so ProtectKernelModules
# is not set. Capabilities: what its commands need, nothing else (no reboot, clock, raw I/O,
# audit, MAC, BPF, mknod, immutable files...).
CapabilityBoundingSet={" ".join(API_CAPABILITIES)}

[Install]
WantedBy=multi-user.target
"""
