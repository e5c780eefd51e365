"""The firewall's changes: the nftables table (applied in one transaction) and Proximity's iptables rules.

Converged means the table listed now is the one Proximity applied from the file it would render now.
nft normalises what it lists, so the rendered text is never compared with a listing: after applying,
the digest of the rendered text and the digest of the live table (``nft -j``, normalised) are stored
in the state directory; the table is current while the render's digest and the live digest both
match what was stored. A rule deleted by hand changes the live digest, and the next plan applies the
table again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from proximity.errors import HostError
from proximity.network import libnft, nft
from proximity.network.changes import AddRule, Change, DeleteRule, Env, RemoveFile, WriteFile
from proximity.network.firewall import accept_chain, docker_rules
from proximity.network.observe import Observation
from proximity.network.probe import list_ruleset
from proximity.settings import Settings
from proximity.spec.view import ZoneSettings

TABLE = f"{nft.FAMILY} {nft.TABLE}"


def spec_of(views: Sequence[ZoneSettings], uplink: str, obs: Observation,
            peers: Iterable[Iterable[str]] = ()) -> nft.FirewallSpec:
    return nft.from_views(views, uplink, obs.pve_firewall, peers)


def table_state(settings: Settings, obs: Observation, text: str) -> str:
    """``current``, ``missing`` or ``differs`` (changed by hand, or not what would be rendered now)."""
    fw, applied = obs.firewall, obs.firewall.applied or {}
    if fw.table is None:
        return "missing"
    current = (obs.file(settings.ruleset_file) == text and applied.get("rendered") == nft.digest(text)
               and applied.get("live") == fw.table)
    return "current" if current else "differs"


def wanted_rules(settings: Settings, spec: nft.FirewallSpec, obs: Observation):
    """The iptables rules Proximity wants now: only the accepts a FORWARD policy of DROP needs."""
    return docker_rules(settings, spec, accept_chain(obs.firewall.chains))


def plan_firewall(settings: Settings, obs: Observation, spec: nft.FirewallSpec) -> tuple[list[Change], list[Change]]:
    """(before the bridges, after them): the table first, so that an upgrade from the iptables rules is
    never without NAT; then the iptables accepts, then every other rule of ours is removed."""
    text = nft.render_table(spec)
    first: list[Change] = []
    if table_state(settings, obs, text) != "current":
        first.append(ApplyRuleset(settings.ruleset_file, text, obs.file(settings.ruleset_file)))
    wanted = wanted_rules(settings, spec, obs)
    after: list[Change] = [AddRule(rule) for rule in wanted if rule not in obs.rules]
    seen: set = set()
    for rule in obs.rules:  # exactly one of each wanted rule; the old release's rules all go
        if rule in wanted and rule not in seen:
            seen.add(rule)
            continue
        after.append(DeleteRule(rule, obs.rules.count(rule)))
    return first, after


def plan_remove(settings: Settings, obs: Observation) -> list[Change]:
    """What ``down`` removes: the table, its file and its record (already gone is converged)."""
    changes: list[Change] = []
    if obs.firewall.table is not None:
        changes.append(DeleteTable())
    for path in (settings.ruleset_file, settings.ruleset_state_file):
        if obs.file(path) is not None:
            changes.append(RemoveFile(path, obs.file(path)))
    return changes


def live_table(env: Env) -> str | None:
    """The table as ``nft list`` prints it now (None: there is none), to put it back on undo."""
    result = env.host.query(["nft", "list", "table", *TABLE.split()])
    return result.stdout if result.ok else None


def live_digest(env: Env) -> str | None:
    return digest_of(list_ruleset(env.host)[0])


def digest_of(listing: dict) -> str | None:
    """The digest of Proximity's table in a ``nft -j list`` listing, of the ruleset or of the table (None: no table)."""
    objects = nft.own_objects(listing)
    return nft.digest(json.dumps(objects, sort_keys=True)) if objects else None


def restore_table(env: Env, listing: str | None) -> None:
    """Put the table back as it was listed (one transaction), or delete it if there was none."""
    if listing is None:
        env.host.run(["nft", "delete", "table", *TABLE.split()], check=False)
    else:
        env.host.run(["nft", "-f", "-"], input=f"add table {TABLE}\ndelete table {TABLE}\n{listing}")


def _read(env: Env, path: Path) -> str | None:
    try:
        return env.host.read_text(path, errors="replace")
    except HostError:
        return None


def _put_back(env: Env, path: Path, text: str | None) -> None:
    if text is None:
        env.host.remove(path)
    else:
        env.host.write_text(path, text)


def check_ruleset(host, lib, text: str, path: Path) -> str | None:
    """None if nft accepts ``text``, else nft's error. In-process (libnft.check: committed in a private,
    empty namespace), else ``nft -c``; in dry runs too: either touches nothing of the host."""
    if lib is not None:
        try:
            return libnft.check(lib, text, str(path))
        except libnft.NftError:  # no namespace of its own to check in (not root, say): `nft -c`
            pass
    try:
        check = host.query(["nft", "-c", "-f", "-"], input=text)
    except HostError as exc:  # no nft binary
        raise HostError(f"cannot run nft ({exc}): install nftables (`apt-get install nftables`); "
                        "nothing was changed") from None
    return None if check.ok else (check.stderr or check.stdout).strip()


@dataclass(frozen=True)
class ApplyRuleset(Change):
    """Write the ruleset file and load it: checked first (a refused ruleset changes nothing), then one
    transaction that replaces the whole table atomically; then record the digests of what was applied.

    Through libnftables in this process where it loads (no process per step, and the transaction
    does not wait for the old table's destruction); else, and in dry runs, ``nft -f FILE``."""

    path: Path
    text: str
    before: str | None  # the file as it was
    _saved: dict = field(default_factory=dict, compare=False, repr=False)  # what apply replaced

    def describe(self) -> str:
        return f"apply the nftables table {TABLE} from {self.path} (nft -f, one transaction)"

    def apply(self, env: Env) -> None:
        host, state = env.host, env.settings.ruleset_state_file
        lib = libnft.library() if host.nft_in_process else None

        def check_and_write() -> None:
            refused = check_ruleset(host, lib, self.text, self.path)
            if refused is not None:
                raise HostError(f"nft refused the ruleset for {self.path} (`nft -c`), so the table was not "
                                f"changed: {refused}")
            self._saved["state"] = _read(env, state)
            self._saved["applied"] = True
            WriteFile(self.path, self.text, self.before).apply(env)

        if lib is None or host.dry_run:
            check_and_write()
            self._saved["table"] = live_table(env)
            host.run(["nft", "-f", str(self.path)])
            listing = None if host.dry_run else list_ruleset(host)[0]
        else:
            try:  # `nft -f FILE` in-process; the worker gets into the namespace while this checks
                listing = libnft.apply(lib, str(self.path), host.netns, self._saved, check_and_write)
            except libnft.NftError as exc:
                raise HostError(f"nft could not load {self.path}, so the table was not changed: {exc}") from None
        if listing is not None:
            record = {"rendered": nft.digest(self.text), "live": digest_of(listing)}
            host.write_text(state, json.dumps(record) + "\n", durable=False)  # lost in a crash: applied again

    def undo(self, env: Env) -> None:
        if not self._saved.get("applied"):
            return
        if "table" in self._saved:  # else the transaction never ran: the table is as it was
            restore_table(env, self._saved["table"])
        _put_back(env, self.path, self.before)
        _put_back(env, env.settings.ruleset_state_file, self._saved["state"])


@dataclass(frozen=True)
class DeleteTable(Change):
    """``nft delete table inet proximity``; a table already gone is converged."""

    _saved: dict = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        return f"delete the nftables table {TABLE}"

    def apply(self, env: Env) -> None:
        self._saved["table"] = live_table(env)
        result = env.host.run(["nft", "delete", "table", *TABLE.split()], check=False)
        if not result.ok and not env.host.dry_run and live_table(env) is not None:
            raise HostError(f"`nft delete table {TABLE}` failed: {result.stderr.strip()}")

    def undo(self, env: Env) -> None:
        if self._saved.get("table") is not None:
            restore_table(env, self._saved["table"])
