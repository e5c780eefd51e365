"""Settings: where Proximity's network is declared.

Sources, strongest first: values given by the caller (CLI flags, the sandbox),
``PROXIMITY_*`` environment variables, ``/etc/proximity/proximity.toml`` (or the
file named by ``PROXIMITY_CONFIG``), then the defaults of the seed architecture.
Every check here is pure; checks against the live host live in ``network.validate``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import typing
from pathlib import Path
from typing import Any, Literal

from proximity.errors import InputError, SettingsError  # noqa: F401 (SettingsError: re-exported)
# The hostname check and the settings' sources live apart; their names are re-exported here.
from proximity.names import (  # noqa: F401
    HOSTNAME_MESSAGES,
    LABEL_RE,
    RESERVED_HOSTNAMES,
    check_hostname,
    is_dns_name,
    is_hostname_label,
)
from proximity.spec.checks import check_domain, check_gateway, check_range, check_upstream_dns
from proximity.spec.config import ZoneConfig, parse_ipv6_mode, parse_peers, parse_zones
from proximity.zones_file import check_peers, merge_zones, read_zones_file
from proximity.setting_sources import (  # noqa: F401
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    config_file,
    config_file_values,
    convert,
    environment_values,
)

PVE_ROOT_CA = Path("/etc/pve/pve-root-ca.pem")  # Proxmox's own CA, on every node (tests point it elsewhere)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

# Every pattern is used with fullmatch (``match`` with ``$`` lets a trailing newline through)
# and re.ASCII (``\d`` would match any Unicode digit).
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,14}", re.ASCII)
UPLINK_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}", re.ASCII)  # a VLAN such as eth0.100 too
LEASE_RE = re.compile(r"([0-9]+)([smhdw]?)|infinite", re.ASCII)
UNIT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
LEASE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_LEASE_SECONDS = 366 * 86400  # a year (a leap one included); beyond it, write 'infinite'



_CHECKS: dict[str, Any] = {}  # field -> its own check (the value after its type conversion)


def _check(field: str):
    def register(function):
        _CHECKS[field] = function.__func__ if isinstance(function, staticmethod) else function
        return function
    return register


# Checks shared with the zones' tables (proximity.spec.checks).
_CHECKS["domain"] = check_domain
_CHECKS["gateway"] = check_gateway
_CHECKS["upstream_dns"] = check_upstream_dns


def lease_seconds(value: str) -> int | None:
    """Seconds of a dnsmasq lease time such as ``12h``; None for ``infinite``."""
    match = LEASE_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(value)
    if value == "infinite":
        return None
    return int(match.group(1)) * LEASE_UNITS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The declared network. Defaults are exactly the seed architecture's.

    A plain dataclass checked by :func:`validate` rather than a pydantic model: pydantic's first
    model costs about 0.2 s in every process (its lazy imports and schema machinery), most of a
    no-op ``proximity up``. The checks below are the same either way: each field's type, then its
    own check, then the checks across fields.
    """

    bridge: str = "prox-net"
    gateway: ipaddress.IPv4Interface = ipaddress.IPv4Interface("10.10.0.1/24")
    dhcp_start: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.0.100")
    dhcp_end: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.0.250")
    lease_time: str = "12h"
    domain: str = "prox.local"
    upstream_dns: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = dataclasses.field(
        default_factory=lambda: [ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("8.8.8.8")]
    )
    uplink: str | None = None  # None: the interface of the default route, found at run time
    interfaces_file: Path = Path("/etc/network/interfaces")
    dnsmasq_conf: Path = Path("/etc/proximity/dnsmasq.conf")
    leases_file: Path = Path("/var/lib/proximity/dnsmasq.leases")
    state_dir: Path = Path("/var/lib/proximity")  # backups and the lock
    run_dir: Path = Path("/run/proximity")  # pid file of a supervised dnsmasq
    service_name: str = "proximity-dns"
    systemd_dir: Path = Path("/etc/systemd/system")
    proxmox_firewall: Literal["auto", "on", "off"] = "auto"
    pve_cluster_firewall: Path = Path("/etc/pve/firewall/cluster.fw")  # "auto" reads `enable: 1` here
    ifreload_timeout: float = 60.0
    netns: str | None = None  # set by the sandbox: act inside this network namespace
    target_host: str | None = None  # a machine without /etc/pve that Proximity may change anyway (its hostname)
    heal_interval: float = 30.0  # seconds: the service re-checks a healthy host this often (events come sooner)

    # Containers. "auto": the lxc backend on a sandbox host, proxmox otherwise.
    backend: Literal["auto", "proxmox", "lxc"] = "auto"
    lxc_path: Path | None = None  # lxc backend: where containers live (default: state_dir/lxc)
    proxmox_host: str = "localhost"
    proxmox_port: int = 8006
    proxmox_node: str | None = None  # default: this machine's hostname
    proxmox_token_id: str | None = None  # "user@realm!tokenname"
    proxmox_token_secret: str | None = None
    proxmox_verify_tls: bool = True
    proxmox_ca_file: Path | None = None
    proxmox_storage: str = "local-lvm"
    proxmox_template: str | None = None
    # The API's TLS certificate and key on a non-loopback address (default: self-signed, made
    # on first start next to the token).
    api_cert_file: Path | None = None
    api_key_file: Path | None = None

    # Zones (proximity.spec). The default zone is the network above; IPv6 there is opt-in:
    # "auto" (a /64 of the install's ULA prefix), a routed /64 such as "2001:db8:0:1::/64", or "off".
    ipv6: str = "off"
    zones: tuple[ZoneConfig, ...] = ()  # the further zones, from proximity.toml's [zones.NAME] tables
    peers: tuple[tuple[str, str], ...] = ()  # pairs of zones that may reach each other (`proximity zone peer`)

    @_check("bridge")
    @staticmethod
    def _bridge_name(value: str) -> str:
        if not IFNAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a usable Linux interface name: use 1 to 15 letters, digits, "
                "'-' or '_', starting with a letter (for example 'prox-net')"
            )
        return value

    @_check("heal_interval")
    @staticmethod
    def _heal_interval(value: float) -> float:
        if not 0.1 <= value <= 86400:
            raise ValueError(f"{value!r} is not between 0.1 and 86400 seconds: use for example 30")
        return value

    @_check("target_host")
    @staticmethod
    def _target_host(value: str | None) -> str | None:
        if value is not None and not is_dns_name(value):
            raise ValueError(f"{value!r} is not a hostname: write this machine's name, as `hostname` prints it")
        return value

    @_check("uplink")
    @staticmethod
    def _uplink_name(value: str | None) -> str | None:
        if value is not None and not UPLINK_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Linux interface name (for example 'vmbr0')")
        return value

    @_check("lease_time")
    @staticmethod
    def _lease_time(value: str) -> str:
        try:
            seconds = lease_seconds(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a lease time: write a number with an optional unit s, m, h, d or w "
                "(for example '12h'), or 'infinite' (spelled so)"
            ) from None
        if seconds is not None and seconds < 120:
            raise ValueError(f"{value!r} is shorter than dnsmasq's minimum of 2 minutes: use at least '2m'")
        if seconds is not None and seconds > MAX_LEASE_SECONDS:
            raise ValueError(
                f"{value!r} is longer than a year, which is surely a typo: use at most '366d', "
                "or 'infinite' for leases that never expire"
            )
        return value

    @_check("service_name")
    @staticmethod
    def _service_name(value: str) -> str:
        if not UNIT_NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not usable as a systemd unit and file name: use letters, digits, '-', "
                "'_' and '.' (for example 'proximity-dns')"
            )
        return value

    @_check("ipv6")
    @staticmethod
    def _ipv6(value: str) -> str:
        return str(parse_ipv6_mode(value))

    @_check("zones")
    @staticmethod
    def _zones(value: Any) -> tuple[ZoneConfig, ...]:
        return parse_zones(value)

    @_check("peers")
    @staticmethod
    def _peers(value: Any) -> tuple[tuple[str, str], ...]:
        return parse_peers(value)

    def _range_inside_subnet(self) -> Settings:
        check_range(self.gateway, self.dhcp_start, self.dhcp_end)
        return self

    # Derived values, so that no other module recomputes them.
    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.gateway.network

    @property
    def pool_size(self) -> int:
        return int(self.dhcp_end) - int(self.dhcp_start) + 1

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "proximity.lock"

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def dns_pid_file(self) -> Path:
        return self.run_dir / f"{self.service_name}.pid"

    @property
    def dns_log_file(self) -> Path:
        return self.state_dir / f"{self.service_name}.log"

    @property
    def reservations_db(self) -> Path:
        return self.state_dir / "reservations.json"

    @property
    def dhcp_hosts_file(self) -> Path:
        return self.state_dir / "dhcp-hosts"

    @property
    def addn_hosts_file(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def ruleset_file(self) -> Path:
        """The nftables table (``table inet proximity``), beside dnsmasq's config; post-up loads it at boot."""
        return self.dnsmasq_conf.parent / "proximity.nft"

    @property
    def ruleset_state_file(self) -> Path:
        """The digests of the table Proximity last applied: as rendered, and as nft listed it back."""
        return self.state_dir / "ruleset.json"

    @property
    def zones_file(self) -> Path:
        """The zones `proximity zone create` made, and their peers: Proximity's own file beside its config."""
        return self.dnsmasq_conf.parent / "zones.toml"

    @property
    def api_token_file(self) -> Path:
        return self.dnsmasq_conf.parent / "api-token"

    @property
    def pending_interfaces_file(self) -> Path:
        """Where Proxmox stages network changes made in its GUI until "Apply Configuration" or a reboot."""
        return self.interfaces_file.with_name(self.interfaces_file.name + ".new")

    @property
    def probe_file(self) -> Path:
        """The last end-to-end probe's result (a throwaway client asking for a lease and a name)."""
        return self.state_dir / "probe.json"

    @property
    def api_tls_cert(self) -> Path:
        return self.api_cert_file or self.dnsmasq_conf.parent / "api-cert.pem"

    @property
    def api_tls_key(self) -> Path:
        return self.api_key_file or self.dnsmasq_conf.parent / "api-key.pem"

    @property
    def proxmox_ca(self) -> Path | None:
        """The CA trusted besides the system store: proxmox_ca_file, else Proxmox's own CA for this host."""
        if self.proxmox_ca_file:
            return self.proxmox_ca_file
        return PVE_ROOT_CA if self.proxmox_host in LOCAL_HOSTS and PVE_ROOT_CA.is_file() else None

    @property
    def unit_file(self) -> Path:
        return self.systemd_dir / f"{self.service_name}.service"

    # Fixes name the host they are about: a sandbox by name, the machine as it is.
    def command(self, args: str) -> str:
        """A ``proximity`` command line for this host (``proximity up --sandbox NAME`` on a sandbox)."""
        return f"proximity {args}" + (f" --sandbox {self.netns}" if self.netns else "")

    def host_command(self, *commands: str) -> str:
        """Shell commands for this host: on a sandbox, inside its namespace (``ip netns exec NAME ...``)."""
        return "; ".join(f"ip netns exec {self.netns} {c}" if self.netns else c for c in commands)


def load_settings(defaults: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Build settings; one message per wrong setting, naming it, where it is set, and the fix.

    Strongest first: ``overrides``, the environment, the config file, ``defaults``, the seed's defaults.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    values = {**(defaults or {}), **config_file_values(), **environment_values(_hints()), **overrides}
    settings = validate(values)
    made = read_zones_file(settings.zones_file)  # zones made with `proximity zone create`, and peers
    settings = validate(merge_zones(values, made, settings.zones_file)) if made else settings
    check_peers(settings)
    return settings


def validate(values: dict[str, Any]) -> Settings:
    """Settings from raw values (strings from the environment, TOML values, Python objects)."""
    hints, fields, errors, checked = _hints(), {f.name: f for f in dataclasses.fields(Settings)}, [], {}
    for name, value in values.items():
        if name not in fields:
            errors.append((name, f"{name!r} is not a setting (misspelt?); the settings are listed in the README"))
            continue
        try:
            value = convert(value, hints[name], name)
            checked[name] = _CHECKS[name](value) if name in _CHECKS else value
        except ValueError as exc:
            errors.append((name, str(exc)))
    if not errors:
        for name, check in _CHECKS.items():  # defaults are checked too
            if name not in checked and name in fields:
                try:
                    check(_default(fields[name]))
                except ValueError as exc:
                    errors.append((name, str(exc)))
    if errors:
        raise SettingsError(_message(errors))
    settings = Settings(**checked)
    try:
        settings._range_inside_subnet()
    except ValueError as exc:
        raise SettingsError(_message([(None, str(exc))])) from None
    if settings.zones:  # the default zone alone has nothing to clash with
        from proximity.spec.zones import check_declared  # it builds on Settings

        check_declared(settings)
    return settings


def _hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(Settings)
    return _HINTS


_HINTS: dict[str, Any] | None = None


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _message(errors: list[tuple[str | None, str]]) -> str:
    lines = []
    for field, message in errors:
        if field is None:
            lines.append(f"settings: {message}")
        elif field == "zones":  # tables of the file only: each message names its zones.NAME
            lines.append(f"zones in {config_file()}: {message}")
        else:
            lines.append(f"setting {field!r} (env {ENV_PREFIX}{field.upper()} or {config_file()}): {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


