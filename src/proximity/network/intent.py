"""The admin's intent: whether the network should be up, as `up` and `down` last said.

`up` records ``up`` with what it was given (the uplink, the interfaces file); `down` records
``down``. The service heals only while the intent is up, toward the recorded settings, and reads
it under the host lock, so a heal queued behind `down` finds ``down`` and leaves the host alone.

No record yet (a host upgraded from a release without one): Proximity's stanza in the interfaces
file means up, its absence down. A damaged record means down, and status names it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from proximity.errors import ConflictError, HostError
from proximity.host import Host
from proximity.settings import Settings

UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Intent:
    state: str  # "up" or "down"
    source: str  # "record", "legacy" (no record: read from the stanza) or "damaged"
    uplink: str | None = None  # what `up` was given (None: the default route's interface)
    interfaces_file: str | None = None
    since: float | None = None  # when it was recorded (Unix time)
    error: str | None = None  # why the record could not be read (source "damaged")
    zones_down: tuple[str, ...] = ()  # zones `down --zone` took down while the rest stays up

    @property
    def up(self) -> bool:
        return self.state == UP

    def settings(self, settings: Settings) -> Settings:
        """The settings to heal toward: the service's, with what `up` was given."""
        changes = {}
        if self.uplink is not None:
            changes["uplink"] = self.uplink
        if self.interfaces_file is not None:
            changes["interfaces_file"] = Path(self.interfaces_file)
        if getattr(settings, "is_default", True) is False:  # a further zone's view: its own file follows the host's
            from proximity.spec.view import zone_file

            host = replace(settings.host, **changes)
            changes.update(host_settings=host, interfaces_file=zone_file(host, settings.zone))
        return replace(settings, **changes) if changes else settings

    def as_dict(self) -> dict:
        return {"state": self.state, "source": self.source, "uplink": self.uplink,
                "interfaces_file": self.interfaces_file, "since": self.since, "error": self.error,
                "zones_down": list(self.zones_down)}


def intent_file(settings: Settings) -> Path:
    return settings.state_dir / "intent.json"


def read(host: Host, settings: Settings) -> Intent:
    """The intent; never raises for a bad record (that reads as down, and says why)."""
    path = intent_file(settings)
    try:
        text = host.read_text(path)
    except HostError as exc:
        return _damaged(path, str(exc))
    if text is None:
        return _legacy(host, settings)
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("state") not in (UP, DOWN):
            raise ValueError('no "state" of "up" or "down"')
        uplink, file, since = data.get("uplink"), data.get("interfaces_file"), data.get("since")
        zones_down = data.get("zones_down", [])
        if not all(v is None or isinstance(v, str) for v in (uplink, file)) or not (
                since is None or isinstance(since, (int, float))) or not (
                isinstance(zones_down, list) and all(isinstance(z, str) for z in zones_down)):
            raise ValueError("uplink, interfaces_file, since or zones_down has the wrong type")
    except RecursionError:
        return _damaged(path, "it is nested too deeply to be an intent record")
    except ValueError as exc:
        return _damaged(path, str(exc))
    return Intent(data["state"], "record", uplink, file, since, zones_down=tuple(zones_down))


def record(host: Host, settings: Settings, state: str, zones_down: tuple[str, ...] = ()) -> bool:
    """Record ``state`` with the uplink and interfaces file of ``settings``, atomically (`down` keeps
    them too: the dashboard's converge brings the same network up again). False when the record
    already says so (nothing written: a second `up` writes no file)."""
    old = read(host, settings)
    new = Intent(state, "record", settings.uplink, str(settings.interfaces_file), zones_down=tuple(zones_down))
    if old.source == "record" and (old.state, old.uplink, old.interfaces_file, old.zones_down) == (
            new.state, new.uplink, new.interfaces_file, new.zones_down):
        return False
    write(host, settings, replace(new, since=time.time()))
    return True


def write(host: Host, settings: Settings, intent: Intent) -> None:
    data = {"state": intent.state, "uplink": intent.uplink, "interfaces_file": intent.interfaces_file,
            "since": intent.since}
    if intent.zones_down:
        data["zones_down"] = list(intent.zones_down)
    host.write_text(intent_file(settings), json.dumps(data, indent=2) + "\n")


def restore(host: Host, settings: Settings, old_text: str | None) -> None:
    """Put the record back as it was (an undo)."""
    if old_text is None:
        host.remove(intent_file(settings))
    else:
        host.write_text(intent_file(settings), old_text)


def reason(intent: Intent) -> str | None:
    """What status says about the intent, when it is not simply up."""
    if intent.source == "damaged":
        return (f"{intent.error}; so the service leaves the network alone (read as down). Run `proximity up` "
                "to bring it up, or `proximity down` to keep it down; either writes a new record")
    if not intent.up:
        how = "no record and no stanza of Proximity's in the interfaces file" if intent.source == "legacy" else \
            "`proximity down`"
        return f"the network is down as requested ({how}); the service leaves it down: run `proximity up` to bring it up"
    return None


class NetworkDown(ConflictError):
    """Something needs the managed network, and the admin has not brought it up."""


def _legacy(host: Host, settings: Settings) -> Intent:
    from proximity.network.interfaces import parse_stanzas

    try:
        text = host.read_text(settings.interfaces_file) or ""
        stanzas = [st for st in parse_stanzas(text) if st.name == settings.bridge]
        # Proximity's stanza; or a hand-written one that `up` adopted (its dnsmasq config is there)
        up = any(st.managed for st in stanzas) or bool(stanzas and host.read_text(settings.dnsmasq_conf))
    except Exception:  # an unreadable file: nothing says up
        up = False
    return Intent(UP if up else DOWN, "legacy")


def _damaged(path: Path, error: str) -> Intent:
    return Intent(DOWN, "damaged", error=f"the intent record {path} is damaged ({error})")
