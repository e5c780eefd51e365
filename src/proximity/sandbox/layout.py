"""The sandbox's names, addresses and files: what a sandbox is, before anything runs.

Everything here is pure or reads only; the records are written through :class:`proximity.host.Host`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proximity.errors import HostError, InputError, NotFoundError
from proximity.host import NETNS_RUN_DIR, Host
from proximity.settings import is_hostname_label

if TYPE_CHECKING:
    from proximity.settings import Settings

log = logging.getLogger(__name__)

SANDBOX_ROOT = Path(os.environ.get("PROXIMITY_SANDBOX_ROOT", "/var/lib/proximity/sandboxes"))
UPLINK = "vmbr0"
HOST_UPLINK_ADDR = "198.51.100.2/24"
LAN_GATEWAY = "198.51.100.1"
INTERNET_HOST = "203.0.113.10"
INTERNET_NAME = "internet.test"  # the upstream DNS answers this name with INTERNET_HOST (and INTERNET_HOST6)
# IPv6: subranges of the documentation prefix 2001:db8::/32 (RFC 3849), one /64 per wire, named after the
# IPv4 ranges above. Zones may route prefixes of their own out of DOC_PREFIX6 (lan.route_prefix).
DOC_PREFIX6 = "2001:db8::/32"
HOST_UPLINK_ADDR6 = "2001:db8:198:51::2/64"
LAN_GATEWAY6 = "2001:db8:198:51::1"
INTERNET_HOST6 = "2001:db8:203:113::10"

LAN_PREFIXLEN = 24
INTERNET_PREFIXLEN = 24
LAN_PREFIXLEN6 = 64
INTERNET_PREFIXLEN6 = 64
HOST_NIC = "eno1"  # physical-NIC stand-in in the host namespace
LAN_NIC = "lan0"  # its peer in the LAN namespace, holds LAN_GATEWAY
INTERNET_NIC = "inet0"  # holds INTERNET_HOST in the LAN namespace
INTERNET_NIC_PEER = "inet0p"  # only when the kernel has no dummy driver (veth fallback)
CLIENT_NIC = "eth0"
CLIENT_VETH_PREFIX = "pxc"

UPSTREAM_DNS_PID = "upstream-dns.pid"
UPSTREAM_DNS_LOG = "upstream-dns.log"
META_FILE = "sandbox.json"
CLIENTS_DIR = "clients"

_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,9}")


class SandboxError(HostError):
    """A sandbox operation failed; the message says what failed and what to do."""


class SandboxInputError(InputError, SandboxError):
    """A sandbox or client name is refused (exit code 2); nothing was created."""


class NoSuchSandbox(NotFoundError, SandboxError):
    """The sandbox named does not exist (exit code 2)."""


@dataclass(frozen=True)
class Sandbox:
    """A sandbox: host namespace ``name``, LAN namespace ``lan_ns``, files under ``root``."""

    name: str
    lan_ns: str
    root: Path

    @property
    def interfaces_file(self) -> Path:
        """The host's ``/etc/network/interfaces``."""
        return self.root / "etc/network/interfaces"

    @property
    def dnsmasq_conf(self) -> Path:
        """Where Proximity writes its dnsmasq configuration for this sandbox."""
        return self.root / "etc/proximity/dnsmasq.conf"

    @property
    def leases_file(self) -> Path:
        """Proximity's dnsmasq lease file for this sandbox."""
        return self.root / "var/lib/proximity/dnsmasq.leases"

    @property
    def state_dir(self) -> Path:
        """Proximity's own state (backups, lock) for this sandbox."""
        return self.root / "var/lib/proximity"

    @property
    def run_dir(self) -> Path:
        """Pid files of every process started for this sandbox."""
        return self.root / "run"

    @property
    def meta_file(self) -> Path:
        """The sandbox's record: written first, it proves to destroy() what belongs to the sandbox."""
        return self.root / META_FILE

    def client_record(self, hostname: str) -> Path:
        """The record of client ``hostname``: written before its namespace exists."""
        return self.root / CLIENTS_DIR / f"{hostname}.json"

    def client_records(self) -> list[Path]:
        return sorted((self.root / CLIENTS_DIR).glob("*.json"))

    def client_ns(self, hostname: str) -> str:
        return f"{self.name}-{hostname}"

    def host_settings(self) -> dict[str, object]:
        """Where this host keeps its files and which namespace it is: these win over every other source."""
        return {
            "interfaces_file": str(self.interfaces_file),
            "dnsmasq_conf": str(self.dnsmasq_conf),
            "leases_file": str(self.leases_file),
            "state_dir": str(self.state_dir),
            "pve_cluster_firewall": str(self.root / "etc/pve/firewall/cluster.fw"),
            "run_dir": str(self.run_dir),
            "netns": self.name,
        }

    def default_settings(self) -> dict[str, object]:
        """This host's defaults: the file and the environment may change them (the LAN's DNS server)."""
        return {"upstream_dns": [LAN_GATEWAY]}

    def settings_overrides(self) -> dict[str, object]:
        """Everything Proximity's settings must say to act on this sandbox (for code that builds them)."""
        return {**self.default_settings(), **self.host_settings()}

    def settings(self, **overrides: Any) -> Settings:
        """Proximity's settings on this host: its defaults, then the file and the environment, then its files
        and namespace, then ``overrides``."""
        from proximity.settings import load_settings

        return load_settings(self.default_settings(), **{**self.host_settings(), **overrides})


@dataclass(frozen=True)
class Client:
    """A DHCP client namespace attached to a bridge of the sandbox."""

    hostname: str
    ns: str
    ip: str | None  # leased IPv4 address read from the namespace, None without a lease


def sandbox_named(name: str) -> Sandbox:
    return Sandbox(name=name, lan_ns=f"{name}-lan", root=SANDBOX_ROOT / name)


# --------------------------------------------------------------------------- validation


def validate_name(name: str) -> None:
    """Check a sandbox name: 1-10 chars of [a-z0-9-], starting with a letter."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SandboxInputError(
            f"invalid sandbox name {name!r}: the name must be 1-10 characters of a-z, 0-9 "
            "and '-', starting with a letter; pick a name like 'pve1'"
        )


def validate_hostname(hostname: str) -> None:
    if not is_hostname_label(hostname):
        raise SandboxInputError(
            f"invalid client hostname {hostname!r}: the hostname must be an RFC 1123 label "
            "(1-63 characters of letters, digits and '-', not starting or ending with '-'); "
            "pick a name like 'ct101'"
        )
    if hostname.lower() == "lan":
        raise SandboxInputError(
            "invalid client hostname 'lan': it would clash with the sandbox's LAN namespace; "
            "pick another hostname"
        )


def check_ns_name(ns: str) -> None:
    if not ns or "/" in ns or ns in (".", "..") or "\0" in ns:
        raise SandboxError(f"invalid network namespace name {ns!r}")


def ns_exists(ns: str) -> bool:
    return (NETNS_RUN_DIR / ns).exists()


# --------------------------------------------------------------------------- records


def write_json(path: Path, data: dict[str, Any]) -> None:
    Host().write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; None if there is none, {} if it is unreadable (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
