"""Property-based tests of the whole HTTP API with schemathesis, against a real sandbox host.

Every operation of the OpenAPI schema is called with generated requests, valid and invalid,
carrying a valid bearer token, on the in-process ASGI app whose context drives a real sandbox
host with the lxc backend. Schemathesis' checks must all pass: no 5xx, and every response (status
code, content type, headers, body) conforms to the schema.

Random path parameters almost never name a real container or job, so a second pass runs the
operations that take one with a real container and a real job (start, stop, migrate, events...,
and the delete last).

Bounded and deterministic: a few examples per operation, derandomized, no example database, no
shrinking. The DHCP pool is three addresses wide, so however many containers the fuzzer asks for,
admission refuses the rest: the run stays short and exercises the refusal too. The jobs still
queued at the end are dropped, the running ones finish, and everything created is destroyed
(the sandbox also stops its containers).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from proximity.api.app import Context, create_app
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings
from proximity.zone_admin import ZoneAdmin
from proximity.zones_file import read_zones_file

POSITIVE_EXAMPLES = 40
NEGATIVE_EXAMPLES = 20
REAL_EXAMPLES = 3
SMALL_POOL = {"dhcp_start": "10.10.0.100", "dhcp_end": "10.10.0.102"}
# A zone's fields relate to each other and to the host (a range inside its subnet, no overlap with the host's
# addresses or the other zones): a schema-valid body may still be refused with a 400 naming the field.
RELATIONAL = {"POST /api/v1/zones": (200, 202, 400, 409)}


@pytest.fixture(scope="module")
def network(sandbox):
    """The sandbox host with Proximity's network up (a three-address pool)."""
    settings = load_settings(**sandbox.settings_overrides(), **SMALL_POOL)
    NetworkManager(settings).up()
    yield sandbox, settings
    NetworkManager(settings).down(purge=True)


@pytest.fixture
def api(network):
    """The app on a fresh context (schemathesis' plugin ends the app's lifespan after each test)."""
    sandbox, settings = network
    backend = LxcBackend(sandbox.name, sandbox.state_dir / "lxc")
    manager = ContainerManager(NetworkManager(settings), backend)
    context = Context(settings, containers=manager)
    app = create_app(context, start_background=False)
    token = context.tokens.ensure()
    try:
        yield app, context, token
    finally:
        try:
            from schemathesis.python import asgi

            asgi.shutdown_lifespans()  # the app's lifespan, started by the ASGI transport
        finally:
            context.stop()  # drops the queued jobs; let the running ones end, then undo what they made
            wait_for(lambda: not any(job.status == "running" for job in list(context.jobs._jobs.values())),
                     timeout=120, interval=0.1)
            for container in backend.list():
                manager.destroy(str(container.vmid))
            for reservation in manager.reservations.all():
                manager.reservations.release(reservation.hostname)
            fresh = lambda: load_settings(**sandbox.settings_overrides(), **SMALL_POOL)  # noqa: E731
            for zone in read_zones_file(settings.zones_file).get("zones", {}):  # those the fuzzer made
                ZoneAdmin(fresh).delete(zone, force=True)


@pytest.fixture
def operations(api):
    app, _context, _token = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def fuzz(operation, mode: GenerationMode, token: str, examples: int, **fixed) -> list[str]:
    """Call one operation with ``examples`` generated requests; the failures, each with a curl to replay it."""
    failures: list[str] = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case) -> None:
        allowed = RELATIONAL.get(operation.label) if mode is GenerationMode.POSITIVE else None
        try:
            response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                              excluded_checks=[positive_data_acceptance] if allowed else None)
            assert not allowed or response.status_code in allowed, (response.status_code, response.text)
        except (Exception, BaseExceptionGroup) as exc:  # keep going: report every failure at once
            replay = case.as_curl_command(headers={"Authorization": "Bearer $TOKEN"})
            failures.append(f"{operation.label} [{mode.value}]: {exc}\n    {replay}")

    try:
        run()
    except Unsatisfiable:  # nothing to get wrong: no invalid request exists for e.g. GET /healthz
        assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request could be generated"
    return failures


def report(failures: list[str]) -> str:
    unique = list(dict.fromkeys(failures))
    return f"{len(unique)} failing requests:\n" + "\n".join(unique)


def test_operations_on_a_real_container_and_job_conform(api, operations):
    _app, context, token = api
    container = context.containers.create("fuzz-ct")
    job = context.jobs.submit("initialize", context.settings.bridge, lambda job: context.converge(job))
    assert wait_for(lambda: job.done, timeout=60), job.public()
    fixed = {
        "GET /api/v1/containers/{ref}": {"ref": container.hostname},
        "POST /api/v1/containers/{ref}/stop": {"ref": container.hostname},
        "POST /api/v1/containers/{ref}/start": {"ref": str(container.vmid)},
        "POST /api/v1/containers/{vmid}/migrate": {"vmid": container.vmid},
        "GET /api/v1/jobs/{job_id}": {"job_id": job.id},
        "GET /api/v1/jobs/{job_id}/events": {"job_id": job.id},
        "DELETE /api/v1/containers/{ref}": {"ref": container.hostname},  # last: it destroys the container
    }
    failures: list[str] = []
    for label, path_parameters in fixed.items():
        failures += fuzz(operations[label], GenerationMode.POSITIVE, token, REAL_EXAMPLES,
                         path_parameters=path_parameters)
    assert not failures, report(failures)
    assert all(c.vmid != container.vmid for c in context.containers.list())


def test_every_operation_conforms_to_the_schema(api, operations):
    _app, _context, token = api
    assert len(operations) >= 15, sorted(operations)
    failures: list[str] = []
    for operation in operations.values():
        failures += fuzz(operation, GenerationMode.POSITIVE, token, POSITIVE_EXAMPLES)
        failures += fuzz(operation, GenerationMode.NEGATIVE, token, NEGATIVE_EXAMPLES)
    assert not failures, report(failures)


@pytest.mark.parametrize("ref", ["²", "١٢٣", "0", "99999999999999999999", "no-such-ct"])
def test_odd_container_references_are_not_found(api, operations, ref):
    """Found by fuzzing: "²".isdigit() is true but int("²") fails, which was a 500."""
    _app, _context, token = api
    for label in ("GET /api/v1/containers/{ref}", "POST /api/v1/containers/{ref}/start",
                  "POST /api/v1/containers/{ref}/stop", "DELETE /api/v1/containers/{ref}"):
        case = operations[label].Case(path_parameters={"ref": ref})
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 404, (label, ref, response.text)
