"""The text model of an interfaces file: lines with their endings, and stanzas as Proxmox reads them.

Pure helpers for :mod:`proximity.network.interfaces`, which edits the file. A line keeps its exact
ending, so an edit gives back every byte outside the stanza it touches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER_RE = re.compile(r"\s*#\s*proximity:managed\b", re.IGNORECASE)

# Top-level keywords that end an iface stanza (ifupdown, ifupdown2 and Proxmox).
# For ifupdown, blank lines and comments do not end a stanza; for Proxmox's
# reader a blank line does (see stanza_end).
KEYWORDS = frozenset(
    {"iface", "auto", "mapping", "source", "source-directory", "rename", "vlan"}
)
SOURCE_KEYWORDS = frozenset({"source", "source-directory"})


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    offset: int  # character offset of the line start
    body: str  # content without the line ending
    eol: str  # "\r\n", "\n" or "" (last line without final newline)

    @property
    def end(self) -> int:
        return self.offset + len(self.body) + len(self.eol)


def split_lines(text: str) -> list[Line]:
    """Split on "\\n" only (str.splitlines would also split on \\x0c, \\u2028, ...)."""
    lines: list[Line] = []
    pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        if nl == -1:
            lines.append(Line(pos, text[pos:], ""))
            break
        if nl > pos and text[nl - 1] == "\r":
            lines.append(Line(pos, text[pos : nl - 1], "\r\n"))
        else:
            lines.append(Line(pos, text[pos:nl], "\n"))
        pos = nl + 1
    return lines


def detect_eol(text: str) -> str:
    """The file's line-ending style, so inserted lines match their neighbours."""
    nl = text.find("\n")
    return "\r\n" if nl > 0 and text[nl - 1] == "\r" else "\n"


def is_keyword(word: str) -> bool:
    return word in KEYWORDS or word.split("-")[0] == "allow"


def is_comment(body: str) -> bool:
    return body.lstrip().startswith("#")


def is_marker(body: str) -> bool:
    return MARKER_RE.match(body) is not None


def is_legacy(body: str, marker: str) -> bool:
    # Tolerate indentation so an indented marker is not silently missed.
    return body.lstrip(" \t").startswith(marker)


def iface_name(body: str) -> str | None:
    words = body.split()
    return words[1] if len(words) > 1 and words[0] == "iface" else None


def names_only(body: str, name: str) -> bool:
    """An ``auto``/``allow-*`` line that names only ``name``."""
    words = body.split()
    return len(words) == 2 and (words[0] == "auto" or words[0].startswith("allow-")) and words[1] == name


def in_stanza(body: str) -> bool:
    """Whether Proxmox's reader keeps this line in the stanza above it.

    It stops at a blank line, a keyword and a line that is not ``key value``.
    """
    if is_comment(body):
        return True
    words = body.split()
    return len(words) >= 2 and not is_keyword(words[0])


def stanza_end(lines: list[Line], iface_idx: int) -> int:
    """Index of the last line of the stanza that starts at ``iface_idx``, as Proxmox reads it."""
    idx = iface_idx
    while idx + 1 < len(lines) and in_stanza(lines[idx + 1].body):
        idx += 1
    return idx


@dataclass(frozen=True)
class Run:
    """One stanza as Proxmox reads it: lines ``first..last`` (indexes), ``iface`` at ``head``."""

    first: int
    head: int
    last: int
    name: str


def stanza_runs(lines: list[Line]) -> list[Run]:
    runs = []
    for idx, line in enumerate(lines):
        name = iface_name(line.body)
        if name is None:
            continue
        first = idx
        while first > 0 and names_only(lines[first - 1].body, name):
            first -= 1
        runs.append(Run(first, idx, stanza_end(lines, idx), name))
    return runs
