"""The intent record and the target-host check, without root: files in a temporary directory."""

from __future__ import annotations

import json
import socket

import pytest

from proximity.host import Host
from proximity.network import intent as intents
from proximity.network.interfaces import merge_block
from proximity.settings import load_settings
from proximity.target import WrongHost, check_target

BASE = "auto lo\niface lo inet loopback\n"
STANZA = "auto prox-net\niface prox-net inet static\n    address 10.10.0.1/24\n    bridge-ports none\n"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXIMITY_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "interfaces").write_text(BASE)
    return load_settings(state_dir=str(tmp_path / "state"), interfaces_file=str(tmp_path / "interfaces"),
                         dnsmasq_conf=str(tmp_path / "dnsmasq.conf"))


def test_no_record_reads_the_stanza(settings, tmp_path):
    host = Host()
    assert intents.read(host, settings) == intents.Intent("down", "legacy")
    (tmp_path / "interfaces").write_text(merge_block(BASE, STANZA.splitlines()))
    assert intents.read(host, settings) == intents.Intent("up", "legacy")
    # A hand-written stanza that `up` adopted (its dnsmasq config is there) is up too; alone it is not.
    (tmp_path / "interfaces").write_text(BASE + STANZA)
    assert not intents.read(host, settings).up
    (tmp_path / "dnsmasq.conf").write_text("interface=prox-net\n")
    assert intents.read(host, settings).up


def test_up_records_its_settings_once(settings):
    host, wanted = Host(), settings.__class__(**{**settings.__dict__, "uplink": "eno2"})
    assert intents.record(host, wanted, "up") is True
    data = json.loads(intents.intent_file(settings).read_text())
    assert (data["state"], data["uplink"], data["interfaces_file"]) == ("up", "eno2", str(settings.interfaces_file))
    assert intents.record(host, wanted, "up") is False  # nothing written the second time
    healed = intents.read(host, settings).settings(settings)
    assert healed.uplink == "eno2" and healed.interfaces_file == settings.interfaces_file
    assert intents.record(host, settings, "down") is True and not intents.read(host, settings).up


@pytest.mark.parametrize("damage", [b"\xff", b"", b"null", b"[]", b'{"state": 1}', b'{"state": "up", "since": "x"}'])
def test_a_damaged_record_reads_as_down_and_says_so(settings, damage):
    path = intents.intent_file(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    found = intents.read(Host(), settings)
    assert (found.state, found.source) == ("down", "damaged") and str(path) in found.error
    assert str(path) in intents.reason(found)


def test_the_target_check(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXIMITY_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("PROXIMITY_PVE_DIR", str(tmp_path / "pve"))
    monkeypatch.delenv("PROXIMITY_TARGET_HOST", raising=False)
    with pytest.raises(WrongHost, match="--sandbox NAME"):
        check_target(None, "up")
    check_target("pve1", "up")  # a sandbox
    monkeypatch.setenv("PROXIMITY_TARGET_HOST", "elsewhere")
    with pytest.raises(WrongHost, match="'elsewhere'"):
        check_target(None, "up")
    monkeypatch.setenv("PROXIMITY_TARGET_HOST", socket.gethostname().upper())
    check_target(None, "up")
    monkeypatch.delenv("PROXIMITY_TARGET_HOST")
    (tmp_path / "pve").mkdir()
    check_target(None, "up")  # Proxmox VE
