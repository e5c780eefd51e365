"""Read and surgically edit a Debian/Proxmox ``/etc/network/interfaces`` file.

Proximity owns exactly one ``iface`` stanza in that file (the ``prox-net``
bridge). It marks the stanza with a comment line inside it, :data:`MARKER`,
because that is the one marking Proxmox's own writer keeps: when an admin
changes the network in the Proxmox GUI, Proxmox parses the file and writes all
of it back, keeping a comment only as part of the stanza whose lines it follows
(at that stanza's end) and every unknown option (``post-up``, ``hwaddress``)
verbatim. A comment that stands alone, like the ``# BEGIN``/``# END`` pair
older versions wrapped the stanza in, is dropped or moved to another stanza.

Proximity's stanza is therefore "the stanza that carries the marker", read the
way Proxmox reads a stanza: the ``iface`` line, the ``auto``/``allow-*`` lines
right above it that name only it, and the lines below it up to the first blank
line or keyword. Everything here works on the file *text*, so the caller
decides about I/O, and every edit keeps all bytes outside that stanza
untouched: admins hand-tune this file and we must never reformat it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proximity.errors import InputError
from proximity.network.interface_lines import (
    SOURCE_KEYWORDS,
    Line,
    Run,
    detect_eol,
    iface_name,
    in_stanza,
    is_comment,
    is_legacy,
    is_marker,
    names_only,
    split_lines,
    stanza_runs,
)

__all__ = [
    "LEGACY_BEGIN_MARKER",
    "LEGACY_END_MARKER",
    "MARKER",
    "IPV6_TAG",
    "InterfacesFileError",
    "Stanza",
    "compare_bridge",
    "declared_addresses",
    "detect_eol",
    "find_block",
    "merge_block",
    "merge_inet6",
    "parse_stanzas",
    "remove_block",
    "remove_stanzas",
    "render_block",
]

# The comment that makes a stanza Proximity's. It is written unindented, after
# the stanza's options, exactly where Proxmox's writer puts a stanza's comments,
# so a Proxmox rewrite leaves Proximity's stanza byte for byte as it was. The
# Proxmox GUI shows it as the bridge's comment.
MARKER = "# proximity:managed"
_MARKER_LINE = (
    f"{MARKER} - Proximity owns this stanza ('proximity up' rewrites it, "
    "'proximity down' removes it)"
)
# What makes an ``iface BR inet6`` stanza Proximity's: a shell comment ending its pre-up lines
# (Proxmox's writer moves that stanza's comment lines into the inet stanza, but keeps options verbatim).
IPV6_TAG = "# proximity:ipv6"
# The marker pair of earlier versions; files that carry it are taken over.
LEGACY_BEGIN_MARKER = "# BEGIN proximity managed block"
LEGACY_END_MARKER = "# END proximity managed block"

# Appended to the marker line when the original file lacked a final newline, so
# that removing the stanza can give the file back byte for byte.
_NO_FINAL_NEWLINE_FLAG = "[file had no final newline]"
_DEFAULT_PATH = "/etc/network/interfaces"

class InterfacesFileError(InputError):
    """The file's Proximity markers are ambiguous; a human has to decide what to keep."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# --------------------------------------------------------------------------- block


def _check_body(body_lines: list[str]) -> None:
    """ValueError unless the lines form one stanza that Proxmox's reader keeps whole.

    That is: ``auto``/``allow-*`` lines naming the stanza, one ``iface`` line,
    then ``key value`` option lines and comments (no blank line, keyword or
    continuation, which would end or split the stanza in Proxmox's reader).
    """
    heads = [i for i, line in enumerate(body_lines) if iface_name(line) is not None]
    if len(heads) != 1:
        raise ValueError(f"stanza lines need exactly one 'iface' line: {body_lines!r}")
    head = heads[0]
    name = iface_name(body_lines[head])
    assert name is not None
    for i, line in enumerate(body_lines):
        if "\n" in line or "\r" in line:
            raise ValueError(f"stanza line contains a line break: {line!r}")
        if is_marker(line) or is_legacy(line, LEGACY_BEGIN_MARKER) or is_legacy(line, LEGACY_END_MARKER):
            raise ValueError(f"stanza line looks like a Proximity marker: {line!r}")
        if i < head and not names_only(line, name):
            raise ValueError(f"only 'auto {name}' may come before the iface line: {line!r}")
        if i > head and (not in_stanza(line) or line.rstrip().endswith("\\")):
            raise ValueError(f"not an option line of the stanza: {line!r}")


def render_block(
    body_lines: list[str], eol: str = "\n", no_final_newline: bool = False
) -> str:
    """The stanza followed by its marker line, which tells humans (and the Proxmox GUI) who owns it."""
    _check_body(body_lines)
    marker = _MARKER_LINE + (f" {_NO_FINAL_NEWLINE_FLAG}" if no_final_newline else "")
    return "".join(line + eol for line in [*body_lines, marker])


@dataclass(frozen=True)
class _Block:
    start: int  # start of what remove deletes (with the separator merge added)
    end: int  # end of what remove deletes
    begin: int  # start of the stanza's first line (what merge replaces)
    stop: int  # end of the stanza's last line, including its line ending
    first_line: int  # 1-based line number of the first line
    last_line: int  # 1-based line number of the last line
    eol: str
    no_final_newline: bool  # flagged and still at the end of the file
    stale: tuple[tuple[int, int], ...] = ()  # spans of leftover marker lines elsewhere
    legacy: bool = False  # an intact BEGIN/END block of an earlier version


_FIX = "then run 'proximity up' again"


def _locate(text: str) -> _Block | None:
    """Find Proximity's stanza, or explain precisely why the markers are ambiguous."""
    lines = split_lines(text)
    markers = [i for i, line in enumerate(lines) if is_marker(line.body)]
    begins = [i for i, line in enumerate(lines) if is_legacy(line.body, LEGACY_BEGIN_MARKER)]
    ends = [i for i, line in enumerate(lines) if is_legacy(line.body, LEGACY_END_MARKER)]
    if not (markers or begins or ends):
        return None
    runs = stanza_runs(lines)
    run_of = {i: run for run in runs for i in range(run.head, run.last + 1)}

    legacy = _legacy_block(text, lines, markers, begins, ends, run_of)
    if legacy is not None:
        return legacy

    owners: dict[int, tuple[Run, int]] = {}  # run.head -> (run, first marker line in it)
    for idx in sorted(markers + ends):
        run = run_of.get(idx)
        if run is not None:
            owners.setdefault(run.head, (run, idx))
    if not owners:
        idx = min(markers + begins + ends)
        what = (
            f"'{LEGACY_BEGIN_MARKER}' has no '{LEGACY_END_MARKER}' line after it"
            if idx in begins
            else "Proximity's marker comment is not part of any iface stanza (a blank line or a "
            "keyword line separates it from the stanza above)"
        )
        raise InterfacesFileError(
            f"line {idx + 1}: {what}, so Proximity cannot tell which stanza is its own. Fix it by "
            f"hand: delete line {idx + 1}; to keep the stanza it was meant for, put '{MARKER}' on "
            f"the line right after that stanza's last option instead; {_FIX}.",
            idx + 1,
        )
    if len(owners) > 1:
        (run1, line1), (run2, line2) = sorted(owners.values(), key=lambda o: o[1])[:2]
        raise InterfacesFileError(
            f"line {line2 + 1}: this marker makes iface {run2.name} (line {run2.head + 1}) "
            f"Proximity's, and so does line {line1 + 1} for iface {run1.name} (line "
            f"{run1.head + 1}), but Proximity owns one stanza. Fix it by hand: delete the marker "
            f"line from the stanza that is not Proximity's (or delete that stanza); {_FIX}.",
            line2 + 1,
        )
    ((run, _),) = owners.values()
    inside = range(run.first, run.last + 1)
    stale = tuple(
        (lines[i].offset, lines[i].end) for i in sorted(markers + begins + ends) if i not in inside
    )
    flagged = any(lines[i].body.rstrip().endswith(_NO_FINAL_NEWLINE_FLAG) for i in markers if i in inside)
    return _with_separator(text, lines, run.first, run.last, flagged, stale)


def _legacy_block(
    text: str, lines: list[Line], markers: list[int], begins: list[int], ends: list[int], run_of: dict[int, Run]
) -> _Block | None:
    """The intact ``# BEGIN``/``# END`` block of earlier versions, as they wrote it, if that is what this is.

    Intact means: one pair, in order, the BEGIN line standing alone (Proxmox's
    writer never leaves it so: it drops it or moves it into another stanza), at
    most one stanza between, and no new marker anywhere.
    """
    if markers or len(begins) != 1 or len(ends) != 1:
        return None
    begin, end = begins[0], ends[0]
    heads = [i for i in range(begin, end) if iface_name(lines[i].body) is not None]
    if begin > end or begin in run_of or len(heads) > 1:
        return None
    flagged = lines[begin].body.rstrip().endswith(_NO_FINAL_NEWLINE_FLAG)
    return _with_separator(text, lines, begin, end, flagged, (), legacy=True)


def _with_separator(
    text: str, lines: list[Line], first: int, last: int, flagged: bool,
    stale: tuple[tuple[int, int], ...], legacy: bool = False,
) -> _Block:
    """The stanza's span plus the blank line :func:`merge_block` added next to it (if still blank).

    Merge adds a blank line before a stanza it appends at the end of the file
    (two newlines, and the flag, if the file lacked a final newline), and one
    after a stanza it inserts before trailing ``source`` lines. Proxmox's
    writer puts a blank line after every stanza.
    """
    head, tail = lines[first], lines[last]
    eol = head.eol or detect_eol(text)
    prefix = text[: head.offset]
    at_eof = tail.end == len(text)
    start, end = head.offset, tail.end
    if flagged and at_eof:
        if prefix.endswith(eol + eol):
            start -= 2 * len(eol)
        elif prefix.endswith(eol):
            start -= len(eol)
    elif not legacy and not at_eof and lines[last + 1].body == "":
        end = lines[last + 1].end
    elif prefix.endswith(eol) and prefix[: -len(eol)].endswith("\n"):
        start -= len(eol)  # only take the line before if it really is blank
    return _Block(
        start=start,
        end=end,
        begin=head.offset,
        stop=tail.end,
        first_line=first + 1,
        last_line=last + 1,
        eol=eol,
        no_final_newline=flagged and at_eof,
        stale=stale,
        legacy=legacy,
    )


def _edit(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, new in sorted(edits):
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:]


def find_block(text: str) -> tuple[int, int] | None:
    """Span ``[start, end)`` of Proximity's stanza plus the separator merge added next to it.

    Leftover marker lines elsewhere (of a damaged earlier block) are not in it.
    """
    block = _locate(text)
    return None if block is None else (block.start, block.end)


def _insertion_point(lines: list[Line]) -> int | None:
    """Where a new stanza goes when the file ends with ``source`` lines: before them.

    Proxmox's writer keeps top-level lines in place relative to the stanzas
    around them; a stanza appended after the trailing ``source`` lines would
    pull them up among the stanzas the next time Proxmox writes the file. (A
    ``source`` line between stanzas, above VLAN stanzas, can still move that way;
    ifupdown reads the same configuration either way.) ``None``: append at the
    end of the file.
    """
    stanza_lines = {i for run in stanza_runs(lines) for i in range(run.head, run.last + 1)}
    idx, sources = len(lines), False
    while idx > 0 and idx - 1 not in stanza_lines:
        words = lines[idx - 1].body.split()
        if words and not is_comment(lines[idx - 1].body) and words[0] not in SOURCE_KEYWORDS:
            break
        sources = sources or (bool(words) and words[0] in SOURCE_KEYWORDS)
        idx -= 1
    if not sources:
        return None
    while not lines[idx].body.strip():
        idx += 1
    if idx > 0:
        above = lines[idx - 1].body
        words = above.split()
        if (words and (words[0] == "auto" or words[0].startswith("allow-"))) or above.rstrip().endswith("\\"):
            return None  # the line above would (or, after a rename, could) join our stanza
    return lines[idx].offset


def merge_block(text: str, body_lines: list[str]) -> str:
    """Insert or refresh Proximity's stanza, leaving every byte outside it untouched.

    ``body_lines`` are the stanza's lines (``auto``, ``iface``, options); the
    marker line is added here. A block or stanza found through the markers of an
    earlier version is taken over: replaced, and leftover marker lines deleted.
    """
    _check_body(body_lines)
    block = _locate(text)
    if block is not None and block.legacy:
        # Nothing has moved it yet: take it over by writing the stanza as if for the first time.
        return merge_block(remove_block(text), body_lines)
    if block is not None:
        fresh = render_block(body_lines, block.eol, block.no_final_newline)
        return _edit(text, [(block.begin, block.stop, fresh), *((s, e, "") for s, e in block.stale)])
    eol = detect_eol(text)
    where = _insertion_point(split_lines(text))
    if where is not None:
        return text[:where] + render_block(body_lines, eol) + eol + text[where:]
    if text == "":
        return render_block(body_lines, eol)
    if text.endswith("\n"):
        return text + eol + render_block(body_lines, eol)
    # No final newline: end the last line, add a blank line, remember we did.
    return text + eol + eol + render_block(body_lines, eol, no_final_newline=True)


def remove_block(text: str) -> str:
    """Exact inverse of :func:`merge_block`; unchanged text if there is no stanza of Proximity's."""
    block = _locate(text)
    if block is None:
        return text
    return _edit(text, [(block.start, block.end, ""), *((s, e, "") for s, e in block.stale)])


def merge_inet6(text: str, name: str, body_lines: list[str]) -> str:
    """Write or refresh Proximity's ``iface NAME inet6`` stanza right after its block (where Proxmox's
    writer puts it), or with no ``body_lines`` remove it; every other byte stays.

    Call after :func:`merge_block`. Its stanza is the one whose lines carry :data:`IPV6_TAG`; an
    inet6 stanza of ``name`` without it is the admin's, and is refused rather than doubled.
    """
    lines = split_lines(text)
    sixes = [run for run in stanza_runs(lines)
             if run.name == name and lines[run.head].body.split()[2:3] == ["inet6"]]
    mine = [run for run in sixes if any(IPV6_TAG in lines[i].body for i in range(run.head, run.last + 1))]
    theirs = [run for run in sixes if run not in mine]
    if body_lines and theirs:
        line = theirs[0].head + 1
        raise InterfacesFileError(
            f"line {line}: iface {name} inet6 is written by hand (Proxmox's GUI writes it when IPv6 is set on the "
            f"bridge), and Proximity now gives {name} its IPv6 address: delete that stanza (lines {line}-"
            f"{theirs[0].last + 1}) or turn the zone's ipv6 setting off; {_FIX}.", line)
    text = _edit(text, _removals(lines, mine))
    if not body_lines:
        return text
    heads = [line for line in body_lines if iface_name(line) is not None]
    if len(heads) != 1 or heads[0].split()[1:3] != [name, "inet6"]:
        raise ValueError(f"not an iface {name} inet6 stanza: {body_lines!r}")
    _check_body(body_lines)
    block = _locate(text)
    if block is None:
        raise ValueError(f"no stanza of Proximity's to put iface {name} inet6 after: merge_block first")
    stanza = "".join(line + block.eol for line in body_lines)
    return text[: block.stop] + block.eol + stanza + text[block.stop:]


def remove_stanzas(text: str, name: str) -> str:
    """Delete every stanza of ``name`` (any family), as Proxmox's reader delimits them, with the
    ``auto`` lines that name only it and one blank line next to it; every other byte stays.

    ``down`` uses it after :func:`remove_block` for what Proxmox's GUI adds to the bridge as a
    stanza of its own (``iface prox-net inet6 static`` when IPv6 is set on it).
    """
    lines = split_lines(text)
    return _edit(text, _removals(lines, [run for run in stanza_runs(lines) if run.name == name]))


def _removals(lines: list[Line], runs: list[Run]) -> list[tuple[int, int, str]]:
    """Edits deleting each stanza with one blank line next to it (the one after, else the one before)."""
    edits: list[tuple[int, int, str]] = []
    done = 0  # end of the last edit: blank lines are not taken twice
    for run in runs:
        start, end = lines[run.first].offset, lines[run.last].end
        if run.last + 1 < len(lines) and not lines[run.last + 1].body.strip():
            end = lines[run.last + 1].end
        elif run.first > 0 and not lines[run.first - 1].body.strip():
            start = max(lines[run.first - 1].offset, done)
        edits.append((start, end, ""))
        done = end
    return edits


# The stanza reader lives in its own module; its names stay importable from here.
from proximity.network.stanzas import (  # noqa: E402
    Stanza,
    compare_bridge,
    declared_addresses,
    parse_stanzas,
)
