"""Settings: where Proximity's network is declared.

Sources, strongest first: values given by the caller (CLI flags, the sandbox),
``PROXIMITY_*`` environment variables, ``/etc/proximity/proximity.toml`` (or the
file named by ``PROXIMITY_CONFIG``), then the defaults of the seed architecture.
Every check here is pure; checks against the live host live in ``network.validate``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_origin

from proximity.errors import InputError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "PROXIMITY_"
DEFAULT_CONFIG_FILE = Path("/etc/proximity/proximity.toml")
PVE_ROOT_CA = Path("/etc/pve/pve-root-ca.pem")  # Proxmox's own CA, on every node (tests point it elsewhere)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
LEASE_RE = re.compile(r"^(?:(\d+)([smhdw]?)|infinite)$")
LEASE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SettingsError(InputError):
    """A setting is wrong; the message names it and says how to fix it."""


def config_file() -> Path:
    return Path(os.environ.get("PROXIMITY_CONFIG", DEFAULT_CONFIG_FILE))


def is_hostname_label(name: str) -> bool:
    """RFC 1123 label: 1-63 letters, digits and hyphens, no hyphen at either end."""
    return bool(LABEL_RE.match(name))


def lease_seconds(value: str) -> int | None:
    """Seconds of a dnsmasq lease time such as ``12h``; None for ``infinite``."""
    match = LEASE_RE.match(value)
    if not match:
        raise ValueError(value)
    if value == "infinite":
        return None
    return int(match.group(1)) * LEASE_UNITS[match.group(2)]


class Settings(BaseModel):
    """The declared network. Defaults are exactly the seed architecture's."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    bridge: str = "prox-net"
    gateway: ipaddress.IPv4Interface = ipaddress.IPv4Interface("10.10.0.1/24")
    dhcp_start: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.0.100")
    dhcp_end: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.0.250")
    lease_time: str = "12h"
    domain: str = "prox.local"
    upstream_dns: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = Field(
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
    ifreload_timeout: float = 60.0
    netns: str | None = None  # set by the sandbox: act inside this network namespace

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

    @field_validator("bridge")
    @classmethod
    def _bridge_name(cls, value: str) -> str:
        if not IFNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a usable Linux interface name: use 1 to 15 letters, digits, "
                "'-' or '_', starting with a letter (for example 'prox-net')"
            )
        return value

    @field_validator("uplink")
    @classmethod
    def _uplink_name(cls, value: str | None) -> str | None:
        if value is not None and not IFNAME_RE.match(value) and "." not in value:
            raise ValueError(f"{value!r} is not a Linux interface name (for example 'vmbr0')")
        return value

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, value: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
        net = value.network
        if net.prefixlen > 29:
            raise ValueError(f"{value} leaves no room for containers: use a prefix of /29 or shorter, e.g. 10.10.0.1/24")
        if value.ip in (net.network_address, net.broadcast_address):
            raise ValueError(
                f"{value.ip} is the network or broadcast address of {net}: "
                f"use a host address such as {net.network_address + 1}/{net.prefixlen}"
            )
        return value

    @field_validator("lease_time")
    @classmethod
    def _lease_time(cls, value: str) -> str:
        try:
            seconds = lease_seconds(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a lease time: write a number with an optional unit s, m, h, d or w "
                "(for example '12h'), or 'infinite'"
            ) from None
        if seconds is not None and seconds < 120:
            raise ValueError(f"{value!r} is shorter than dnsmasq's minimum of 2 minutes: use at least '2m'")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        labels = value.rstrip(".").split(".")
        if len(value) > 253 or not all(is_hostname_label(label) for label in labels):
            raise ValueError(
                f"{value!r} is not a valid DNS name: use dot-separated labels of letters, digits "
                "and hyphens (for example 'prox.local')"
            )
        return value.rstrip(".").lower()

    @model_validator(mode="after")
    def _range_inside_subnet(self) -> Settings:
        net = self.gateway.network
        first, last = net.network_address + 1, net.broadcast_address - 1
        hint = f"pick addresses between {first} and {last} other than the gateway {self.gateway.ip}"
        for field in ("dhcp_start", "dhcp_end"):
            address = getattr(self, field)
            if address not in net:
                raise ValueError(f"{field}: {address} is outside the subnet {net}; {hint}")
            if address in (net.network_address, net.broadcast_address):
                raise ValueError(f"{field}: {address} is the network or broadcast address of {net}; {hint}")
        if self.dhcp_start > self.dhcp_end:
            raise ValueError(f"dhcp_start: {self.dhcp_start} comes after dhcp_end {self.dhcp_end}; swap them")
        if self.dhcp_start <= self.gateway.ip <= self.dhcp_end:
            raise ValueError(
                f"dhcp_start/dhcp_end: the range {self.dhcp_start}-{self.dhcp_end} contains the gateway "
                f"{self.gateway.ip}; {hint}"
            )
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
    def api_token_file(self) -> Path:
        return self.dnsmasq_conf.parent / "api-token"

    @property
    def proxmox_ca(self) -> Path | None:
        """The CA trusted besides the system store: proxmox_ca_file, else Proxmox's own CA for this host."""
        if self.proxmox_ca_file:
            return self.proxmox_ca_file
        return PVE_ROOT_CA if self.proxmox_host in LOCAL_HOSTS and PVE_ROOT_CA.is_file() else None

    @property
    def unit_file(self) -> Path:
        return self.systemd_dir / f"{self.service_name}.service"


def load_settings(defaults: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Build settings; turn pydantic's errors into one message per wrong setting.

    Strongest first: ``overrides``, the environment, the config file, ``defaults``, the seed's defaults.

    Loaded by hand rather than with pydantic-settings: it costs ~45 ms of imports, a
    sixth of a no-op ``proximity up``, for what these few lines do.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings.model_validate({**(defaults or {}), **_config_file_values(), **_environment_values(),
                                        **overrides})
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


def _config_file_values() -> dict[str, Any]:
    try:
        with open(config_file(), "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise SettingsError(f"cannot read {config_file()}: {exc}; fix the file or set PROXIMITY_CONFIG") from None


def _environment_values() -> dict[str, Any]:
    """``PROXIMITY_<SETTING>`` variables. A list takes JSON (``["1.1.1.1"]``) or commas."""
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if get_origin(field.annotation) is list:
            try:
                raw = json.loads(raw) if raw.lstrip().startswith("[") else [v for v in re.split(r"[\s,]+", raw) if v]
            except ValueError as exc:
                raise SettingsError(
                    f"setting {name!r} (env {ENV_PREFIX}{name.upper()}): not a JSON list ({exc}); "
                    'write it as ["1.1.1.1", "8.8.8.8"] or 1.1.1.1,8.8.8.8'
                ) from None
        values[name] = raw
    return values


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if field:
            env = f"PROXIMITY_{field.split('.')[0].upper()}"
            lines.append(f"setting {field!r} (env {env} or {config_file()}): {message}")
        else:
            lines.append(f"settings: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)
