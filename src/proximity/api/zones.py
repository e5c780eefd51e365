"""The zones in the API: ``GET /api/v1/zones``, ``GET /api/v1/zones/{name}/status``, and create,
delete, peer and unpeer as jobs (``dry_run``: the plan at once, nothing changed).

A change is admitted first, as a dry run in the request (a wrong field is a 400 and a clash a 409,
never a failed job), then runs as a job alone with the service's heal. The service follows
zones.toml (:func:`follow_zones`, and its heal under the host lock: :func:`followed`), so a zone made
by a job or by the CLI is kept by the heal rather than undone. Every zone's status is computed at most every few seconds (:class:`ZoneStatuses`);
the default zone's is always the status snapshot's, so every surface tells one story.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from proximity.api.jobs import Job
from proximity.api.models import DRY_RUN, ZONE_PATTERN, CreateZone, Initialize
from proximity.errors import NotFoundError, ProximityError
from proximity.network.health import NetworkStatus
from proximity.network.zone_status import with_default, zone_row
from proximity.settings import Settings
from proximity.spec.naming import DEFAULT_ZONE
from proximity.spec.view import ZoneSettings
from proximity.zones_file import read_zones_file

from proximity.network.reconciler import NetworkManager, Report

if TYPE_CHECKING:
    from proximity.api.app import Context

log = logging.getLogger(__name__)
_following = threading.Lock()
ZoneName = Annotated[str, Path(max_length=32, pattern=ZONE_PATTERN)]


def status_body(st: NetworkStatus, converge: dict[str, Any], retry_every: float) -> bytes:
    """The status route's body for one zone: its status with the host's last converge, and a message."""
    data = st.as_dict()
    data["last_converge"] = converge
    if converge["ok"] is False and data["intent"] == "up":  # the service could not set it up: say so
        data["health_status"] = "unhealthy"
        failed = f"converge failed (retrying every {retry_every:g} s): {converge['error']}"
        data["reasons"] = [failed, *data["reasons"]]
        data["checks"] = [{"id": "converge", "name": "converge", "ok": False, "observed": failed,
                           "fix": "see the service's log", "severity": "error"}, *data["checks"]]
    health = data["health_status"]
    message = "Network infrastructure operational" if health == "healthy" else "Network down as requested" if (
        health == "down") else f"Network {health}: " + "; ".join(data["reasons"] or ["unknown"])
    return json.dumps({"message": message, "data": data}, separators=(",", ":")).encode()


class ZoneStatuses:
    """Every zone's (view, status), the default first, read again at most every ``max_age`` seconds."""

    def __init__(self, context: Context, max_age: float = 5.0):
        self.context, self.max_age = context, max_age
        self._lock = threading.Lock()
        self._found: list[tuple[ZoneSettings, NetworkStatus]] | None = None
        self._at = 0.0

    def get(self) -> list[tuple[ZoneSettings, NetworkStatus]]:
        context = self.context
        follow_zones(context)
        with self._lock:
            if self._found is None or time.monotonic() - self._at > self.max_age:
                self._found, self._at = with_default(context.network, context.status.get()), time.monotonic()
            found = self._found
        return [(found[0][0], context.status.get()), *found[1:]]  # the default zone: the snapshot's

    def invalidate(self) -> None:
        with self._lock:
            self._found = None


def follow_zones(context: Context) -> None:
    """Take up a change of zones.toml (a zone the CLI or a zone job made, changed or deleted): the heal and
    every reading then see every zone. A damaged file changes nothing here (status names it)."""
    from proximity.containers.manager import ContainerManager
    from proximity.zone_admin import rezoned

    with _following:  # request threads and the heal may follow at once
        try:
            now = read_zones_file(context.settings.zones_file)
            if now == context.zones_seen:
                return
            settings = rezoned(context.settings, context.zones_seen, now)
        except ProximityError as exc:
            log.warning("zones.toml is not taken up: %s", exc)
            return
        context.settings, context.zones_seen = settings, now
        context.network = context.status.network = followed(context, NetworkManager(settings))
        if context._containers is not None:
            context._containers = ContainerManager(context.network, context._containers.backend)
    context.zones.invalidate()


def followed(context: Context, manager: NetworkManager) -> NetworkManager:
    """``manager``, whose heal reads zones.toml again under the host lock (a `zone create` may hold it)."""
    from proximity.zone_admin import rezoned

    def follow(s: Settings) -> Settings:
        try:
            return rezoned(s, context.zones_seen, read_zones_file(s.zones_file))
        except ProximityError:  # a damaged file: as the service knew it (status names the file)
            return s

    manager.follow = follow
    return manager


def current_settings(context: Context) -> Settings:
    follow_zones(context)
    return context.settings


def change(context: Context, work: Callable[[], Report]) -> Report:
    """A change an admin asked for (a zone job), alone with the heal; then the service follows it."""
    with context._converge_lock:
        try:
            follow_zones(context)
            return work()
        finally:
            follow_zones(context)
            context.zones.invalidate()
            context.status.invalidate()


def zone_routes(context: Context, auth: list) -> APIRouter:
    router = APIRouter(tags=["zones"], dependencies=auth)

    @router.get("/api/v1/zones")
    def list_zones() -> dict[str, Any]:
        """Every zone: bridge, subnets, gateways, domain, IPv6 prefix, leases and health (as `zone list --json`)."""
        return {"data": [zone_row(view, st) for view, st in context.zones.get()]}

    @router.get("/api/v1/zones/{name}/status", response_model=dict[str, Any])
    async def get_zone_status(name: ZoneName) -> Response:
        """The zone's status as ``GET /api/v1/system/network/status`` shows the default zone's."""
        if name == DEFAULT_ZONE:  # the status route's very body
            body = context.status_json() or await run_in_threadpool(context.status_json, True)
            return Response(body, media_type="application/json")
        found = [st for view, st in await run_in_threadpool(context.zones.get) if view.zone == name]
        if not found:
            raise NotFoundError(f"there is no zone {name!r}: GET /api/v1/zones lists them")
        return Response(status_body(found[0], context.last_converge, context.retry_every),
                        media_type="application/json")

    @router.get("/api/v1/zones/{name}/leases", response_model=dict[str, Any])
    def get_zone_leases(name: ZoneName) -> dict[str, Any]:
        """The zone's DHCP leases, IPv4 and DHCPv6, as ``GET /api/v1/system/network/leases`` gives the default's."""
        from proximity.network.zone_views import zone_view_of

        views = tuple(view for view, _ in context.zones.get())
        if not any(view.zone == name for view in views):
            raise NotFoundError(f"there is no zone {name!r}: GET /api/v1/zones lists them")
        leases, warnings = context.network.leases(zone_view_of(context.network, name, views))
        return {"data": [lease.as_dict() for lease in leases], "warnings": warnings}

    @router.post("/api/v1/zones", status_code=202, responses=DRY_RUN)
    def create_zone(body: CreateZone) -> Any:
        """Create a zone and bring it up (kept in zones.toml), as `proximity zone create`."""
        fields = body.model_dump(exclude={"name", "dry_run"})
        return _change(body.dry_run, "zone create", body.name, lambda admin: admin.create(body.name, **fields))

    @router.delete("/api/v1/zones/{name}", responses=DRY_RUN, status_code=202)
    def delete_zone(name: ZoneName, force: Annotated[bool, Query(
                        description="delete it although containers have reservations there: they are cut off")] = False,
                    dry_run: bool = False) -> Any:
        """Delete a zone: its bridge, dnsmasq, leases, reservations, rules and files. 409 while in use."""
        return _change(dry_run, "zone delete", name, lambda admin: admin.delete(name, force=force))

    @router.post("/api/v1/zones/{name}/peers/{other}", status_code=202, responses=DRY_RUN)
    def peer_zones(name: ZoneName, other: ZoneName, body: Initialize | None = None) -> Any:
        """Let two zones reach each other, as `proximity zone peer`."""
        return _change(bool(body and body.dry_run), "zone peer", f"{name}+{other}",
                       lambda admin: admin.peer(name, other))

    @router.delete("/api/v1/zones/{name}/peers/{other}", status_code=202, responses=DRY_RUN)
    def unpeer_zones(name: ZoneName, other: ZoneName, dry_run: bool = False) -> Any:
        """Isolate two zones from each other again, as `proximity zone unpeer`."""
        return _change(dry_run, "zone unpeer", f"{name}+{other}", lambda admin: admin.peer(name, other, join=False))

    def _change(dry_run: bool, kind: str, target: str, act) -> Any:
        from proximity.zone_admin import ZoneAdmin

        load = lambda: current_settings(context)
        plan: Report = act(ZoneAdmin(load, dry_run=True))  # admission: 400/404/409 now
        if dry_run:
            return JSONResponse({"data": plan.as_dict()}, status_code=200)

        def work(job: Job) -> dict:
            job.step(f"{kind} {target}", 5)
            report = change(context, lambda: act(ZoneAdmin(load)))
            for line in [*report.actions, *(f"warning: {w}" for w in report.warnings)] or ["nothing to do"]:
                job.step(line)
            return report.as_dict()

        return {"job": context.jobs.submit(kind, target, work).public()}

    return router
