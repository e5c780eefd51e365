"""The Proxmox VE API schema, and request validation that behaves like ``PVE::JSONSchema``.

The truth is ``api-schema.json`` (the ``apiSchema`` tree of pve-docs' ``apidata.js``). The
checks below follow pve-common's ``src/PVE/JSONSchema.pm`` (``check_object``,
``check_prop``, ``check_type``, ``check_format``, ``parse_property_string``) closely,
including the order of the checks and the wording of the messages, so that a request the
double accepts is one Proxmox accepts, and an error names the same parameter:

* top-level booleans are only ``0``/``1`` (or JSON ``true``/``false``): Proxmox answers
  ``start=true`` in a form with "type check ('boolean') failed - got 'true'"; inside a
  property string (``net0=...,firewall=yes``) ``1|on|yes|true`` / ``0|off|no|false`` are
  accepted, case-insensitively, as ``parse_property_string`` does;
* ``pattern`` is matched as Perl's ``m/^$pattern$/``; ``format`` is checked before
  ``pattern``, then ``maxLength``, ``minLength``, ``minimum``/``maximum``, ``enum``;
* property strings reject unknown keys, honour ``default_key`` and ``alias``, and check
  each value with the same rules; errors name ``net0`` (and, inside the message,
  ``net0.ip``);
* ``name[n]`` parameters stand for ``name0`` ... ``name<N-1>`` with Proxmox's limits.

Deviation (asked for): a method whose ``additionalProperties`` is absent (13 SDN-fabric
methods) rejects unknown parameters, where ``check_object`` would let them through.
Named formats the double does not know are accepted as plain strings.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_SCHEMA_PATH = Path("/work/shared/pve/api-schema.json")
SCHEMA_ENV = "PVE_API_SCHEMA"
# repo = the directory holding tests/; CI puts a copy of shared/ beside the clone.
_REPO = Path(__file__).resolve().parents[2]

# Proxmox's limits for "name[n]" options (pve-container / qemu-server constants).
INDEXED_LIMITS: dict[str, int] = {
    "net": 32,  # both LXC ($MAX_LXC_NETWORKS) and QEMU ($MAX_NETS)
    "mp": 256,
    "unused": 256,
    "dev": 256,
    "ide": 4,
    "sata": 6,
    "scsi": 31,
    "virtio": 16,
    "ipconfig": 32,
    "hostpci": 16,
    "usb": 14,
    "serial": 4,
    "parallel": 3,
    "numa": 8,
    "virtiofs": 10,
    "link": 8,
    "acmedomain": 5,
}
DEFAULT_INDEXED_LIMIT = 32


class SchemaLookupError(KeyError):
    """The (method, path) pair is not part of the API schema."""


class FormatError(Exception):
    """A value failed a format check; ``str()`` is Proxmox's message (usually ending in a newline)."""


# --------------------------------------------------------------------------- helpers


def perl_str(value: Any) -> str:
    """How Perl would print a scalar (schema numbers, JSON numbers)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


_PERL_INLINE = re.compile(r"\(\?\^([a-z]*):")


def perl_regex(pattern: str) -> str:
    """Perl's stringified ``qr//`` (``(?^:...)``, ``(?^i:...)``) in Python syntax."""
    return _PERL_INLINE.sub(lambda m: f"(?{m.group(1)}:" if m.group(1) else "(?:", pattern)


@functools.lru_cache(maxsize=512)
def _anchored(pattern: str) -> re.Pattern[str]:
    # Perl: m/^$pattern$/ -- no grouping, and '$' also matches before a final newline,
    # which is what Python's '$' does without MULTILINE.
    return re.compile("^" + perl_regex(pattern) + "$")


def matches_pattern(pattern: str, value: str) -> bool:
    return _anchored(pattern).search(value) is not None


_INTEGER_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$")


def is_integer(value: str) -> bool:
    return _INTEGER_RE.search(value) is not None


def is_number(value: str) -> bool:
    return _NUMBER_RE.search(value) is not None


def parse_boolean(value: str) -> int | None:
    """``PVE::JSONSchema::parse_boolean``."""
    if re.search(r"^(1|on|yes|true)$", value, re.I):
        return 1
    if re.search(r"^(0|off|no|false)$", value, re.I):
        return 0
    return None


def split_list(text: str | None) -> list[str]:
    """``PVE::Tools::split_list``: NUL-separated, else split on ``,``, ``;`` and whitespace."""
    text = text or ""
    if "\0" in text:
        return text.split("\0")
    return text.replace(",", " ").replace(";", " ").split()


def parse_size(value: str) -> int | None:
    """``PVE::JSONSchema::parse_size``: ``4``, ``4G``, ``512M`` ... -> bytes."""
    m = re.search(r"^(\d+(\.\d+)?)([KMGT])?$", value)
    if not m:
        return None
    size = float(m.group(1))
    size *= {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(m.group(3) or "", 1)
    return int(size)


def format_size(size: int) -> str:
    """``PVE::JSONSchema::format_size``: bytes -> ``4G``, ``512M`` ..."""
    size = int(size)
    kb, rest = divmod(size, 1024)
    if rest:
        return str(size)
    mb, rest = divmod(kb, 1024)
    if rest:
        return f"{kb}K"
    gb, rest = divmod(mb, 1024)
    if rest:
        return f"{mb}M"
    tb, rest = divmod(gb, 1024)
    if rest:
        return f"{gb}G"
    return f"{tb}T"


# --------------------------------------------------------------------------- formats

_IPV4OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
IPV4RE = rf"(?:(?:{_IPV4OCTET}\.){{3}}{_IPV4OCTET})"
_H16 = r"(?:[0-9a-fA-F]{1,4})"
_LS32 = rf"(?:(?:{IPV4RE}|{_H16}:{_H16}))"
IPV6RE = (
    "(?:"
    + "|".join(
        [
            rf"(?:(?:(?:{_H16}:){{6}}){_LS32})",
            rf"(?:(?:::(?:{_H16}:){{5}}){_LS32})",
            rf"(?:(?:(?:{_H16})?::(?:{_H16}:){{4}}){_LS32})",
            rf"(?:(?:(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}){_LS32})",
            rf"(?:(?:(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}){_LS32})",
            rf"(?:(?:(?:(?:{_H16}:){{0,3}}{_H16})?::(?:{_H16}:){{1}}){_LS32})",
            rf"(?:(?:(?:(?:{_H16}:){{0,4}}{_H16})?::){_LS32})",
            rf"(?:(?:(?:(?:{_H16}:){{0,5}}{_H16})?::){_H16})",
            rf"(?:(?:(?:(?:{_H16}:){{0,6}}{_H16})?::))",
        ]
    )
    + ")"
)
_IPV4_FULL = re.compile(rf"^(?:{IPV4RE})$")
_IPV6_FULL = re.compile(rf"^(?:{IPV6RE})$")
_CIDRV4 = re.compile(rf"^(?:{IPV4RE})(?:/(\d+))$")
_CIDRV6 = re.compile(rf"^(?:{IPV6RE})(?:/(\d+))$")
_DNS_LABEL = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_DNS_NAME = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
_EMAIL = re.compile(r"^[\w\+\-\~]+(\.[\w\+\-\~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*$")
_IPV4_MASKS = {str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask) for n in range(33)}


def _check(ok: Any, message: str) -> None:
    if not ok:
        raise FormatError(message)


def _v_regex(regex: str, message: str, flags: int = 0) -> Callable[[str], None]:
    compiled = re.compile(regex, flags)
    return lambda v: _check(compiled.search(v), message.format(v=v))


def _is_ipv4(v: str) -> bool:
    return _IPV4_FULL.search(v) is not None


def _is_ipv6(v: str) -> bool:
    return _IPV6_FULL.search(v) is not None


def _is_cidrv4(v: str) -> bool:
    m = _CIDRV4.search(v)
    return bool(m) and 7 < int(m.group(1)) <= 32


def _is_cidrv6(v: str) -> bool:
    m = _CIDRV6.search(v)
    return bool(m) and 7 < int(m.group(1)) <= 128


def _v_startup(v: str) -> None:
    ok = bool(v)
    for part in v.split(","):
        if re.search(r"^\s*$", part):
            continue
        if not (re.search(r"^(order=)?(\d+)$", part) or re.search(r"^(up|down)=(\d+)$", part)):
            ok = False
    _check(ok, "unable to parse startup options\n")


def _v_lxc_mp(v: str) -> None:
    bad = re.search(r"/\.\.?/", v) or re.search(r"/\.\.?$", v) or re.search(r"^\.\.?/", v)
    _check(not bad, f"{v} contains illegal character sequences\n")


def _v_lxc_dev(v: str) -> None:
    bad = re.search(r"/\.\.?/", v) or re.search(r"/\.\.?$", v) or not re.search(r"^/dev/", v)
    _check(not bad, f"{v} is not a valid device path\n")


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str] | None:
    try:
        text = Path("/usr/share/zoneinfo/zone.tab").read_text()
    except OSError:
        return None  # no tz database here: accept any zone-looking name
    return frozenset(
        line.split("\t")[2] for line in text.splitlines() if line and not line.startswith("#")
    )


def _v_timezone(v: str) -> None:
    if v == "UTC":
        return
    zones = _zones()
    ok = v in zones if zones is not None else re.search(r"^[A-Za-z_]+(/[A-Za-z0-9_+\-]+)*$", v)
    _check(ok, f"invalid time zone '{v}'\n")


def _v_ct_timezone(v: str) -> None:
    if v != "host":
        _v_timezone(v)


def _v_ll_iface_ip(v: str) -> None:
    m = re.search(r"^(fe80:[^%]+)%(.*)$", v)
    if m and (_is_ipv4(m.group(1)) or _is_ipv6(m.group(1))) and re.search(
        r"^[a-z][a-z0-9_]{1,20}([:\.]\d+)?$", m.group(2), re.I
    ):
        return
    _check(_is_ipv4(v) or _is_ipv6(v), "value does not look like a valid IP address\n")


def _v_vlan_range(v: str) -> None:
    m = re.search(r"^(\d+)(?:-(\d+))?$", v)
    _check(m, f"invalid VLAN configuration '{v}'\n")
    assert m is not None
    for tag in (m.group(1), m.group(2)):
        if tag:
            _check(2 <= int(tag) <= 4094, f"invalid VLAN tag '{tag}'\n")
    if m.group(2):
        _check(int(m.group(1)) < int(m.group(2)), f"VLAN range must go from lower to higher tag '{v}'\n")


# name -> validator; each raises FormatError with Proxmox's message.
FORMATS: dict[str, Callable[[str], None]] = {
    "string": lambda v: None,
    "urlencoded": _v_regex(r"^[-%a-zA-Z0-9_.!~*'()]*$", "invalid urlencoded string: {v}\n"),
    "pve-configid": _v_regex(r"^[a-z][a-z0-9_-]+$", "invalid configuration ID '{v}'\n", re.I),
    "pve-storage-id": _v_regex(
        r"^[a-z][a-z0-9\-\_\.]*[a-z0-9]$", "storage ID '{v}' contains illegal characters\n", re.I
    ),
    "pve-bridge-id": _v_regex(r"^[-_.\w\d]+$", "invalid bridge ID '{v}'\n"),
    "pve-vmid": _v_regex(r"^[1-9][0-9]{2,8}$", "value does not look like a valid VM ID\n"),
    "pve-node": _v_regex(
        r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$", "value does not look like a valid node name\n"
    ),
    "mac-addr": _v_regex(
        r"^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$",
        "value does not look like a valid unicast MAC address\n",
        re.I,
    ),
    "ipv4": lambda v: _check(_is_ipv4(v), "value does not look like a valid IPv4 address\n"),
    "ipv6": lambda v: _check(_is_ipv6(v), "value does not look like a valid IPv6 address\n"),
    "ip": lambda v: _check(_is_ipv4(v) or _is_ipv6(v), "value does not look like a valid IP address\n"),
    "ipv4mask": lambda v: _check(v in _IPV4_MASKS, "value does not look like a valid IP netmask\n"),
    "CIDRv4": lambda v: _check(_is_cidrv4(v), "value does not look like a valid IPv4 CIDR network\n"),
    "CIDRv6": lambda v: _check(_is_cidrv6(v), "value does not look like a valid IPv6 CIDR network\n"),
    "CIDR": lambda v: _check(_is_cidrv4(v) or _is_cidrv6(v), "value does not look like a valid CIDR network\n"),
    "pve-ipv4-config": lambda v: _check(
        re.search(r"^(?:dhcp|manual)$", v) or _is_cidrv4(v),
        "value does not look like a valid ipv4 network configuration\n",
    ),
    "pve-ipv6-config": lambda v: _check(
        re.search(r"^(?:auto|dhcp|manual)$", v) or _is_cidrv6(v),
        "value does not look like a valid ipv6 network configuration\n",
    ),
    "email": lambda v: _check(_EMAIL.search(v), "value does not look like a valid email address\n"),
    "dns-name": lambda v: _check(_DNS_NAME.search(v), "value does not look like a valid DNS name\n"),
    "address": lambda v: _check(
        _is_ipv4(v) or _is_ipv6(v) or _DNS_NAME.search(v), f"value does not look like a valid address: {v}\n"
    ),
    "pve-iface": _v_regex(r"^[a-z][a-z0-9_]{1,20}([:\.]\d+)?$", "invalid network interface name '{v}'\n", re.I),
    "pve-vlan-id-or-range": _v_vlan_range,
    "disk-size": lambda v: _check(parse_size(v) is not None, f"value does not look like a valid disk size: {v}\n"),
    "pve-startup-order": _v_startup,
    "pve-tag": _v_regex(r"^[a-z0-9_][a-z0-9_\-\+\.]*$", "invalid characters in tag\n", re.I),
    "pve-task-status-type": _v_regex(r"^(ok|error|warning|unknown)$", "invalid status '{v}'\n", re.I),
    "timezone": _v_timezone,
    # pve-storage / pve-container / pve-access-control
    "pve-volume-id": _v_regex(
        r"^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$", "unable to parse volume ID '{v}'\n", re.I
    ),
    "pve-lxc-mp-string": _v_lxc_mp,
    "pve-lxc-dev-string": _v_lxc_dev,
    "pve-ct-timezone": _v_ct_timezone,
    "lxc-ip-with-ll-iface": _v_ll_iface_ip,
    "pve-poolid": _v_regex(
        r"^[A-Za-z0-9\.\-_]+(?:/[A-Za-z0-9\.\-_]+){0,2}$", "pool name '{v}' contains invalid characters\n"
    ),
}


def check_format(fmt: Any, value: str, path: str) -> Any:
    """``PVE::JSONSchema::check_format``; raises FormatError."""
    if isinstance(fmt, dict):
        return parse_property_string(fmt, value, path)
    if fmt == "regex":
        return None
    m = re.search(r"^(.*?)(?:-(list|opt))?$", fmt)
    assert m is not None
    name, kind = m.group(1), m.group(2) or "none"
    validator = FORMATS.get(name)
    if validator is None:
        validator = FORMATS.get(fmt)  # a name that merely ends in -list
        kind = "none"
    if validator is None:
        return None  # unknown named format: a plain string here
    if kind == "list":
        for item in split_list(value):
            validator(item)
    elif kind == "opt":
        if value:
            validator(value)
    else:
        validator(value)
    return None


# --------------------------------------------------------------------------- checks


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        return "HASH"
    return "scalar"


def add_error(errors: dict[str, str], path: str, msg: str) -> None:
    path = path or "_root"
    if path in errors:
        errors[path] = errors[path] + "\\n" + msg  # Perl: join('\n', ...) -- single quotes
    else:
        errors[path] = msg


def check_type(path: str, typ: Any, value: Any, errors: dict[str, str]) -> bool:
    if not typ:
        return True
    if isinstance(typ, list):
        for t in typ:
            if check_type(path, t, value, {}):
                return True
        add_error(errors, path, f"type check ('{'|'.join(typ)}') failed")
        return False
    if isinstance(typ, dict):
        tmp: dict[str, str] = {}
        check_prop(value, typ, path, tmp)
        if not tmp:
            return True
        add_error(errors, path, "type check failed")
        return False
    if typ == "any":
        return True
    if typ == "null":
        add_error(errors, path, f"type check ('{typ}') failed - value is not null")
        return False
    kind = _kind(value)
    if typ == "array":
        if kind != "ARRAY":
            add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if typ == "object":
        if kind != "HASH":
            add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if kind != "scalar":
        if typ == "boolean" and kind == "bool":
            return True
        got = "JSON::PP::Boolean" if kind == "bool" else kind
        add_error(errors, path, f"type check ('{typ}') failed - got {got}")
        return False
    text = perl_str(value)
    if typ == "string":
        return True
    if typ == "boolean":
        if text in ("1", "0"):
            return True
        add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
        return False
    if typ == "integer":
        if not is_integer(text):
            add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
            return False
        return True
    if typ == "number":
        if not is_number(text):
            add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
            return False
        return True
    return True


def indexed_base(name: str) -> str | None:
    """``"net[n]"`` -> ``"net"``; anything else -> None."""
    return name[:-3] if name.endswith("[n]") else None


def lookup_property(props: Mapping[str, Any], key: str) -> tuple[str, dict] | None:
    """The schema entry for ``key``: a direct one, or ``net[n]`` for ``net0`` .. ``net31``."""
    if key in props:
        return key, props[key]
    m = re.search(r"^([a-z][a-z_]*?)(0|[1-9]\d*)$", key)
    if m:
        indexed = f"{m.group(1)}[n]"
        if indexed in props:
            limit = INDEXED_LIMITS.get(m.group(1), DEFAULT_INDEXED_LIMIT)
            if int(m.group(2)) < limit:
                return indexed, props[indexed]
    return None


def check_object(
    path: str,
    schema: Mapping[str, Any],
    value: Any,
    additional: Any,
    errors: dict[str, str],
    *,
    missing_additional_allowed: bool = True,
) -> None:
    """``PVE::JSONSchema::check_object`` (plus ``name[n]`` expansion)."""
    if not isinstance(value, dict):
        add_error(errors, path, "an object is required")
        return
    for k, sub in schema.items():
        if indexed_base(k) is not None:
            continue  # net[n] is never "missing"; present netN are checked below
        instance_type = None
        if isinstance(sub, dict) and sub.get("type-property"):
            instance_type = value.get(sub["type-property"])
        check_prop(value.get(k), sub, f"{path}.{k}" if path else k, errors, instance_type)
    for k in value:
        newpath = f"{path}.{k}" if path else k
        found = lookup_property(schema, k)
        if found is not None:
            name, sub = found
            if name != k:  # an expanded net[n]
                check_prop(value[k], sub, newpath, errors)
            requires = sub.get("requires")
            if requires:
                if isinstance(requires, dict):
                    check_prop(value, requires, path, errors)
                elif value.get(requires) is None:
                    add_error(
                        errors,
                        f"{path}.{requires}" if path else requires,
                        f"missing property - '{newpath}' requires this property",
                    )
            continue
        if additional is None and missing_additional_allowed:
            continue
        if not additional:
            add_error(
                errors,
                newpath,
                "property is not defined in schema and the schema does not allow additional properties",
            )
            continue
        if isinstance(additional, dict):
            check_prop(value[k], additional, newpath, errors)


def check_prop(value: Any, schema: Any, path: str, errors: dict[str, str], instance_type: Any = None) -> None:
    """``PVE::JSONSchema::check_prop``."""
    if not isinstance(schema, dict):
        add_error(errors, path, "Invalid schema definition.")
        return
    optional_for_type = False
    if schema.get("oneOf"):
        if schema.get("type-property"):
            optional_for_type = True
            for alt in schema["oneOf"]:
                if instance_type is None:
                    break
                if instance_type not in (alt.get("instance-types") or []):
                    continue
                optional_for_type = bool(alt.get("optional"))
                check_prop(value, alt, path, errors)
        elif value is not None:
            collected: dict[str, str] = {}
            for i, alt in enumerate(schema["oneOf"]):
                inner: dict[str, str] = {}
                check_prop(value, alt, f"{path}.oneOf[{i}]", inner)
                if not inner:
                    collected = {}
                    break
                collected.update(inner)
            for p, msg in collected.items():
                add_error(errors, p, msg)
    if schema.get("extends"):
        check_prop(value, schema["extends"], path, errors)

    if value is None:
        if schema.get("type") == "null":
            return
        if not schema.get("optional") and not schema.get("alias") and not schema.get("group") and not optional_for_type:
            add_error(errors, path, "property is missing and it is not optional")
        return

    if not check_type(path, schema.get("type"), value, errors):
        return

    kind = _kind(value)
    if kind == "ARRAY":
        items = schema.get("items")
        if isinstance(items, dict):
            for i, el in enumerate(value):
                check_prop(el, items, f"{path}[{i}]", errors)
        return
    if kind == "HASH":
        if schema.get("properties") or schema.get("additionalProperties"):
            check_object(path, schema.get("properties") or {}, value, schema.get("additionalProperties"), errors)
        return
    if kind == "bool":
        return  # a JSON boolean is a reference in Perl: no scalar checks

    text = perl_str(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, text, path)
        except FormatError as exc:
            add_error(errors, path, f"invalid format - {exc}")
            return
    pattern = schema.get("pattern")
    if pattern and not matches_pattern(pattern, text):
        add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(text) > int(schema["maxLength"]):
        add_error(errors, path, f"value may only be {perl_str(schema['maxLength'])} characters long")
        return
    if schema.get("minLength") is not None and len(text) < int(schema["minLength"]):
        add_error(errors, path, f"value must be at least {perl_str(schema['minLength'])} characters long")
        return
    if is_number(text):
        number = float(text)
        if schema.get("maximum") is not None and number > float(schema["maximum"]):
            add_error(errors, path, f"value must have a maximum value of {perl_str(schema['maximum'])}")
            return
        if schema.get("minimum") is not None and number < float(schema["minimum"]):
            add_error(errors, path, f"value must have a minimum value of {perl_str(schema['minimum'])}")
            return
    enum = schema.get("enum")
    if enum and not any(perl_str(e) == text for e in enum):
        add_error(
            errors, path, f"value '{text}' does not have a value in the enumeration '{', '.join(map(perl_str, enum))}'"
        )


def _exception_text(msg: str, errors: Mapping[str, str]) -> str:
    """``PVE::Exception::stringify`` of ``raise $msg, errors => $errors``."""
    return msg + "".join(f"{k}: {v}\n" for k, v in errors.items())


def parse_property_string(fmt: Mapping[str, Any], data: str, path: str = "") -> dict[str, Any]:
    """``PVE::JSONSchema::parse_property_string`` for a hash format; raises FormatError."""
    res: dict[str, Any] = {}
    default_key: str | None = None
    for part in data.split(","):
        if re.search(r"^\s*$", part):
            continue
        m = re.search(r"^([^=]+)=(.+)$", part)
        if m:
            k, v = m.group(1), m.group(2)
            if k in res:
                raise FormatError(f"duplicate key in comma-separated list property: {k}\n")
            sub = fmt.get(k)
            if sub and sub.get("alias"):
                key_alias = sub.get("keyAlias")
                if key_alias:
                    if key_alias in res:
                        raise FormatError(f"key alias '{key_alias}' is already defined\n")
                    res[key_alias] = k
                k = sub["alias"]
                sub = fmt.get(k)
            if not sub:
                raise FormatError(f"invalid key in comma-separated list property: {k}\n")
            if sub.get("type") == "boolean":
                parsed = parse_boolean(v)
                v = parsed if parsed is not None else v
            res[k] = v
        elif "=" not in part:
            if default_key:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            for key, sub in fmt.items():
                if sub.get("default_key"):
                    default_key = key
                    if not res.get(default_key):
                        res[default_key] = part
                        break
                    raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            if not default_key:
                raise FormatError("value without key, but schema does not define a default key\n")
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, 0, errors)
    if errors:
        raise FormatError(_exception_text("format error\n", errors))
    return res


def print_property_string(data: Mapping[str, Any], fmt: Mapping[str, Any]) -> str:
    """``PVE::JSONSchema::print_property_string``: default key bare, then required keys, then the rest (sorted)."""
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    key_aliases = {s["keyAlias"]: s["alias"] for s in fmt.values() if s.get("alias") and s.get("keyAlias")}
    out: list[str] = []
    done: set[str] = set()

    def value_str(key: str, value: Any, sub: Mapping[str, Any] | None) -> str:
        if sub and sub.get("format") == "disk-size":
            size = parse_size(perl_str(value))
            return format_size(size) if size is not None else perl_str(value)
        text = perl_str(value)
        if "," in text:
            raise FormatError(f"illegal value with commas for {key}\n")
        return text

    def add(key: str, is_default: bool = False) -> None:
        if key in done:
            return
        done.add(key)
        value = data.get(key)
        if value is None:
            return
        sub = fmt.get(key)
        combine = key_aliases.get(key)
        if combine and data.get(combine) is not None:
            out.append(f"{value_str(key, value, sub)}={value_str(combine, data[combine], fmt.get(combine))}")
            done.add(combine)
            return
        if sub and sub.get("alias"):
            sub = fmt.get(sub["alias"])
        if not sub:
            raise FormatError(f"invalid key '{key}'\n")
        out.append(value_str(key, value, sub) if is_default else f"{key}={value_str(key, value, sub)}")

    if default_key:
        add(default_key, True)
    for key in sorted(data):
        sub = fmt.get(key)
        if sub and not sub.get("optional"):
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(out)


def coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """A validated wire value as the Python value Proxmox stores (int for integer/boolean)."""
    if value is None:
        return None
    typ = schema.get("type")
    if typ == "boolean":
        if isinstance(value, bool):
            return int(value)
        parsed = parse_boolean(perl_str(value))
        return parsed if parsed is not None else value
    if typ == "integer":
        return int(perl_str(value))
    if typ == "number":
        number = float(perl_str(value))
        return int(number) if number.is_integer() else number
    return value if isinstance(value, (list, dict)) else perl_str(value)


# --------------------------------------------------------------------------- the schema


def _candidate_paths() -> list[Path]:
    env = os.environ.get(SCHEMA_ENV)
    if env:
        return [Path(env)]
    return [_REPO.parent / "shared" / "pve" / "api-schema.json", DEFAULT_SCHEMA_PATH]


def resolve_schema_path(path: str | Path | None = None) -> Path:
    """``$PVE_API_SCHEMA`` if set; else ``<repo>/../shared/pve/api-schema.json`` (where CI puts
    its copy of shared/, beside the clone), falling back to ``/work/shared/pve/api-schema.json``."""
    candidates = [Path(path)] if path is not None else _candidate_paths()
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no Proxmox API schema at {', '.join(map(str, candidates))}")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Schema:
    with open(path, encoding="utf-8") as fh:
        return Schema(json.load(fh))


class Schema:
    """The API schema tree, indexed by (method, path template)."""

    def __init__(self, tree: Iterable[Mapping[str, Any]], *, missing_additional_allowed: bool = False):
        self.tree = list(tree)
        self.missing_additional_allowed = missing_additional_allowed
        self.methods: dict[tuple[str, str], dict[str, Any]] = {}
        self._trie: dict[str, Any] = {}
        stack = list(self.tree)
        while stack:
            node = stack.pop()
            stack.extend(node.get("children") or [])
            template = node["path"]
            self._insert(template)
            for method, info in (node.get("info") or {}).items():
                self.methods[(method.upper(), template)] = info

    @classmethod
    def load(cls, path: str | Path | None = None) -> Schema:
        """Load (once per file) the schema; see ``resolve_schema_path`` for where it is looked for."""
        return _load(str(resolve_schema_path(path)))

    # ----------------------------------------------------------------- paths
    @staticmethod
    def _segments(path: str) -> list[str]:
        return [s for s in path.split("/") if s]

    def _insert(self, template: str) -> None:
        node = self._trie
        for seg in self._segments(template):
            m = re.fullmatch(r"\{([^}]+)\}", seg)
            key = ("param", m.group(1)) if m else ("lit", seg)
            node = node.setdefault(key, {})
        node[("end",)] = template

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """``/nodes/pve/lxc/100/config`` -> (``/nodes/{node}/lxc/{vmid}/config``, {node, vmid}).

        None when no template matches or the template has no such method. ``path`` is the
        decoded path below ``/api2/json``.
        """
        found = self._walk(self._trie, self._segments(path), {})
        if found is None:
            return None
        template, params = found
        if (method.upper(), template) not in self.methods:
            return None
        return template, params

    def _walk(self, node: dict, segs: list[str], params: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        if not segs:
            template = node.get(("end",))
            return (template, params) if template is not None else None
        head, rest = segs[0], segs[1:]
        child = node.get(("lit", head))
        if child is not None:
            found = self._walk(child, rest, params)
            if found is not None:
                return found
        for key, child in node.items():
            if key[0] == "param":
                found = self._walk(child, rest, {**params, key[1]: head})
                if found is not None:
                    return found
        return None

    def info(self, method: str, template: str) -> dict[str, Any]:
        try:
            return self.methods[(method.upper(), template)]
        except KeyError:
            raise SchemaLookupError(f"Method '{method.upper()} {template}' is not in the API schema") from None

    def properties(self, method: str, template: str) -> dict[str, Any]:
        return self.info(method, template).get("parameters", {}).get("properties", {})

    def _resolve(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        if (method.upper(), path) in self.methods:
            return path, {}
        found = self.match(method, path)
        if found is None:
            raise SchemaLookupError(f"Method '{method.upper()} {path}' is not in the API schema")
        return found

    # ----------------------------------------------------------------- validation
    def validate(self, method: str, path: str, params: Mapping[str, Any]) -> dict[str, str]:
        """{} when Proxmox would accept the call, else {param: message}.

        ``path`` is a concrete path (its ``{...}`` parts are taken from it and override
        ``params``, as Proxmox's RESTHandler does) or a template (then ``params`` must hold
        the path parameters). Raises SchemaLookupError for a call not in the schema.
        """
        template, path_params = self._resolve(method, path)
        merged = {k: v for k, v in params.items()}
        merged.update(path_params)
        parameters = self.info(method, template).get("parameters", {})
        errors: dict[str, str] = {}
        check_object(
            "",
            parameters.get("properties", {}),
            merged,
            parameters.get("additionalProperties"),
            errors,
            missing_additional_allowed=self.missing_additional_allowed,
        )
        return errors

    def validate_returns(self, method: str, path: str, data: Any) -> dict[str, str]:
        """Check a response's ``data`` against the method's ``returns`` schema (types, enums, required keys).

        Extra keys are allowed unless the schema says ``additionalProperties: 0``.
        """
        template, _ = self._resolve(method, path)
        returns = self.info(method, template).get("returns") or {}
        errors: dict[str, str] = {}
        check_prop(data, returns, "", errors)
        return errors

    def property_schema(self, method: str, template: str, key: str) -> dict[str, Any] | None:
        found = lookup_property(self.properties(method, template), key)
        return found[1] if found else None


def encode_form(params: Mapping[str, Any]) -> str:
    """Form-encode params the way proxmoxer/requests do (booleans must already be 0/1)."""
    return urllib.parse.urlencode({k: perl_str(v) for k, v in params.items()})
