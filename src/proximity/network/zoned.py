"""The zones as the reconciler sees them: resolved against the host, each with its view, observation
and the Env its changes act through; the table every zone shares. Mixed into NetworkManager."""

from __future__ import annotations

from proximity.errors import ProximityError
from proximity.network import intent as intents
from proximity.network import nft
from proximity.network.changes import Change, Env, WriteFile
from proximity.network.dnsmasq import dns_service
from proximity.network.nft_changes import spec_of
from proximity.network.observe import Addressing, Observation, observe
from proximity.network.plan import Zone
from proximity.spec.overlaps import host_claims
from proximity.spec.state import parse_state, render_state, state_file
from proximity.spec.view import ZoneSettings, default_view
from proximity.spec.zones import HostSpec, resolve


class ZoneLookup:
    """Needs ``settings``, ``host``, ``env`` and ``_envs`` (NetworkManager's)."""

    def zones(self, obs: Observation | Addressing) -> tuple[HostSpec | None, list[Change]]:
        """Every zone resolved against the host (None: the default zone alone, IPv4, as ever), and the
        change that keeps what the resolution allocated (the plan writes it, and undoes it on failure)."""
        s = self.settings
        if not s.zones and s.ipv6 == "off":
            return None, []
        cached = getattr(self, "_resolved", None)
        if cached is not None and cached[0] is obs:  # status asks three times of one observation
            return cached[1]
        found = self._resolve(obs)
        self._resolved = (obs, found)
        return found

    def _resolve(self, obs: Observation | Addressing) -> tuple[HostSpec, list[Change]]:
        s = self.settings
        path = state_file(s)
        text = self.host.read_text(path, errors="replace")  # a bad byte is damage parse_state names, with the fix
        state = parse_state(text, str(path))
        uplink = s.uplink or obs.default_route_link()
        spec = resolve(s, state, host_claims((*obs.addresses, *obs.addresses6), (*obs.routes, *obs.routes6), uplink))
        return spec, ([WriteFile(path, render_state(spec.state), text)] if spec.state != state else [])

    def zone_views(self, obs: Observation, skip: tuple[str, ...] = ()) -> tuple[ZoneSettings, list[Zone], list[Change]]:
        """(the default zone's view, the further zones each with its observation, the state change)."""
        spec, state_change = self.zones(obs)
        if spec is None:
            return default_view(self.settings), [], []
        views = spec.views()
        further = [(v, self.observe_zone(v, obs)) for v in views[1:] if v.zone not in skip]
        return views[0], further, state_change

    def observe_zone(self, view: ZoneSettings, base: Observation, probe: bool = False) -> Observation:
        return observe(self.host, view, self.env_for(view).dns, probe=probe, base=base)

    def env_for(self, view: ZoneSettings | str | None) -> Env:
        """What a zone's changes act through (its own dnsmasq); the default zone's is ``self.env``."""
        name = view if isinstance(view, str) or view is None else view.zone
        if name is None or name == default_view(self.settings).zone:
            return self.env
        if name not in self._envs:
            if isinstance(view, str):
                raise KeyError(name)
            self._envs[name] = Env(self.host, view, dns_service(self.host, view))
        return self._envs[name]

    def firewall_spec(self, obs: Observation) -> nft.FirewallSpec | None:
        """The table the host should have now (every zone up, peers among them); None: the default zone's."""
        try:
            spec, _ = self.zones(obs)
        except ProximityError:  # a damaged zones.json: the default zone's verdict still stands
            return None
        if spec is None:
            return None
        down = (obs.intent or intents.read(self.host, self.settings)).zones_down
        views = [v for v in spec.views() if v.is_default or v.zone not in down]
        uplink = self.settings.uplink or obs.default_route_link()
        if not uplink:
            return None
        live = {v.zone for v in views}
        return spec_of(views, uplink, obs, [p for p in self.settings.peers if set(p) <= live])

    def default_zone(self, obs: Observation) -> ZoneSettings:
        """The default zone's view (with what the other zones add to it: their domains, IPv6)."""
        try:
            spec, _ = self.zones(obs)
        except ProximityError:  # a damaged zones.json: the default zone as the settings say
            spec = None
        return spec.views()[0] if spec is not None else default_view(self.settings)
