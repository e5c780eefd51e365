"""The stanzas of an interfaces file, read the way ifupdown reads them: options, addresses and
whether a hand-written bridge stanza says what Proximity's settings say (pure, no I/O)."""

from __future__ import annotations

import ipaddress
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from proximity.network.interface_lines import is_keyword, split_lines

_TRUE = frozenset({"on", "yes", "1", "true"})
_FALSE = frozenset({"off", "no", "0", "false"})
_BOOL_KEYS = frozenset(
    {"bridge-stp", "bridge-vlan-aware", "bridge-mcsnoop", "bridge-mcquerier"}
)


def _editor():
    """The editor module, which imports this one back: its marked stanza."""
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
    for idx, line in enumerate(split_lines(text)):
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


def parse_stanzas(text: str, marked: bool = True) -> list[Stanza]:
    """Parse ``iface`` stanzas the way ifupdown does: only keywords end a stanza.

    ``marked``: the file is the one Proximity writes, so its marker makes a stanza ``managed``
    (a sourced file never holds Proximity's stanza: its markers mean nothing).
    """
    block = _editor()._locate(text) if marked else None
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
        if is_keyword(words[0]):
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


def declared_addresses(text: str, marked: bool = True) -> list[tuple[str, str]]:
    """``(iface, "A.B.C.D/len")`` of all IPv4 addresses outside Proximity's block.

    Used to detect subnet clashes with addresses the admin configured. Values
    that are not IPv4 addresses (IPv6, template variables) are skipped.
    ``marked``: as for :func:`parse_stanzas` (False for a sourced file).
    """
    return [
        (stanza.name, str(addr.cidr))
        for stanza in parse_stanzas(text, marked)
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


def _compare_address6(stanza: Stanza, want: str, path: str) -> list[str]:
    """An inet6 stanza's addresses against the one Proximity needs (written with its prefix length)."""
    have = [(token, line) for value, line in stanza.values("address") for token in value.split()]
    if not have:
        return [f"address is missing from iface {stanza.name} in {path} line {stanza.first_line}, "
                f"Proximity needs '{want}'"]

    def same(token: str) -> bool:
        try:
            return ipaddress.IPv6Interface(token) == ipaddress.IPv6Interface(want)
        except ValueError:
            return False

    matched = any(same(token) for token, _ in have)
    return [f"address '{token}' in {path} line {line} is extra, Proximity needs only '{want}'" if matched
            else f"address is '{token}' in {path} line {line}, Proximity needs '{want}'"
            for token, line in have if not same(token)]


def _compare_address(stanza: Stanza, want: str, path: str) -> list[str]:
    if ":" in want:
        return _compare_address6(stanza, want, path)
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


# --------------------------------------------------------------------------- sourced files

# ifupdown2's source-directory reads only files whose whole name matches this (interfaces(5)).
SOURCE_DIRECTORY_NAME = re.compile(r"[a-zA-Z0-9_-]+")


@dataclass(frozen=True)
class SourcedFile:
    """A file ifupdown2 reads because the interfaces file (or a file it sources) says so."""

    path: Path
    text: str | None  # None: it could not be read (a directory, not UTF-8, gone)
    via: Path  # the file with the source line
    line: int  # that line


def source_lines(text: str) -> list[tuple[str, str, int]]:
    """``(keyword, argument, line)`` of each ``source``/``source-directory`` line."""
    out = []
    for first, _, content in _logical_lines(text):
        words = content.split()
        if len(words) >= 2 and words[0] in ("source", "source-directory"):
            out.append((words[0], words[1], first))
    return out


def sourced_files(
    path: Path, text: str, read: Callable[[Path], str | None], glob: Callable[[str], list[Path]]
) -> list[SourcedFile]:
    """Every file ifupdown2 reads besides ``path``, in its order, each once.

    ``source PATTERN`` reads the files the glob matches, sorted; ``source-directory DIR`` (DIR may
    be a glob) reads the files in it whose names match :data:`SOURCE_DIRECTORY_NAME`. A relative
    path is relative to the directory of the file it is written in (interfaces(5)). Files are read
    recursively; a file seen before is not read again (ifupdown2 itself would recurse forever).
    """
    seen = {os.path.realpath(path)}
    found: list[SourcedFile] = []

    def walk(current: Path, current_text: str) -> None:
        for keyword, argument, line in source_lines(current_text):
            pattern = argument if argument.startswith("/") else str(current.parent / argument)
            if keyword == "source":
                files = sorted(glob(pattern))
            else:
                files = [f for d in sorted(glob(pattern)) for f in sorted(glob(os.path.join(str(d), "*")))
                         if SOURCE_DIRECTORY_NAME.fullmatch(f.name)]
            for file in files:
                key = os.path.realpath(file)
                if key in seen:
                    continue
                seen.add(key)
                file_text = read(file)
                found.append(SourcedFile(file, file_text, current, line))
                if file_text:
                    walk(file, file_text)

    walk(path, text)
    return found


def is_sourced(path: Path, patterns: Iterable[tuple[str, str]]) -> bool:
    """Whether ifupdown2 would read a file at ``path`` through one of ``(keyword, absolute pattern)``
    (the file need not exist yet: a zone's file is checked before it is written)."""
    for keyword, pattern in patterns:
        if keyword == "source" and fnmatch.fnmatchcase(str(path), pattern):
            return True
        if keyword == "source-directory" and fnmatch.fnmatchcase(str(path.parent), pattern.rstrip("/")) \
                and SOURCE_DIRECTORY_NAME.fullmatch(path.name):
            return True
    return False


def source_patterns(path: Path, text: str | None, as_seen: Callable[[str], str]) -> tuple[tuple[str, str], ...]:
    """The ``source`` lines of the file at ``path``, each pattern absolute and as this host sees it."""
    return tuple((keyword, as_seen(argument if argument.startswith("/") else str(path.parent / argument)))
                 for keyword, argument, _ in source_lines(text or ""))


def declared_in(sourced: list[SourcedFile] | tuple[SourcedFile, ...], name: str) -> list[tuple[SourcedFile, Stanza]]:
    """The stanzas of ``name`` (any family) in the sourced files."""
    return [(f, st) for f in sourced if f.text for st in parse_stanzas(f.text, marked=False) if st.name == name]
