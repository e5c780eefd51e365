"""NetworkManager: observe → plan → apply, for ``up``, ``down`` and continuous healing.

``up`` observes the host, plans the changes, applies them (each change registers its undo as
it goes; a failure undoes them all, newest first), observes and plans again until the plan is
empty, then verifies. Run it again and the plan is empty: nothing is written, reloaded or
restarted. ``heal`` does the same with targeted changes only, for the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict, dataclass, field, replace

from proximity.errors import ConflictError, HostError, NotFoundError, ProximityError
from proximity.host import DryRunHost, Host
from proximity.network import intent as intents
from types import MappingProxyType

from proximity.network import ipv6_host, render
from proximity.network.changes import Change, Env, RemoveFile, WriteFile
from proximity.network.dnsmasq import dns_service
from proximity.network.health import Check, NetworkStatus, health  # noqa: F401 (Check: its old home)
from proximity.network.leases import Lease, parse_leases
from proximity.network.observe import Firewall, Observation, Probes, observe
from proximity.network.zoned import ZoneLookup
from proximity.network.plan import Mode, Plan, plan_down, plan_up
from proximity.network.probe import ProbeResult, host_rules_digest, is_stale, probe
from proximity.network.probe import load as load_probe
from proximity.network.probe import save as save_probe
from proximity.revert import Reverter
from proximity.settings import Settings, check_hostname
from proximity.spec.view import ZoneSettings, default_view

log = logging.getLogger(__name__)
MAX_ROUNDS = 4  # a change may reveal the next (a re-created bridge lost its ports); never loop forever


class ConvergeError(HostError):
    """``up`` or ``down`` failed; everything it had changed was undone (or the message says what was not)."""


@dataclass
class Report:
    """What a converge did (or, in a dry run, would do)."""

    dry_run: bool
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    skipped: str | None = None  # a heal that did nothing because the admin's intent is down: why

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "changed": self.changed, **asdict(self)}


class NetworkManager(ZoneLookup):
    def __init__(self, settings: Settings, *, dry_run: bool = False, host: Host | None = None,
                 own_files: dict[Path, str | None] | None = None):
        self.settings = settings
        # Proximity's own config as a change asks it to be (zones.toml, zones.json: None removes the file),
        # written as the plan's first step, so it is undone with the rest and shown by a dry run.
        self.own_files = own_files or {}
        self.host = host or (DryRunHost(netns=settings.netns) if dry_run else Host(settings.netns))
        self.dns = dns_service(self.host, settings)
        self.env = Env(self.host, settings, self.dns)
        self._envs: dict[str, Env] = {}  # the further zones', by name
        self._leases_cache: dict[Path, tuple[tuple[int, int, int], tuple[list[Lease], list[str]]]] = {}
        # The service's: the settings with the zones as zones.toml says now, read by heal under the host lock,
        # so a heal queued behind `zone create` (the CLI's) builds the new zone rather than undoing it.
        self.follow: Callable[[Settings], Settings] | None = None

    def verdict(self, obs: Observation, view: ZoneSettings | None = None) -> NetworkStatus:
        """The health of the default zone (or ``view``'s), judged against the host's whole table."""
        view = view or self.default_zone(obs)
        return health(view, obs, self.firewall_spec(obs), self.pending(obs).get(view.zone, []))

    def pending(self, obs: Observation) -> dict[str, list[str]]:
        """What `up` would change now, by zone: health's "healthy" means nothing is pending here."""
        default = default_view(self.settings).zone
        try:
            plan = self._plan_up("heal", obs)
        except ProximityError as exc:  # a refusal: `up` would change nothing, and say why
            return {default: [str(exc).splitlines()[0]]}
        found: dict[str, list[str]] = {}
        for index, change in enumerate(plan.changes):
            found.setdefault(plan.zone_of(index) or default, []).append(change.describe())
        return found

    def _plan_up(self, mode: Mode, obs: Observation | None = None) -> Plan:
        obs = obs or self.observe()
        intent = obs.intent or intents.read(self.host, self.settings)  # the observation read it (under the lock)
        default, zones, state_change = self.zone_views(obs, skip=intent.zones_down if mode == "heal" else ())
        peers = self.settings.peers
        live = {default.zone, *(v.zone for v, _ in zones)}
        uplink = self.settings.uplink or obs.default_route_link()
        wanted = ipv6_host.sysctls_to_observe([default, *(v for v, _ in zones)], uplink)
        if wanted:  # what IPv6 needs of the host: read only when a zone has it
            obs = replace(obs, sysctls=MappingProxyType({**obs.sysctls, **{k: self.host.read_sysctl(k) for k in wanted}}))
        return plan_up(default, obs, mode, zones=zones, before=[*self._own_file_changes(), *state_change],
                       peers=[pair for pair in peers if set(pair) <= live])

    def write_own_files(self) -> Report:
        """Only Proximity's own config (zones.toml): for a change made while the network is down."""
        report = Report(dry_run=self.host.dry_run)
        with self._locked():
            with Reverter() as revert:
                try:
                    self._apply(Plan(tuple(self._own_file_changes())), revert, report)
                except Exception as exc:
                    self._fail("zone", exc, revert, report)
                revert.success()
        return self._finish(report)

    def _own_file_changes(self) -> list[Change]:
        changes: list[Change] = []
        for path, wanted in self.own_files.items():
            now = self.host.read_text(path)
            if now != wanted:
                changes.append(WriteFile(path, wanted, now) if wanted is not None else RemoveFile(path, now))
        return changes

    # -- reading ----------------------------------------------------------------------------
    def observe(self, probe: bool = False, probes: Probes | None = None, firewall: Firewall | None = None) -> Observation:
        return observe(self.host, self.settings, self.dns, probe=probe, probes=probes, firewall=firewall)

    def status(self, reprobe: bool = False) -> NetworkStatus:
        """The health verdict. With ``reprobe``, a failed end-to-end probe, or one taken under other
        firewall rules than now, is run again first (the CLI does this; the service probes on its own)."""
        obs = self.observe(probe=True)
        last = obs.last_probe
        if reprobe and last is not None and (not last.ok or is_stale(last, obs.rules_digest)) \
                and obs.link(self.settings.bridge):
            self.run_probe()
            obs = self.observe(probe=True, probes=obs.probes, firewall=obs.firewall)
        return self.verdict(obs)

    def probe_due(self) -> bool:
        """The last end-to-end probe failed, or was taken under other firewall rules than the host's now."""
        last = load_probe(self.host, self.settings)
        return last is not None and (not last.ok or is_stale(last, host_rules_digest(self.host)))

    def run_probe(self) -> ProbeResult:
        """The end-to-end probe (a throwaway client asks for a lease and a name); its result is kept."""
        result = probe(self.host, self.settings)
        try:
            save_probe(self.host, self.settings, result)
        except HostError as exc:  # a full disk: the result is still told; status and doctor name the disk
            log.warning("the probe's result was not kept: %s", exc)
        return result

    def plan(self, mode: Mode = "up") -> Plan:
        return self._plan_up(mode)

    def leases(self, view: Settings | None = None) -> tuple[list[Lease], list[str]]:
        """The default zone's (or ``view``'s) leases, parsed again only when dnsmasq has rewritten the
        file (it is read on hot paths)."""
        path = (view or self.settings).leases_file
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return [], []
        cached = self._leases_cache.get(path)
        if cached is None or cached[0] != key:
            cached = self._leases_cache[path] = (key, parse_leases(self.host.read_text(path, errors="replace") or "",
                                                                    str(path)))
        leases, warnings = cached[1]
        return list(leases), list(warnings)

    def get_container_network_config(self, hostname: str, view: Settings | None = None) -> str:
        """``net0`` for a container on the managed bridge, or ``view``'s zone's (the container backends use this)."""
        check_hostname(hostname)
        return render.container_net0(view or self.settings)

    # -- changing ---------------------------------------------------------------------------
    def up(self) -> Report:
        """Converge the host to the settings: rewrite the file and ``ifreload -a`` if needed."""
        return self._converge("up")

    initialize = up  # the seed's name

    def heal(self) -> Report:
        """Converge with targeted changes only (``ifup BRIDGE``, never ``ifreload -a``), for the service.

        Only while the admin's intent is up, and toward what `up` was given. The intent is read under
        the host lock: a heal queued behind `down` finds ``down`` and does nothing."""
        with self._locked():
            intent = intents.read(self.host, self.settings)
            if not intent.up:
                return Report(dry_run=self.host.dry_run, skipped=intents.reason(intent))
            wanted = intent.settings(self.settings)
            wanted = self.follow(wanted) if self.follow else wanted
            target = self if wanted == self.settings else NetworkManager(wanted, host=self.host)
            report = target._converge_locked("heal")
        if report.changed:
            target._probe_after(report)
        return target._finish(report)

    def down(self, purge: bool = False, force: bool = False, zone: str | None = None,
             deleting: bool = False) -> Report:
        """Remove Proximity from the host (or one ``zone`` of it) and record the intent down. Refused while
        managed containers use a bridge it removes, unless ``force`` (then the report names what was cut off)."""
        report = Report(dry_run=self.host.dry_run)
        with self._locked():
            with Reverter() as revert:
                try:
                    obs = self.observe()
                    default, zones, _ = self.zone_views(obs)
                    every = [(default, obs), *zones]
                    only = None if zone is None else [(v, o) for v, o in every if v.zone == zone]
                    if only == []:
                        raise NotFoundError(f"there is no zone {zone!r}: the zones are "
                                            f"{', '.join(v.zone for v, _ in every)} (`proximity zone list`)")
                    users = [f"CT {a.vmid} {a.hostname} ({a.port})" for _, o in (only or every) for a in o.attachments]
                    bridges = ", ".join(v.bridge for v, _ in (only or every))
                    if users and not force:
                        raise ConflictError(
                            f"managed containers use {bridges}: {', '.join(users)}. `down` would cut "
                            "them off. Stop or destroy them first (`proximity ct stop NAME`), or pass --force to "
                            "cut them off; nothing was changed")
                    gone = {v.zone for v, _ in only} if only else set()
                    peers = [pair for pair in self.settings.peers if not set(pair) & gone]
                    plan = plan_down(default, obs, purge, zones=zones, only=only, remaining_peers=peers)
                    plan = replace(plan, changes=(*plan.changes, *self._own_file_changes()))
                    if zone is None:
                        self._record_intent(intents.DOWN, revert, report)
                    else:
                        intent = intents.read(self.host, self.settings)  # a deleted zone is not "down": gone
                        down = {*intent.zones_down} - {zone} if deleting else {*intent.zones_down, zone}
                        if intent.source != "damaged" and down != set(intent.zones_down):
                            self._record_intent(intent.state, revert, report, tuple(sorted(down)))
                    report.warnings += plan.warnings
                    self._apply(plan, revert, report)
                    if users:
                        report.warnings.append(f"--force: cut off from {bridges}: {', '.join(users)}")
                except Exception as exc:
                    self._fail("down", exc, revert, report)
                revert.success()
        return self._finish(report)

    def require_up(self, view: ZoneSettings | None = None) -> None:
        """Refuse (before anything is created) when the network, or ``view``'s zone, is not up: the intent
        down, or no bridge."""
        intent, bridge = intents.read(self.host, self.settings), (view or self.settings).bridge
        if not intent.up:
            why = intent.error or "`proximity down`, or `up` never ran"
            raise intents.NetworkDown(f"the managed network is down ({why}): run `proximity up` first; nothing "
                                      "was created")
        if view is not None and view.zone in intent.zones_down:
            raise intents.NetworkDown(f"zone {view.zone} is down (`proximity down --zone {view.zone}`): run "
                                      "`proximity up` first; nothing was created")
        if not any(link.get("ifname") == bridge for link in self.host.ip_json("link", "show")):
            raise intents.NetworkDown(f"bridge {bridge} does not exist: run `proximity up` first; "
                                      "nothing was created")

    def toward_intent(self) -> NetworkManager:
        """This manager with what the last `up` was given (its uplink and interfaces file)."""
        wanted = intents.read(self.host, self.settings).settings(self.settings)
        return self if wanted == self.settings else NetworkManager(wanted, host=self.host)

    def _record_intent(self, state: str, revert: Reverter, report: Report, zones_down: tuple[str, ...] = ()) -> None:
        try:
            old = self.host.read_text(intents.intent_file(self.settings))
        except HostError:  # a damaged record (not UTF-8): an undo removes it
            old = None
        if intents.record(self.host, self.settings, state, zones_down):
            revert.add("restore the intent record", lambda: intents.restore(self.host, self.settings, old))
            said = ("keeps the network up)" if state == intents.UP else "leaves the network down)")
            if zones_down:
                said = f"leaves zone(s) {', '.join(zones_down)} down)"
            report.actions.append(f"record the intent: {state} (the service {said}")

    def _converge(self, mode: Mode) -> Report:
        with self._locked():
            report = self._converge_locked(mode)
        if not self.host.dry_run and (report.changed or (mode == "up" and self.probe_due())):
            self._probe_after(report)
        return self._finish(report)

    def _converge_locked(self, mode: Mode) -> Report:
        """Plan and apply until the plan is empty. ``up`` is all or nothing; ``heal`` keeps what it
        restored when a later step fails (undoing a restored bridge would cut containers off again)."""
        report = Report(dry_run=self.host.dry_run)
        self.dns.note_leases()  # what dnsmasq holds now, so a restart can tell a truncated leases file
        with Reverter() as revert:
            try:
                for _round in range(1 if self.host.dry_run else MAX_ROUNDS):
                    plan = self._plan_up(mode)
                    if mode == "up" and _round == 0:  # after the first plan: a refusal changes nothing
                        self._record_intent(intents.UP, revert, report)
                    report.warnings += [w for w in plan.warnings if w not in report.warnings]
                    if not plan:
                        break
                    self._apply(plan, revert, report)
                else:
                    if not self.host.dry_run:
                        raise ConvergeError("the host did not converge: it still differs after "
                                            f"{MAX_ROUNDS} rounds: " + "; ".join(self._plan_up(mode).describe()))
                if report.changed and not self.host.dry_run:
                    self._verify()
            except Exception as exc:
                if mode == "heal":
                    revert.success()
                self._fail(mode, exc, revert, report)
            revert.success()
        return report

    def _apply(self, plan: Plan, revert: Reverter, report: Report) -> None:
        for index, change in enumerate(plan.changes):
            env = self.env_for(plan.zone_of(index))
            revert.add(f"undo: {change.describe()}", lambda change=change, env=env: change.undo(env))
            change.apply(env)
            report.actions.append(change.describe())

    def _verify(self) -> None:
        """What Proximity set up is right, in every zone (a failed end-to-end probe is not Proximity's to undo)."""
        obs = replace(self.observe(probe=True), last_probe=None)
        _, zones, _ = self.zone_views(obs, skip=intents.read(self.host, self.settings).zones_down)
        firewall = self.firewall_spec(obs)
        default = health(self.default_zone(obs), obs, firewall)
        reasons = default.reasons if default.health_status != "healthy" else []
        for view, _zone_obs in zones:
            status = health(view, replace(self.observe_zone(view, obs, probe=True), last_probe=None), firewall)
            if status.health_status != "healthy":
                reasons += [f"zone {view.zone}: {r}" for r in status.reasons]
        if reasons:
            raise ConvergeError("verification failed: " + "; ".join(reasons))

    def _probe_after(self, report: Report) -> None:
        """Something outside Proximity (a firewall) may still block containers: say so, undo nothing."""
        try:
            result = self.run_probe()
        except Exception as exc:  # a check, not part of the change: it never undoes anything
            report.warnings.append(f"the end-to-end probe could not run: {exc}")
            return
        if not result.ok:
            report.warnings.append(f"the network is set up, but containers cannot get a lease or a name: "
                                   f"{result.reason}. Fix: {result.fix}")

    def _locked(self):
        """One converge at a time per host (a dry run takes no lock)."""
        return self.host.lock(self.settings.lock_file, what="another Proximity run")

    def _finish(self, report: Report) -> Report:
        if isinstance(self.host, DryRunHost):
            report.files = self.host.files
            report.commands = self.host.commands
        return report

    def _fail(self, verb: str, exc: Exception, revert: Reverter, report: Report) -> None:
        """Undo what this run changed, then raise one error that says what happened."""
        started = bool(revert.pending)  # each change registers its undo before it starts
        failures = revert.fail()
        if isinstance(exc, ProximityError) and not started:
            raise exc  # refused or failed before anything changed: its message says it all
        message = f"`proximity {verb}` failed: {exc}"
        for note in report.warnings:
            message += f"\nNote: {note}"
        if failures:
            message += "\nCould NOT undo: " + "; ".join(failures) + f"\nCheck {self.settings.interfaces_file} by hand."
        elif verb == "heal":
            message += "\nDone before the failure: " + "; ".join(report.actions)
        else:
            message += "\nEvery change was undone; the host is as it was before."
        raise ConvergeError(message) from exc
