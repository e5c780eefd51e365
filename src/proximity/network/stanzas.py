"""The stanzas of an interfaces file, read the way ifupdown reads them: options, addresses and
whether a hand-written bridge stanza says what Proximity's settings say (pure, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_TRUE = frozenset({"on", "yes", "1", "true"})
_FALSE = frozenset({"off", "no", "0", "false"})
_BOOL_KEYS = frozenset(
    {"bridge-stp", "bridge-vlan-aware", "bridge-mcsnoop", "bridge-mcquerier"}
)


def _editor():
    """The editor module, which imports this one back: its line splitting and its marked stanza."""
    from proximity.network import interfaces

    return interfaces


@dataclass(frozen=True)
class Stanza:
    """One ``iface`` stanza, with line numbers so messages can point at the file."""

    name: str
    family: str
    method: str
    options: tuple[tuple[str, str], ...]
    first_line: int
    last_line: int
    managed: bool
    option_lines: tuple[int, ...] = ()  # 1-based line of each entry in options

    def values(self, key: str) -> list[tuple[str, int]]:
        """All ``(value, line)`` pairs for a (normalised) option key, in file order."""
        key = _norm_key(key)
        return [
            (value, self._line_of(i))
            for i, (k, value) in enumerate(self.options)
            if k == key
        ]

    def _line_of(self, index: int) -> int:
        if index < len(self.option_lines):
            return self.option_lines[index]
        return self.first_line


def _norm_key(key: str) -> str:
    return key.replace("_", "-").lower()


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """``(first_line, last_line, content)`` with backslash continuations joined."""
    out: list[tuple[int, int, str]] = []
    parts: list[str] = []
    start = 0
    for idx, line in enumerate(_editor()._split_lines(text)):
        body = line.body.strip()
        if not parts:
            start = idx + 1
        if body.endswith("\\"):
            parts.append(body[:-1].strip())
            continue
        parts.append(body)
        out.append((start, idx + 1, " ".join(p for p in parts if p)))
        parts = []
    if parts:  # file ends inside a continuation
        out.append((start, start + len(parts) - 1, " ".join(p for p in parts if p)))
    return out


def parse_stanzas(text: str) -> list[Stanza]:
    """Parse ``iface`` stanzas the way ifupdown does: only keywords end a stanza."""
    block = _editor()._locate(text)
    stanzas: list[Stanza] = []
    header: list[str] | None = None  # the words of the current iface line
    first_line = last_line = 0
    options: list[tuple[str, str]] = []
    option_lines: list[int] = []

    def finish() -> None:
        if header is None:
            return
        stanzas.append(
            Stanza(
                name=header[1],
                family=header[2] if len(header) > 2 else "",
                method=header[3] if len(header) > 3 else "",
                options=tuple(options),
                first_line=first_line,
                last_line=last_line,
                managed=block is not None
                and block.first_line <= first_line <= block.last_line,
                option_lines=tuple(option_lines),
            )
        )

    for first, last, content in _logical_lines(text):
        if not content or content.startswith("#"):
            continue
        words = content.split()
        if _editor()._is_keyword(words[0]):
            finish()
            header = words if words[0] == "iface" and len(words) > 1 else None
            first_line, last_line = first, last
            options, option_lines = [], []
        elif header is not None:
            key, *rest = content.split(None, 1)
            options.append((_norm_key(key), rest[0].strip() if rest else ""))
            option_lines.append(first)
            last_line = last
    finish()
    return stanzas


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class _Address:
    raw: str  # token as written
    cidr: ipaddress.IPv4Interface | None  # None if not a valid IPv4 address
    line: int
    netmask: tuple[str, int] | None  # (value, line) if a netmask option was applied


def _prefix_from_netmask(netmask: str) -> int | None:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError:
        return None


def _stanza_addresses(stanza: Stanza) -> list[_Address]:
    """IPv4 ``address`` tokens of a stanza, each combined with its netmask.

    A netmask belongs to the address line it follows (ifupdown2 pairs them by
    position); a netmask written before the first address applies to that
    address (classic ifupdown lets the two options come in any order).
    """
    entries = [
        (k, v, stanza._line_of(i))
        for i, (k, v) in enumerate(stanza.options)
        if k in ("address", "netmask")
    ]
    result: list[_Address] = []
    seen_address = False
    for pos, (key, value, line) in enumerate(entries):
        if key != "address":
            continue
        mask: tuple[str, int] | None = None
        for k2, v2, ln2 in entries[pos + 1 :]:
            if k2 == "address":
                break
            if k2 == "netmask":
                mask = (v2, ln2)
                break
        if mask is None and not seen_address:
            mask = next(((v2, ln2) for k2, v2, ln2 in entries[:pos] if k2 == "netmask"), None)
        seen_address = True
        for token in value.split():
            if ":" in token:  # IPv6
                continue
            used_mask = None
            spec = token
            if "/" not in token:
                prefix = _prefix_from_netmask(mask[0]) if mask else None
                if prefix is not None:
                    used_mask = mask
                spec = f"{token}/{32 if prefix is None else prefix}"
            try:
                cidr: ipaddress.IPv4Interface | None = ipaddress.IPv4Interface(spec)
            except ValueError:
                cidr = None
            result.append(_Address(token, cidr, line, used_mask))
    return result


def declared_addresses(text: str) -> list[tuple[str, str]]:
    """``(iface, "A.B.C.D/len")`` of all IPv4 addresses outside Proximity's block.

    Used to detect subnet clashes with addresses the admin configured. Values
    that are not IPv4 addresses (IPv6, template variables) are skipped.
    """
    return [
        (stanza.name, str(addr.cidr))
        for stanza in parse_stanzas(text)
        if not stanza.managed
        for addr in _stanza_addresses(stanza)
        if addr.cidr is not None
    ]


# --------------------------------------------------------------------------- compare


def _norm_value(key: str, value: str) -> object:
    """Canonical form so equivalent spellings (off/no/0, 0/0.0, ...) compare equal."""
    tokens = value.split()
    if key == "bridge-ports":
        return frozenset(t for t in tokens if t.lower() != "none")
    joined = " ".join(tokens)
    if key in _BOOL_KEYS:
        if joined.lower() in _TRUE:
            return True
        if joined.lower() in _FALSE:
            return False
    try:
        return float(joined)
    except ValueError:
        return joined


def _compare_address(stanza: Stanza, want: str, path: str) -> list[str]:
    wanted = ipaddress.IPv4Interface(want)
    have = _stanza_addresses(stanza)
    if not have:
        return [
            f"address is missing from iface {stanza.name} in {path} line "
            f"{stanza.first_line}, Proximity needs '{want}'"
        ]
    matched = any(a.cidr == wanted for a in have)
    diffs = []
    for addr in have:
        if addr.cidr == wanted:
            continue
        shown = str(addr.cidr) if addr.cidr is not None else addr.raw
        where = f"{path} line {addr.line}"
        if addr.netmask is not None:
            where += f" (with netmask '{addr.netmask[0]}' from line {addr.netmask[1]})"
        if matched:
            diffs.append(
                f"address '{shown}' in {where} is extra, Proximity needs only '{want}'"
            )
        else:
            diffs.append(f"address is '{shown}' in {where}, Proximity needs '{want}'")
    return diffs


def compare_bridge(
    stanza: Stanza, desired: dict[str, str], path: str = "/etc/network/interfaces"
) -> list[str]:
    """Why a hand-written stanza cannot be adopted as-is; ``[]`` if it matches.

    ``bridge-ports`` must be present (``none`` is fine): without it ifupdown2
    does not create a bridge at all.
    """
    diffs: list[str] = []
    if stanza.method not in ("static", ""):  # ifupdown2 defaults a missing method to static
        diffs.append(
            f"iface {stanza.name} uses method '{stanza.method}' in {path} line "
            f"{stanza.first_line}, Proximity needs 'static'"
        )
    for raw_key, want in desired.items():
        key = _norm_key(raw_key)
        if key == "address":
            diffs += _compare_address(stanza, want, path)
            continue
        found = stanza.values(key)
        if not found:
            diffs.append(
                f"{key} is missing from iface {stanza.name} in {path} line "
                f"{stanza.first_line}, Proximity needs '{want}'"
            )
            continue
        value, line = found[0]  # ifupdown2 uses the first occurrence
        if _norm_value(key, value) != _norm_value(key, want):
            diffs.append(
                f"{key} is '{value}' in {path} line {line}, Proximity needs '{want}'"
            )
    return diffs
