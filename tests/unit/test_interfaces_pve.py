"""Proximity's stanza through Proxmox's own interfaces writer, on real-world files.

Every network change in the Proxmox GUI or API makes Proxmox parse /etc/network/interfaces
and write all of it back (into interfaces.new; "Apply Configuration" renames it over
interfaces). ``pve-rewrite`` runs that writer (../shared/pve/README.md); it is the oracle
here. The files under fixtures/interfaces/ are accepted by it: it sees no live links, so a
bridge port there always has an ``iface PORT inet manual`` stanza of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proximity.network import render
from proximity.network.interfaces import (
    LEGACY_BEGIN_MARKER,
    LEGACY_END_MARKER,
    MARKER,
    merge_block,
    parse_stanzas,
    remove_block,
)
from proximity.settings import Settings
from tests.unit.pve_rewrite import PveRewrite, PveRewriteError, run_once
from tests.unit.test_interfaces import legacy_merge

FIXTURES = Path(__file__).with_name("fixtures") / "interfaces"
FILES = {path.stem: path.read_bytes().decode() for path in sorted(FIXTURES.glob("*.interfaces"))}
# The stanza `up` writes (its post-up loads the nftables table from the ruleset file).
BODY = render.bridge_stanza(Settings())
# A bridge an admin adds in the GUI while Proximity's stanza is in the file.
GUI_BRIDGE = "auto vmbr9\niface vmbr9 inet static\n\taddress 192.0.2.1/24\n\tbridge-ports none\n"


@pytest.fixture(scope="module")
def rewrite() -> Iterator[PveRewrite]:
    oracle = PveRewrite()
    yield oracle
    oracle.close()


@pytest.fixture(params=sorted(FILES), ids=sorted(FILES))
def original(request: pytest.FixtureRequest) -> str:
    return FILES[request.param]


def proximity_stanzas(text: str) -> list[str]:
    """Names of the stanzas Proximity considers its own, and a check there is exactly one prox-net."""
    assert [s.name for s in parse_stanzas(text)].count("prox-net") == 1
    assert sum(MARKER in line for line in text.splitlines()) == 1
    return [s.name for s in parse_stanzas(text) if s.managed]


def add_gui_bridge(text: str) -> str:
    """The file an admin's GUI edit starts from, plus the new bridge (Proxmox then rewrites it)."""
    return text + ("" if text.endswith("\n") or not text else "\n") + GUI_BRIDGE


def test_fixtures_are_varied_and_accepted_by_proxmox(rewrite: PveRewrite) -> None:
    assert len(FILES) >= 12
    joined = "".join(FILES.values())
    for feature in ("bond-mode 802.3ad", "bridge-vlan-aware", "vlan-raw-device", "bridge_ports",
                    "source-directory", "OVSBridge", "inet6", "post-up", "\r\n", "\t", "  address"):
        assert feature in joined, feature
    assert not FILES["no_final_newline"].endswith("\n")
    for text in FILES.values():
        assert "iface lo" in rewrite(text) or text == ""


def test_the_oracle_process_answers_as_the_script_does(rewrite: PveRewrite) -> None:
    for name in ("ovs", "crlf", "commented"):
        text = merge_block(FILES[name], BODY)
        assert rewrite(text) == run_once(text)
    with pytest.raises(PveRewriteError, match="unable to find bridge port 'eno9'"):
        rewrite("auto vmbr5\niface vmbr5 inet manual\n\tbridge-ports eno9\n")


def test_proxmox_keeps_the_stanza_byte_for_byte(rewrite: PveRewrite, original: str) -> None:
    merged = merge_block(original, BODY)
    written = rewrite(merged)
    stanza = "".join(line + "\n" for line in BODY) + MARKER
    assert stanza in written
    # Proxmox reads it as a bridge (it lists it in the GUI's bridge selector): only for a
    # bridge does its writer put bridge-ports right after the address.
    assert "\taddress 10.10.0.1/24\n\tbridge-ports none\n" in written
    assert proximity_stanzas(written) == ["prox-net"]


def test_up_rewrite_up_down(rewrite: PveRewrite, original: str) -> None:
    merged = merge_block(original, BODY)  # up
    assert remove_block(merged) == original
    written = rewrite(merged)  # a network edit in the Proxmox GUI
    again = merge_block(written, BODY)  # up: recognises its stanza, nothing to change
    assert again == written
    assert merge_block(again, BODY) == again
    removed = remove_block(again)  # down
    assert rewrite(removed) == rewrite(original)
    # Stronger than the oracle: what is left is exactly what Proxmox writes without prox-net.
    assert removed == rewrite(original)


def test_repeated_rewrites_with_gui_edits_keep_one_stanza(rewrite: PveRewrite, original: str) -> None:
    text = original
    for _ in range(3):
        text = merge_block(rewrite(text), BODY)
        assert proximity_stanzas(text) == ["prox-net"]
        assert merge_block(text, BODY) == text
    edited = rewrite(add_gui_bridge(text))
    assert "iface vmbr9" in edited
    assert merge_block(edited, BODY) == edited
    assert proximity_stanzas(edited) == ["prox-net"]
    assert rewrite(remove_block(edited)) == rewrite(add_gui_bridge(original))


def test_pending_changes_file_gets_the_same_edit(rewrite: PveRewrite, original: str) -> None:
    # interfaces.new: an admin's edit not applied yet, as Proxmox wrote it.
    pending = rewrite(add_gui_bridge(original))
    live, staged = merge_block(original, BODY), merge_block(pending, BODY)
    assert proximity_stanzas(staged) == ["prox-net"]
    # "Apply Configuration" renames interfaces.new over interfaces; the next edit rewrites it.
    applied = rewrite(staged)
    assert merge_block(applied, BODY) == applied
    assert proximity_stanzas(applied) == ["prox-net"]
    # down removes the stanza from both files.
    assert remove_block(staged) == pending
    assert remove_block(live) == original
    assert remove_block(applied) == rewrite(pending)


# The old block followed the trailing source line; with it there, Proxmox's writer puts the
# source line above prox-net, and so above the vlan100 stanza that sorts after bridges. Removing
# the stanza cannot undo that move (ifupdown reads the same configuration either way).
LEGACY_MOVED_SOURCE = {"vlan_subinterfaces"}


def test_earlier_block_after_a_proxmox_rewrite_is_taken_over(
    rewrite: PveRewrite, original: str, request: pytest.FixtureRequest
) -> None:
    damaged = rewrite(legacy_merge(original, BODY))
    # What broke earlier versions: BEGIN dropped, END kept as a comment of prox-net.
    assert LEGACY_BEGIN_MARKER not in damaged
    assert damaged.count(LEGACY_END_MARKER) == 1
    # up recognises the stanza as its own (not as a hand-written prox-net).
    assert [(s.name, s.managed) for s in parse_stanzas(damaged) if s.name == "prox-net"] == [("prox-net", True)]
    taken = merge_block(damaged, BODY)
    assert LEGACY_END_MARKER not in taken
    assert proximity_stanzas(taken) == ["prox-net"]
    assert merge_block(taken, BODY) == taken
    assert rewrite(taken) == taken
    for text in (damaged, taken):
        removed = rewrite(remove_block(text))
        if request.node.callspec.id in LEGACY_MOVED_SOURCE:
            assert removed != rewrite(original)
            assert sorted(filter(None, removed.splitlines())) == sorted(filter(None, rewrite(original).splitlines()))
        else:
            assert removed == rewrite(original)


def test_split_earlier_markers_after_a_proxmox_rewrite_are_taken_over(rewrite: PveRewrite) -> None:
    original = FILES["debian_tabs_underscore"]  # ends with a stanza's last option
    # The admin had deleted the blank line above the old block: Proxmox then keeps BEGIN as a
    # comment of the stanza above (br0), and END as one of prox-net.
    legacy = legacy_merge(original, BODY).replace(original + "\n", original, 1)
    split = rewrite(legacy)
    begin, end = split.index(LEGACY_BEGIN_MARKER), split.index(LEGACY_END_MARKER)
    assert split.index("bridge_maxwait") < begin < split.index("iface prox-net") < end
    taken = merge_block(split, BODY)
    assert LEGACY_BEGIN_MARKER not in taken and LEGACY_END_MARKER not in taken
    assert proximity_stanzas(taken) == ["prox-net"]
    assert rewrite(taken) == taken
    assert remove_block(taken) == rewrite(original)
    assert rewrite(remove_block(split)) == rewrite(original)
