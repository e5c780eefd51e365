"""What `proximity zone ...` and the API's zone jobs do: change the declared zones, then converge.

A change to the zones is a change of Proximity's own file, ``zones.toml`` (the admin's
proximity.toml is never rewritten), checked before anything is written, then applied by the
reconciler with the file as the plan's first step: a failed converge puts the file back, and a
dry run shows its diff with the rest of the plan. While the network is down as requested, the
file alone is written and the message says `proximity up` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from proximity.errors import ConflictError, InputError, NotFoundError
from proximity.network import intent as intents
from proximity.network.reconciler import NetworkManager, Report
from proximity.network.reservations import Reservations
from proximity.setting_sources import config_file
from proximity.settings import Settings
from proximity.spec.config import parse_zone
from proximity.spec.naming import DEFAULT_ZONE
from proximity.spec.state import parse_state, render_state, state_file
from proximity.spec.zones import check_declared
from proximity.zones_file import read_zones_file, render_zones_file

ZONE_KEYS = ("subnet", "domain", "dhcp_range", "ipv6", "host_services")


@dataclass
class ZoneAdmin:
    load: Callable[[], Settings]  # the settings as the files say now (a sandbox's, or the machine's)
    dry_run: bool = False

    def create(self, name: str, **fields: Any) -> Report:
        s = self.load()
        if name == DEFAULT_ZONE or any(z.name == name for z in s.zones):
            raise ConflictError(f"zone {name!r} exists already: change it with `proximity zone set {name} ...`, "
                                "or pick another name")
        table = {key: value for key, value in fields.items() if value is not None}
        config = _parsed(name, table)
        data = read_zones_file(s.zones_file)
        check_declared(replace(s, zones=(*s.zones, config)))
        return self._apply(s, {**_tables(data), name: table}, _peers(data), data.get("ipv6"))

    def set(self, name: str, **fields: Any) -> Report:
        s = self.load()
        data = read_zones_file(s.zones_file)
        changed = {key: value for key, value in fields.items() if value is not None}
        if not changed:
            raise InputError(f"zone set {name}: give at least one of --{', --'.join(k.replace('_', '-') for k in ZONE_KEYS)}")
        if name == DEFAULT_ZONE:
            if set(changed) - {"ipv6"}:
                raise InputError(f"zone set {DEFAULT_ZONE}: only --ipv6 can be set here; the default zone's network is "
                                 f"set by the top-level settings (gateway, dhcp_start, dhcp_end, domain) in {config_file()}")
            return self._apply(s, _tables(data), _peers(data), str(changed["ipv6"]))
        tables = _tables(data)
        if name not in tables:
            self._require_zone(s, name)
            raise ConflictError(f"zone {name} is declared in {config_file()}, which is yours: change its table there, "
                                "then run `proximity up`")
        table = {**tables[name], **changed}
        config = _parsed(name, table)
        check_declared(replace(s, zones=tuple(config if z.name == name else z for z in s.zones)))
        return self._apply(s, {**tables, name: table}, _peers(data), data.get("ipv6"))

    def delete(self, name: str, force: bool = False) -> Report:
        s = self.load()
        if name == DEFAULT_ZONE:
            raise ConflictError(f"the default zone {DEFAULT_ZONE} cannot be deleted: `proximity down` removes it")
        data = read_zones_file(s.zones_file)
        tables = _tables(data)
        if name not in tables:
            self._require_zone(s, name)
            raise ConflictError(f"zone {name} is declared in {config_file()}, which is yours: run "
                                f"`{s.command(f'down --zone {name} --purge')}`, then delete its table from that file")
        theirs = [p for p in s.peers if name in p and tuple(sorted(p)) not in _peers(data)]
        if theirs:  # the pair would name a zone that is gone, and every later command would refuse it
            raise ConflictError(f"zone {name} is peered in {config_file()} ({', '.join(map(str, map(list, theirs)))}), "
                                "which is yours: delete the pair from its peers list first; nothing was changed")
        manager = NetworkManager(s, dry_run=self.dry_run)
        view = _view(manager, name)
        users = [f"CT {r.vmid} {r.hostname}" if r.vmid else r.hostname for r in Reservations(view, manager.host).all()]
        if users and not force:
            raise ConflictError(
                f"zone {name} is in use: {', '.join(users)} have reservations there. Move them "
                f"(`proximity ct move NAME --zone OTHER`) or destroy them first, or pass --force: their reservations "
                "are deleted and the running ones are cut off; nothing was changed")
        text = self._zones_text({k: v for k, v in tables.items() if k != name},
                                [p for p in _peers(data) if name not in p], data.get("ipv6"))
        path = state_file(s)
        state = parse_state(manager.host.read_text(path), str(path))
        own = {s.zones_file: text, path: render_state(state.release(name))}
        report = NetworkManager(s, dry_run=self.dry_run, own_files=own).down(zone=name, purge=True, force=True,
                                                                             deleting=True)
        if not self.dry_run and intents.read(manager.host, s).up:  # the other zones forget its domain
            rest = NetworkManager(self.load()).up()
            report.actions += rest.actions
            report.warnings += rest.warnings
        if users:
            report.warnings.append(f"--force: deleted the reservations of {', '.join(users)} with zone {name}")
        return report

    def peer(self, a: str, b: str, join: bool = True) -> Report:
        s = self.load()
        for name in (a, b):
            self._require_zone(s, name)
        if a == b:
            raise ConflictError(f"zone peer {a} {b}: a zone always reaches itself; name two different zones")
        data = read_zones_file(s.zones_file)
        pair, peers = tuple(sorted((a, b))), _peers(data)
        if not join and pair not in peers and pair in s.peers:
            raise ConflictError(f"zones {a} and {b} are peered in {config_file()}, which is yours: delete the pair "
                                "from its peers list, then run `proximity up`")
        peers = sorted({*peers, pair}) if join else [p for p in peers if p != pair]
        return self._apply(s, _tables(data), peers, data.get("ipv6"))

    # -- the one way a change is applied -------------------------------------------------------
    def _apply(self, s: Settings, tables: dict, peers: list, ipv6: str | None) -> Report:
        """Converge toward ``s`` with zones.toml holding ``tables``, ``peers`` and ``ipv6``."""
        new = rezoned(s, read_zones_file(s.zones_file), {"zones": tables, "peers": peers, "ipv6": ipv6})
        check_declared(new)
        manager = NetworkManager(new, dry_run=self.dry_run, own_files={s.zones_file: self._zones_text(tables, peers, ipv6)})
        if not intents.read(manager.host, new).up:
            report = manager.write_own_files()
            report.warnings.append(f"the network is down as requested, so nothing was built yet: run "
                                   f"`{s.command('up')}` to bring it up with this change")
            return report
        return manager.up()

    @staticmethod
    def _zones_text(tables: dict, peers: list, ipv6: str | None) -> str:
        return render_zones_file(tables, [list(p) for p in peers], ipv6)

    @staticmethod
    def _require_zone(s: Settings, name: str) -> None:
        if name != DEFAULT_ZONE and not any(z.name == name for z in s.zones):
            names = ", ".join([DEFAULT_ZONE, *(z.name for z in s.zones)])
            raise NotFoundError(f"there is no zone {name!r}: the zones are {names} (`proximity zone list`)")


def rezoned(s: Settings, old: dict, new: dict) -> Settings:
    """``s``, loaded while zones.toml read ``old``, as it is with zones.toml reading ``new`` (the service
    follows the file with this, so a zone made by the CLI or the API is never undone by its heal)."""
    theirs = [z for z in s.zones if z.name not in _tables(old)]  # proximity.toml's own zones stay
    ipv6 = new.get("ipv6")
    return replace(s, zones=(*theirs, *(_parsed(n, t) for n, t in _tables(new).items())),
                   peers=tuple(sorted({*(set(s.peers) - set(_peers(old))), *_peers(new)})),
                   ipv6=ipv6 if ipv6 is not None else s.ipv6)


def _view(manager: NetworkManager, name: str):
    spec, _ = manager.zones(manager.observe())
    return next(v for v in spec.views() if v.zone == name)


def _parsed(name: str, table: dict):
    try:
        return parse_zone(name, table)
    except ValueError as exc:
        raise InputError(f"zone {name}: {exc}") from None


def _tables(data: dict) -> dict:
    return dict(data.get("zones") or {})


def _peers(data: dict) -> list[tuple[str, str]]:
    return [tuple(sorted(p)) for p in data.get("peers") or []]
