"""The Proximity service: the HTTP API (FastAPI), its jobs, and the dashboard.

The service reconciles the network continuously: at start, whenever the status snapshot sees
drift (netlink, inotify and pidfd events), and on a timer. It heals with targeted changes only
(``ifup BRIDGE``, dnsmasq, rules, ports); a whole-file ``ifreload -a`` happens only when an admin
asks (``POST /initialize``, ``proximity up``). A failed reconcile does not stop the service: it
reports ``unhealthy`` with the reason and retries. It heals only while the admin's intent is up
(``proximity up``, or ``/initialize``, which is ``up``): after ``proximity down`` it leaves the
network down, and starting the service never sets the network up by itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from proximity import version
from proximity.api.auth import TokenStore, require_token
from proximity.api.door import STATUS_PATH, Door
from proximity.api.info import sentence, system_info
from proximity.api.jobs import Job, JobRunner, StreamsFull
from proximity.api.models import DRY_RUN, ERRORS, CreateContainer, Initialize, Migrate, Problem
from proximity.api.zones import ZoneStatuses, follow_zones, followed, status_body, zone_routes
from proximity.containers.base import BackendError
from proximity.containers.manager import ContainerManager, MigrationError
from proximity.doctor import doctor_dict, run_doctor
from proximity.errors import ProximityError, http_status
from proximity.network.health import NetworkStatus
from proximity.network.probe import load as load_probe
from proximity.network.reconciler import NetworkManager
from proximity.settings import Settings, SettingsError
from proximity.zones_file import read_zones_file

log = logging.getLogger(__name__)


class Context:
    """Everything the service needs, built once at start-up."""

    def __init__(self, settings: Settings, containers: ContainerManager | None = None, retry_every: float = 5,
                 reconcile_every: float = 30, probe_every: float = 300):
        self.settings = settings
        self.network = NetworkManager(settings)
        self.tokens = TokenStore(settings)
        self.jobs = JobRunner()
        self._containers = containers
        self.retry_every = retry_every  # after a failed reconcile
        self.reconcile_every = reconcile_every  # a healthy host is checked this often (events come sooner)
        self.probe_every = probe_every  # the end-to-end probe, while it passes
        self._last_probe = time.monotonic()  # the first periodic probe waits its turn (a failed one: sooner)
        self._wake = threading.Event()
        self.last_converge: dict[str, Any] = {"ok": None, "time": None, "error": None}
        self._stop = threading.Event()
        self._converge_lock = threading.Lock()
        from proximity.api.status import StatusSnapshot  # noqa: PLC0415 (after network is built)

        self.status = StatusSnapshot(self.network)
        self.zones = ZoneStatuses(self)
        self.zones_seen = read_zones_file(settings.zones_file)  # what ``settings`` were loaded with (follow_zones)
        followed(self, self.network)
        self._status_json: tuple[NetworkStatus, dict[str, Any], bytes] | None = None

    def status_json(self, wait: bool = False) -> bytes | None:
        """The status endpoint's body, encoded once per change of the snapshot or of the last
        converge (both are replaced, never changed in place). None before the first snapshot,
        unless ``wait``; never blocks otherwise, so the event loop may call it."""
        st = self.status.get() if wait else self.status.peek()
        if st is None:
            return None
        converge = self.last_converge
        rendered = self._status_json
        if rendered is None or rendered[0] is not st or rendered[1] is not converge:
            rendered = self._status_json = (st, converge, status_body(st, converge, self.retry_every))
        return rendered[2]

    @property
    def containers(self) -> ContainerManager:
        if self._containers is None:
            from proximity.containers.factory import backend_for

            self._containers = ContainerManager(self.network, backend_for(self.settings))
        return self._containers

    def converge(self, job: Job | None = None) -> dict:
        """``up``, asked for by an admin (``/initialize``): the whole file is applied with ``ifreload -a``."""
        return self._reconcile("up", job)

    def heal(self) -> dict:
        """What the service does on its own: targeted changes only (``ifup BRIDGE``, never ``ifreload -a``)."""
        return self._reconcile("heal")

    def _reconcile(self, kind: str, job: Job | None = None) -> dict:
        with self._converge_lock:
            follow_zones(self)
            try:
                # up: the last `up` again, with what it was given (the dashboard's "Re-run converge")
                report = self.network.toward_intent().up() if kind == "up" else self.network.heal()
                self.last_converge = {"ok": True, "time": time.time(), "error": None, "kind": kind,
                                      "actions": report.actions, "skipped": report.skipped}
                if job:
                    for action in report.actions or ["nothing to do: the host already matches the settings"]:
                        job.step(action)
                return report.as_dict()
            except Exception as exc:
                self.last_converge = {"ok": False, "time": time.time(), "error": str(exc), "kind": kind,
                                      "actions": []}
                raise
            finally:
                self.zones.invalidate()
                self.status.invalidate()

    def wake(self) -> None:
        """Reconcile soon (the status snapshot saw the host drift)."""
        self._wake.set()

    def start_background(self) -> None:
        """Reconcile now, then whenever the status snapshot sees drift, and on a timer; never crash."""
        self.status.on_change = lambda status: status.health_status not in ("healthy", "down") and self.wake()

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    report = self.heal()
                except Exception as exc:
                    log.error("network reconcile failed, retrying in %.0f s: %s", self.retry_every, exc)
                    self._stop.wait(self.retry_every)  # a failing host is not hammered, even when woken
                    continue
                if report["actions"]:
                    log.warning("healed the network: %s", "; ".join(report["actions"]))
                self._recover_containers()
                self._probe_when_due(changed=bool(report["actions"]))
                self._wake.wait(self.reconcile_every)

        threading.Thread(target=loop, name="proximity-reconcile", daemon=True).start()

    def _recover_containers(self) -> None:
        """Finish or undo a container create or destroy whose process died (one file read when none did)."""
        try:
            for line in self.containers.recover():
                log.warning("recovered an interrupted command: %s", line)
        except Exception as exc:  # no backend configured (no Proxmox token): nothing to recover
            log.debug("container recovery skipped: %s", exc)

    def _probe_when_due(self, changed: bool) -> None:
        """The end-to-end probe, every ``probe_every`` seconds (sooner while it fails); a heal that changed
        something has just run one."""
        now = time.monotonic()
        if changed:
            self._last_probe = now
            return
        last = load_probe(self.network.host, self.settings)
        every = self.probe_every if last is None or last.ok else self.reconcile_every
        st = self.status.peek()
        if st is None or not st.bridge_exists or st.intent != "up":
            return
        # A passing probe taken under other firewall rules proves nothing: probe again now (at most every 2 s).
        stale = last is not None and last.ok and now - self._last_probe >= 2 and self.network.probe_due()
        if now - self._last_probe < every and not stale:
            return
        self._last_probe = now
        try:
            self.network.run_probe()
        except Exception as exc:
            log.warning("the end-to-end probe could not run: %s", exc)
        self.status.invalidate(wait=False)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.jobs.shutdown()
        self.status.close()


def create_app(context: Context, start_background: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        context.tokens.ensure()
        if start_background:
            context.start_background()
        yield
        context.stop()

    app = FastAPI(title="Proximity", version=version(), lifespan=lifespan, responses=ERRORS,
                  description="Managed, isolated networking for the containers of a Proxmox host.",
                  docs_url=None, redoc_url=None)  # /docs below, from vendored assets: it works offline
    app.state.context = context
    app.add_middleware(Door, context=context)
    auth = [Depends(require_token)]  # checked by the Door already; here for the schema

    @app.exception_handler(ProximityError)
    async def proximity_error(request: Request, exc: ProximityError) -> JSONResponse:
        """Every error Proximity raises, with its status from one place (proximity.errors)."""
        return JSONResponse({"detail": str(exc)}, status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 as FastAPI shapes it (``loc``, ``type``), each ``msg`` a sentence naming its field."""
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "type": str(e.get("type", "")), "msg": sentence(e)}
                                        for e in exc.errors()]}, status_code=422)

    # -- system ----------------------------------------------------------------------
    @app.get("/healthz", tags=["system"])
    def healthz() -> dict[str, Any]:
        # The sandbox is named without a token: the sign-in hint says `token show --sandbox NAME`.
        return {"status": "ok", "version": app.version, "sandbox": context.settings.netns}

    @app.get("/api/v1/system/info", tags=["system"], dependencies=auth)
    def info() -> dict[str, Any]:
        return {"data": system_info(context.settings, app.version)}

    @app.get("/api/v1/version", tags=["system"], dependencies=auth)
    def get_version() -> dict[str, Any]:
        return {"data": {"version": app.version}}

    @app.get(STATUS_PATH, tags=["network"], dependencies=auth, response_model=dict[str, Any])
    async def network_status() -> Response:
        # The snapshot is in memory; only the very first read may wait for it (in a thread).
        body = context.status_json() or await run_in_threadpool(context.status_json, True)
        return Response(body, media_type="application/json")

    @app.get("/api/v1/system/network/leases", tags=["network"], dependencies=auth, response_model=dict[str, Any])
    def network_leases() -> Response:
        # Plain values, encoded at once: FastAPI's generic encoder took ~10 ms for 1,000 leases.
        leases, warnings = context.network.leases()
        body = {"data": [lease.as_dict() for lease in leases], "warnings": warnings}
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.get("/api/v1/system/network/doctor", tags=["network"], dependencies=auth)
    def network_doctor() -> dict[str, Any]:
        checks = run_doctor(context.network, containers=lambda: context.containers)
        return {"data": [doctor_dict(check) for check in checks]}

    @app.post("/api/v1/system/network/initialize", tags=["network"], dependencies=auth, status_code=202,
              responses=DRY_RUN)
    def network_initialize(body: Initialize | None = None) -> Any:
        if body is not None and body.dry_run:
            plan = NetworkManager(context.settings, dry_run=True).toward_intent().up()
            return JSONResponse({"data": plan.as_dict()}, status_code=200)
        job = context.jobs.submit("initialize", context.settings.bridge, lambda job: context.converge(job))
        return {"job": job.public()}

    app.include_router(zone_routes(context, auth))

    # -- containers ------------------------------------------------------------------
    @app.get("/api/v1/containers", tags=["containers"], dependencies=auth)
    def list_containers() -> dict[str, Any]:
        return {"data": [c.as_dict() for c in context.containers.list()]}

    @app.get("/api/v1/containers/{ref}", tags=["containers"], dependencies=auth)
    def get_container(ref: Annotated[str, Path(max_length=63)]) -> dict[str, Any]:
        return {"data": context.containers.info(_vmid(ref)).as_dict()}

    @app.get("/api/v1/containers/{ref}/jobs", tags=["containers"], dependencies=auth)
    def container_jobs(ref: Annotated[str, Path(max_length=63)]) -> dict[str, Any]:
        """The jobs kept in memory that touched this container (create, migrate), newest first."""
        info = context.containers.info(_vmid(ref))
        return {"data": [job.public() for job in context.jobs.touching(info.hostname, str(info.vmid))]}

    @app.post("/api/v1/containers", tags=["containers"], dependencies=auth, status_code=202)
    def create_container(body: CreateContainer) -> dict[str, Any]:
        context.containers.plan_create(body.hostname)  # admission now: a 409 beats a failed job

        def work(job: Job) -> dict:
            job.step(f"reserving an address for {body.hostname}", 10)
            info = context.containers.create(body.hostname, memory=body.memory, cores=body.cores,
                                             template=body.template, start=body.start)
            job.step(f"created CT {info.vmid} with {info.ip} ({info.dns_name})", 90)
            context.status.invalidate()
            return info.as_dict()

        return {"job": context.jobs.submit("create", body.hostname, work).public()}

    @app.post("/api/v1/containers/{ref}/start", tags=["containers"], dependencies=auth)
    def start_container(ref: Annotated[str, Path(max_length=63)]) -> dict[str, Any]:
        return {"data": context.containers.start(str(_vmid(ref))).as_dict()}

    @app.post("/api/v1/containers/{ref}/stop", tags=["containers"], dependencies=auth)
    def stop_container(ref: Annotated[str, Path(max_length=63)]) -> dict[str, Any]:
        return {"data": context.containers.stop(str(_vmid(ref))).as_dict()}

    @app.delete("/api/v1/containers/{ref}", tags=["containers"], dependencies=auth)
    def destroy_container(ref: Annotated[str, Path(max_length=63)]) -> dict[str, Any]:
        vmid = _vmid(ref)
        context.containers.destroy(str(vmid))
        context.status.invalidate()
        return {"data": {"vmid": vmid, "destroyed": True}}

    @app.post("/api/v1/containers/{vmid}/migrate", tags=["containers"], dependencies=auth, status_code=202,
              responses=DRY_RUN)
    def migrate_container(vmid: Annotated[int, Path(ge=100, le=999999999)], body: Migrate | None = None) -> Any:
        body = body or Migrate()
        context.containers.info(_vmid(str(vmid)))  # 404 now rather than a failed job
        try:  # a refusal (already on the bridge, not an RFC 1123 name) now, as a 409, rather than a failed job
            plan = context.containers.migrate(vmid, dry_run=True, timeout=body.timeout)
        except SettingsError as exc:
            raise HTTPException(409, str(exc)) from None
        if body.dry_run:
            return JSONResponse({"data": plan.as_dict()}, status_code=200)

        def work(job: Job) -> dict:
            steps = iter(range(15, 95, 15))
            try:
                report = context.containers.migrate(vmid, timeout=body.timeout,
                                                    progress=lambda text: job.step(text, next(steps, 90)))
            except MigrationError:
                context.status.invalidate()
                raise
            context.status.invalidate()
            return report.as_dict()

        return {"job": context.jobs.submit("migrate", str(vmid), work).public()}

    # -- jobs ------------------------------------------------------------------------
    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"], dependencies=auth)
    def get_job(job_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        return {"data": _job(job_id).public()}

    @app.get("/api/v1/jobs/{job_id}/events", tags=["jobs"], dependencies=auth,
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}, 503: {
                 "model": Problem, "description": "As many job streams are open as the service serves; poll the job"}})
    async def job_events(job_id: Annotated[str, Path(max_length=64)]) -> StreamingResponse:
        job = _job(job_id)
        try:  # async: a waiting stream holds no worker thread
            events = context.jobs.stream(job)
        except StreamsFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None

        async def stream():
            async for event in events:
                yield f"event: {event['event']}\ndata: {json.dumps(event['data'], default=str)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- metrics and dashboard --------------------------------------------------------
    @app.get("/metrics", tags=["system"], dependencies=auth, response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        from proximity.api.metrics import render_metrics

        return PlainTextResponse(render_metrics(context), media_type="text/plain; version=0.0.4")

    app.mount("/static", StaticFiles(packages=[("proximity.api", "static")]), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title="Proximity API", swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css", swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # no call to validator.swagger.io

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def dashboard() -> HTMLResponse:
        page = resources.files("proximity.api").joinpath("static/index.html")
        return HTMLResponse(page.read_text() if page.is_file() else "<h1>Proximity</h1>")

    def _vmid(ref: str) -> int:
        try:
            vmid = context.containers.resolve(ref)
            if ref.isascii() and ref.isdigit():
                context.containers.backend.status(vmid)
            return vmid
        except (SettingsError, BackendError):
            raise HTTPException(404, f"no container with id or hostname {ref!r}") from None

    def _job(job_id: str) -> Job:
        job = context.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (jobs are kept in memory while the service runs)")
        return job

    return app


__all__ = ["Context", "create_app"]
