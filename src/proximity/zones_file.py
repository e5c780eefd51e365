"""``zones.toml``: the zones `proximity zone create` made and the pairs `zone peer` joined.

Proximity's own file, beside its config (``/etc/proximity/zones.toml``): the admin's
``proximity.toml`` stays theirs, never rewritten. Its ``[zones.NAME]`` tables join those of
proximity.toml (a name in both is refused), its ``peers`` join theirs. Written whole and atomically.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from proximity.errors import SettingsError
from proximity.setting_sources import config_file
from proximity.spec.naming import DEFAULT_ZONE

if TYPE_CHECKING:
    from proximity.settings import Settings
from proximity.spec.config import parse_zone


def read_zones_file(path: Path) -> dict[str, Any]:
    """The file's tables (``{}``: no file); SettingsError naming it when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}; fix the file, or move it away (it holds the zones "
                            "`proximity zone create` made)") from None
    unknown = set(data) - {"zones", "peers", "ipv6"}
    if unknown:
        raise SettingsError(f"{path}: {', '.join(sorted(unknown))} is not for this file: it holds only "
                            "zones.NAME tables, peers and the default zone's ipv6")
    # Checked here, so that a mistake is named in this file (the merged settings would blame proximity.toml,
    # and a `zones` that is no table would be dropped there without a word).
    zones = data.get("zones", {})
    if not isinstance(zones, dict) or not all(isinstance(table, dict) for table in zones.values()):
        raise SettingsError(f"{path}: zones = {zones!r} is not a set of [zones.NAME] tables; fix the file, or move "
                            "it away (it holds the zones `proximity zone create` made)")
    for name, table in zones.items():
        try:
            parse_zone(name, table)
        except ValueError as exc:
            raise SettingsError(f"{path}: {exc}; fix the table zones.{name} in that file (it holds the zones "
                                "`proximity zone create` made)") from None
    return data


def merge_zones(values: dict[str, Any], made: dict[str, Any], path: Path) -> dict[str, Any]:
    """``values`` (the settings' sources) with the zones and peers of ``made`` added."""
    own = values.get("zones") or {}
    theirs = made.get("zones") or {}
    if not isinstance(own, dict) or not isinstance(theirs, dict):
        return values  # the settings' own check names what is wrong
    both = sorted(set(own) & set(theirs))
    if both:
        raise SettingsError(f"zone(s) {', '.join(both)} are declared both in {config_file()} and in {path}: "
                            f"keep one (delete the table from one file)")
    peers = [*(values.get("peers") or []), *(made.get("peers") or [])]
    merged = {**values, "zones": {**own, **theirs}, **({"peers": peers} if peers else {})}
    if "ipv6" in made:  # `zone set prox-net --ipv6 ...`; a value set by the admin's own sources wins
        merged.setdefault("ipv6", made["ipv6"])
    return merged


def render_zones_file(zones: dict[str, dict[str, Any]], peers: list[list[str]], ipv6: str | None = None) -> str:
    header = ("# Proximity's own file: the zones `proximity zone create` made and `zone peer` joined.\n"
              "# Change them with `proximity zone set|delete|peer|unpeer`; your own zones go in proximity.toml.\n")
    data: dict[str, Any] = {}
    if ipv6 is not None:
        data["ipv6"] = ipv6
    if peers:
        data["peers"] = [list(pair) for pair in peers]
    if zones:
        data["zones"] = zones
    return header + tomli_w.dumps(data)


def check_peers(settings: Settings) -> None:
    """Every peered zone exists (checked once both files are merged: a pair may join the two files' zones).
    A misspelt zone in ``peers`` would otherwise peer nothing, silently."""
    known = [DEFAULT_ZONE, *(zone.name for zone in settings.zones)]
    for pair in settings.peers:
        unknown = [name for name in pair if name not in known]
        if unknown:
            raise SettingsError(
                f"setting 'peers': {list(pair)} names {', '.join(repr(n) for n in unknown)}, which is no zone (the zones "
                f"are {', '.join(known)}): fix or delete the pair where it is ({config_file()} or {settings.zones_file})")

