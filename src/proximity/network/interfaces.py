"""Read and surgically edit a Debian/Proxmox ``/etc/network/interfaces`` file.

Proximity owns exactly one marked block in that file (the ``prox-net`` bridge
stanza). Everything here works on the file *text* so the caller decides about
I/O, and every edit keeps all bytes outside the block untouched: admins hand-tune
this file, and Proxmox rewrites it too, so we must never reformat it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proximity.errors import InputError

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "InterfacesFileError",
    "Stanza",
    "compare_bridge",
    "declared_addresses",
    "detect_eol",
    "find_block",
    "merge_block",
    "parse_stanzas",
    "remove_block",
    "render_block",
]

BEGIN_MARKER = "# BEGIN proximity managed block"
END_MARKER = "# END proximity managed block"

# Appended to the BEGIN line when the original file lacked a final newline, so
# that removing the block can give the file back byte for byte.
_NO_FINAL_NEWLINE_FLAG = "[file had no final newline]"
_BEGIN_LINE = (
    f"{BEGIN_MARKER} (managed by Proximity: edit its settings and run "
    "'proximity up'; 'proximity down' removes it)"
)
_MARKER_FIX = (
    "Fix or delete the Proximity marker lines by hand (keep one BEGIN/END pair "
    "around the block, or remove the whole block), then run 'proximity up' again."
)
_DEFAULT_PATH = "/etc/network/interfaces"

# Top-level keywords that end an iface stanza (ifupdown and ifupdown2).
# Blank lines and comments do not end a stanza.
_KEYWORDS = frozenset(
    {"iface", "auto", "mapping", "source", "source-directory", "rename", "vlan"}
)
_TRUE = frozenset({"on", "yes", "1", "true"})
_FALSE = frozenset({"off", "no", "0", "false"})
_BOOL_KEYS = frozenset(
    {"bridge-stp", "bridge-vlan-aware", "bridge-mcsnoop", "bridge-mcquerier"}
)


class InterfacesFileError(InputError):
    """The file's Proximity markers are damaged; a human has to decide what to keep."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class _Line:
    offset: int  # character offset of the line start
    body: str  # content without the line ending
    eol: str  # "\r\n", "\n" or "" (last line without final newline)

    @property
    def end(self) -> int:
        return self.offset + len(self.body) + len(self.eol)


def _split_lines(text: str) -> list[_Line]:
    """Split on "\\n" only (str.splitlines would also split on \\x0c, \\u2028, ...)."""
    lines: list[_Line] = []
    pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        if nl == -1:
            lines.append(_Line(pos, text[pos:], ""))
            break
        if nl > pos and text[nl - 1] == "\r":
            lines.append(_Line(pos, text[pos : nl - 1], "\r\n"))
        else:
            lines.append(_Line(pos, text[pos:nl], "\n"))
        pos = nl + 1
    return lines


def detect_eol(text: str) -> str:
    """The file's line-ending style, so inserted lines match their neighbours."""
    nl = text.find("\n")
    return "\r\n" if nl > 0 and text[nl - 1] == "\r" else "\n"


# --------------------------------------------------------------------------- block


def render_block(
    body_lines: list[str], eol: str = "\n", no_final_newline: bool = False
) -> str:
    """Wrap ``body_lines`` in marker lines; the BEGIN line tells humans who owns it."""
    for line in body_lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"block line contains a line break: {line!r}")
        if _is_marker(line, BEGIN_MARKER) or _is_marker(line, END_MARKER):
            raise ValueError(f"block line looks like a Proximity marker: {line!r}")
    begin = _BEGIN_LINE + (f" {_NO_FINAL_NEWLINE_FLAG}" if no_final_newline else "")
    return "".join(line + eol for line in [begin, *body_lines, END_MARKER])


def _is_marker(body: str, marker: str) -> bool:
    # Tolerate indentation so an indented marker is not silently missed.
    return body.lstrip(" \t").startswith(marker)


@dataclass(frozen=True)
class _Block:
    start: int  # start of the separator Proximity added (== begin if none)
    begin: int  # start of the BEGIN line
    end: int  # end of the END line, including its line ending
    first_line: int  # 1-based line number of BEGIN
    last_line: int  # 1-based line number of END
    eol: str
    no_final_newline: bool


def _locate(text: str) -> _Block | None:
    """Find the single managed block, or explain precisely why the markers are broken."""
    lines = _split_lines(text)
    begin_idx: int | None = None
    found: tuple[int, int] | None = None
    for idx, line in enumerate(lines):
        lineno = idx + 1
        if _is_marker(line.body, BEGIN_MARKER):
            if begin_idx is not None:
                raise InterfacesFileError(
                    f"line {lineno}: a second '{BEGIN_MARKER}' line, but the one at "
                    f"line {begin_idx + 1} has no '{END_MARKER}' line yet. {_MARKER_FIX}",
                    lineno,
                )
            if found is not None:
                raise InterfacesFileError(
                    f"line {lineno}: a second Proximity managed block starts here "
                    f"(the first one is at lines {found[0] + 1}-{found[1] + 1}). "
                    f"{_MARKER_FIX}",
                    lineno,
                )
            begin_idx = idx
        elif _is_marker(line.body, END_MARKER):
            if begin_idx is None:
                raise InterfacesFileError(
                    f"line {lineno}: '{END_MARKER}' without a matching "
                    f"'{BEGIN_MARKER}' line above it. {_MARKER_FIX}",
                    lineno,
                )
            found = (begin_idx, idx)
            begin_idx = None
    if begin_idx is not None:
        raise InterfacesFileError(
            f"line {begin_idx + 1}: '{BEGIN_MARKER}' without a matching "
            f"'{END_MARKER}' line after it. {_MARKER_FIX}",
            begin_idx + 1,
        )
    if found is None:
        return None

    first, last = lines[found[0]], lines[found[1]]
    eol = first.eol or "\n"
    flagged = first.body.rstrip().endswith(_NO_FINAL_NEWLINE_FLAG)
    prefix = text[: first.offset]
    at_eof = last.end == len(text)
    sep = 0
    if flagged and at_eof:
        # merge added eol+eol after a file without final newline.
        if prefix.endswith(eol + eol):
            sep = 2 * len(eol)
        elif prefix.endswith(eol):
            sep = len(eol)
    elif prefix.endswith(eol) and prefix[: -len(eol)].endswith("\n"):
        # merge added one blank line; only take it if it really is blank.
        sep = len(eol)
    return _Block(
        start=first.offset - sep,
        begin=first.offset,
        end=last.end,
        first_line=found[0] + 1,
        last_line=found[1] + 1,
        eol=eol,
        no_final_newline=flagged,
    )


def find_block(text: str) -> tuple[int, int] | None:
    """Span ``[start, end)`` of the block plus the separator merge added before it."""
    block = _locate(text)
    return None if block is None else (block.start, block.end)


def merge_block(text: str, body_lines: list[str]) -> str:
    """Insert or refresh the block, leaving every byte outside it untouched."""
    block = _locate(text)
    if block is not None:
        fresh = render_block(body_lines, block.eol, block.no_final_newline)
        return text[: block.begin] + fresh + text[block.end :]
    eol = detect_eol(text)
    if text == "":
        return render_block(body_lines, eol)
    if text.endswith("\n"):
        return text + eol + render_block(body_lines, eol)
    # No final newline: end the last line, add a blank line, remember we did.
    return text + eol + eol + render_block(body_lines, eol, no_final_newline=True)


def remove_block(text: str) -> str:
    """Exact inverse of :func:`merge_block`; unchanged text if there is no block."""
    block = _locate(text)
    if block is None:
        return text
    return text[: block.start] + text[block.end :]


# --------------------------------------------------------------------------- stanzas


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


def _is_keyword(word: str) -> bool:
    return word in _KEYWORDS or word.split("-")[0] == "allow"


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """``(first_line, last_line, content)`` with backslash continuations joined."""
    out: list[tuple[int, int, str]] = []
    parts: list[str] = []
    start = 0
    for idx, line in enumerate(_split_lines(text)):
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
    block = _locate(text)
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
        if _is_keyword(words[0]):
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
    stanza: Stanza, desired: dict[str, str], path: str = _DEFAULT_PATH
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
