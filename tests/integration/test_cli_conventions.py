"""The CLI scripts well (issue 15 section 1): --version, exit codes, --json everywhere (errors
too), --api wherever the service has the operation, guard rails, the commands people look for,
completion, a clear word when root is needed, and read-only commands that write nothing.

Most tests run the CLI in-process (Typer's CliRunner) on settings that point every file into a
temporary directory, with the lxc backend or the Proxmox API double; those that need
containers or the service use one sandbox host with the network up.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from importlib.metadata import version as dist_version

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from proximity.cli import app
from proximity.host import wait_for
from proximity.settings import load_settings
from tests.integration.test_no_traceback import commands, options
from tests.integration.tools import PROXIMITY, proximity

runner = CliRunner()
# Commands whose output is another program's (exec) or that serve: --json has no meaning there.
NO_JSON = {"ct exec", "sandbox exec", "serve"}
# Commands that have an equivalent in the service's API (src/proximity/api/app.py), so take --api.
API = {"up", "status", "leases", "doctor", "migrate", "ct create", "ct list", "ct show", "ct start", "ct stop",
       "ct destroy"}


@pytest.fixture
def local(tmp_path, monkeypatch):
    """Settings that keep every file in tmp_path (lxc backend, no namespace): nothing of the machine is read."""
    env = {"PROXIMITY_CONFIG": str(tmp_path / "none.toml"), "PROXIMITY_STATE_DIR": str(tmp_path / "state"),
           "PROXIMITY_DNSMASQ_CONF": str(tmp_path / "etc/dnsmasq.conf"),
           "PROXIMITY_LEASES_FILE": str(tmp_path / "state/dnsmasq.leases"), "PROXIMITY_RUN_DIR": str(tmp_path / "run"),
           "PROXIMITY_INTERFACES_FILE": str(tmp_path / "interfaces"), "PROXIMITY_BACKEND": "lxc",
           # Every file is in tmp_path, so this machine may be named as the target host.
           "PROXIMITY_TARGET_HOST": socket.gethostname()}
    (tmp_path / "etc").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PROXIMITY_SANDBOX", raising=False)
    return tmp_path


def run(*args: str, **kwargs):
    return runner.invoke(app, list(args), prog_name="proximity", catch_exceptions=False, **kwargs)


def error_of(result) -> dict:
    """The JSON error a command printed on stdout (and nothing else)."""
    return json.loads(result.stdout)["error"]


# -- version and exit codes ----------------------------------------------------------
@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_version_flag_prints_the_package_version():
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0 and result.stdout == f"proximity {dist_version('proximity')}\n", result.output


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_the_api_says_its_version(local):
    from proximity.api.app import Context, create_app

    context = Context(load_settings())
    with TestClient(create_app(context, start_background=False)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "version": dist_version("proximity"), "sandbox": None}
        assert client.get("/api/v1/version").status_code == 401
        answer = client.get("/api/v1/version", headers={"Authorization": f"Bearer {context.tokens.read()}"})
        assert answer.json() == {"data": {"version": dist_version("proximity")}}


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_top_level_help_documents_the_exit_codes():
    shown = run("--help").stdout
    assert "Exit codes:" in shown
    for line in ("0  done", "1  an operation failed", "2  input refused", "3  `status`: the network is down",
                 '"code": "not_found"'):
        assert line in shown, shown


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_not_found_is_exit_2_with_the_lxc_backend(local):
    for args in (["migrate", "999"], ["migrate", "nosuch-01"], ["ct", "show", "999"], ["ct", "start", "999"],
                 ["ct", "stop", "nosuch-01"], ["ct", "destroy", "999"]):
        result = run(*args, "--json")
        assert result.exit_code == 2, (args, result.output)
        assert error_of(result)["code"] == "not_found", (args, result.output)


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_an_error_prints_the_value_it_names_as_given(local):
    """Brackets in a value are text, not Rich markup: '[web]' was printed as '' and '[/x]' broke the printing."""
    for value in ("[web]", "[/x]", "[bold]a"):
        result = subprocess.run([*PROXIMITY, "ct", "show", value], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (value, result.stderr)
        assert value in result.stderr, (value, result.stderr)


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_not_found_is_exit_2_with_the_proxmox_backend(local, monkeypatch):
    """Today's `migrate 999` on Proxmox: Proxmox's 500 "Configuration file ... does not exist" is not found."""
    from tests.pve_double.server import MemoryRealizer, PveDouble

    token = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000001")
    with PveDouble(MemoryRealizer(), node="pve", token=token, tls=True) as double:
        for key, value in {"BACKEND": "proxmox", "PROXMOX_HOST": "127.0.0.1", "PROXMOX_PORT": str(double.port),
                           "PROXMOX_NODE": "pve", "PROXMOX_TOKEN_ID": token[0], "PROXMOX_TOKEN_SECRET": token[1],
                           "PROXMOX_CA_FILE": double.ca_file}.items():
            monkeypatch.setenv(f"PROXIMITY_{key}", value)
        for args in (["migrate", "999"], ["ct", "show", "999"], ["ct", "start", "999"]):
            result = run(*args)
            assert result.exit_code == 2, (args, result.output)
            assert "no CT 999" in result.stderr and "Traceback" not in result.output
        assert error_of(run("migrate", "999", "--json"))["code"] == "not_found"


# -- --json, and errors as JSON ------------------------------------------------------
@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_every_command_takes_json_and_api_where_the_service_has_it():
    found = commands()
    for words, command in found.items():
        if words not in NO_JSON:
            assert "--json" in options(command), words
        if words in API:
            assert "--api" in options(command), words


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_an_error_under_json_is_json_on_stdout_with_a_stable_code(local):
    result = run("ct", "start", "nosuch-01", "--json")
    assert result.exit_code == 2 and result.stderr == ""
    assert error_of(result) == {"code": "not_found", "exit": 2, "message": "no container with id or hostname "
                                "'nosuch-01'", "fix": "see `proximity ct list`"}
    invalid = run("ct", "create", "Bad_Name", "--json", "--dry-run")
    assert invalid.exit_code == 2 and error_of(invalid)["code"] == "invalid_input"
    assert "Bad_Name" in error_of(invalid)["message"]
    plain = run("ct", "start", "nosuch-01")  # without --json: one line on stderr, as before
    assert plain.exit_code == 2 and plain.stdout == ""
    assert "error: no container with id or hostname 'nosuch-01': see `proximity ct list`" in plain.stderr


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_codes_are_stable_per_error_class():
    from proximity import errors

    assert {cls.code for cls in (errors.InputError, errors.NotFoundError, errors.ConflictError, errors.HostError,
                                 errors.NeedsRoot, errors.ProxmoxError)} == {
        "invalid_input", "not_found", "conflict", "host_error", "needs_root", "proxmox_error"}
    assert str(errors.ConflictError("CT 100 is running", fix="pass --force")) == "CT 100 is running: pass --force"


# -- the commands people look for ------------------------------------------------------
@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_aliases_are_hidden_and_do_what_they_alias(local):
    assert "ls" not in run("ct", "--help").stdout and " rm " not in run("ct", "--help").stdout
    assert json.loads(run("ct", "ls", "--json").stdout) == json.loads(run("ct", "list", "--json").stdout) == []
    for alias in ("rm", "delete"):
        result = run("ct", alias, "nosuch-01", "--json")
        assert result.exit_code == 2 and error_of(result)["code"] == "not_found"
        assert "--force" in run("ct", alias, "--help").stdout
        assert "--if-exists" in run("sandbox", alias, "--help").stdout
    assert run("sandbox", "ls", "--json").exit_code == 0


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_every_argument_has_help_text():
    for words, command in commands().items():
        for param in command.params:
            if param.param_type_name == "argument":
                assert getattr(param, "help", None), f"{words} {param.name}"
    assert "HOST|ID" in run("migrate", "--help").stdout


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_shell_completion_of_container_names(local):
    """From the reservations file only: cheap, and no backend is asked."""
    state = local / "state"
    state.mkdir()
    (state / "reservations.json").write_text(json.dumps([
        {"hostname": "nginx-01", "mac": "bc:24:11:00:00:01", "ip": "10.10.0.100", "vmid": 100},
        {"hostname": "nagios-02", "mac": "bc:24:11:00:00:02", "ip": "10.10.0.101", "vmid": 101},
        {"hostname": "wordpress-03", "mac": "bc:24:11:00:00:03", "ip": "10.10.0.102", "vmid": 102}]))
    for words in ("ct start", "ct destroy", "ct show", "migrate"):
        line = f"proximity {words} n"
        result = runner.invoke(app, [], prog_name="proximity", env={
            "_PROXIMITY_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)})
        assert result.stdout.split() == ["nagios-02", "nginx-01"], (words, result.output)


# -- read-only commands write nothing; token create --------------------------------------
@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_token_show_writes_nothing_and_token_create_is_idempotent(local):
    token_file = local / "etc/api-token"
    missing = run("token", "show")
    assert missing.exit_code == 2 and "proximity token create" in missing.stderr and not token_file.exists()
    assert error_of(run("token", "show", "--json"))["code"] == "not_found" and not token_file.exists()
    assert run("token", "create", "--dry-run").exit_code == 0 and not token_file.exists()
    made = json.loads(run("token", "create", "--json").stdout)
    assert made["created"] is True and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    again = json.loads(run("token", "create", "--json").stdout)
    assert again["created"] is False and again["existed"] is True and token_file.read_text().strip() == token
    assert run("token", "show").stdout == f"{token}\n"
    rotated = json.loads(run("token", "rotate", "--json").stdout)
    assert rotated["token"] != token and token_file.read_text().strip() == rotated["token"]


# -- sandboxes ---------------------------------------------------------------------------
@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_sandbox_destroy_of_a_missing_sandbox_is_not_found():
    result = run("sandbox", "destroy", "nosuchsb9")
    assert result.exit_code == 2 and "does not exist" in result.stderr and "--if-exists" in result.stderr
    assert error_of(run("sandbox", "destroy", "nosuchsb9", "--json"))["code"] == "not_found"
    tolerant = run("sandbox", "destroy", "nosuchsb9", "--if-exists", "--json")
    assert tolerant.exit_code == 0 and json.loads(tolerant.stdout) == {"name": "nosuchsb9", "destroyed": False}


# -- root --------------------------------------------------------------------------------
def as_nobody(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PROXIMITY, *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, cwd="/")


@pytest.mark.no_namespaces  # in-process, or a subprocess on files in tmp_path
def test_a_command_that_needs_root_says_so(tmp_path):
    os.chmod(tmp_path, 0o755)  # nobody may read the settings' directories, not write them
    (tmp_path / "etc").mkdir(mode=0o755)
    env = {"PROXIMITY_CONFIG": str(tmp_path / "none.toml"), "PROXIMITY_DNSMASQ_CONF": str(tmp_path / "etc/dnsmasq.conf"),
           "PROXIMITY_STATE_DIR": str(tmp_path / "state")}
    result = as_nobody("token", "create", env=env)
    assert result.returncode == 1, result
    assert "this command needs root" in result.stderr and "sudo proximity token create" in result.stderr
    assert "Traceback" not in result.stderr
    error = json.loads(as_nobody("token", "create", "--json", env=env).stdout)["error"]
    assert error["code"] == "needs_root" and error["exit"] == 1 and error["fix"].endswith("sudo proximity token create --json")


# -- with a sandbox: containers, the guard rail, the service -------------------------------
def test_sandbox_list_and_root_on_a_sandbox(sandbox):
    listed = json.loads(proximity("sandbox", "list", "--json").stdout)
    assert sandbox.name in [sb["name"] for sb in listed]
    assert sandbox.name in proximity("sandbox", "ls").stdout
    result = as_nobody("up", "--sandbox", sandbox.name)
    assert result.returncode == 1 and f"sudo proximity up --sandbox {sandbox.name}" in result.stderr, result
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def container(network):
    info = json.loads(proximity("ct", "create", "guard-01", "--sandbox", network.name, "--json").stdout)
    yield info
    proximity("ct", "destroy", "guard-01", "--force", "--sandbox", network.name, check=False)


def test_ct_destroy_of_a_running_container_needs_force(network, container):
    sb = network.name
    refused = proximity("ct", "destroy", "guard-01", "--sandbox", sb, "--json", check=False)
    assert refused.returncode == 2, refused
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "conflict" and "is running" in error["message"] and "--force" in error["fix"]
    dry = proximity("ct", "destroy", "guard-01", "--sandbox", sb, "--dry-run", check=False)
    assert dry.returncode == 2 and "--force" in dry.stderr
    shown = json.loads(proximity("ct", "show", "guard-01", "--sandbox", sb, "--json").stdout)
    assert shown["state"] == "running" and shown["vmid"] == container["vmid"]  # nothing was destroyed


def test_ct_start_stop_show_and_migrate_by_hostname_speak_json(network, container):
    sb = network.name
    stopped = json.loads(proximity("ct", "stop", "guard-01", "--sandbox", sb, "--json").stdout)
    assert stopped["state"] == "stopped" and stopped["vmid"] == container["vmid"]
    started = json.loads(proximity("ct", "start", str(container["vmid"]), "--sandbox", sb, "--json").stdout)
    assert started["state"] == "running"
    shown = proximity("ct", "show", str(container["vmid"]), "--sandbox", sb).stdout
    assert "guard-01" in shown and container["ip"] in shown
    refused = proximity("migrate", "guard-01", "--sandbox", sb, "--json", check=False)  # resolved by hostname
    assert refused.returncode == 2 and f"CT {container['vmid']}" in json.loads(refused.stdout)["error"]["message"]


def test_the_reads_and_container_actions_through_the_api(network, container):
    sb = network.name
    port = 19000 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--sandbox", sb, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return server.poll() is not None

    try:
        assert wait_for(answering, timeout=60) and server.poll() is None
        api = ["--sandbox", sb, "--api", url]
        status = json.loads(proximity("status", *api, "--json").stdout)
        assert status["bridge_name"] == "prox-net" and "health_status" in status
        assert "prox-net status" in proximity("status", *api).stdout
        assert json.loads(proximity("leases", *api, "--json").stdout) == json.loads(
            proximity("leases", "--sandbox", sb, "--json").stdout)
        checks = json.loads(proximity("doctor", *api, "--json", check=False).stdout)
        assert checks and all({"name", "ok", "fix"} <= set(check) for check in checks)
        assert [c["hostname"] for c in json.loads(proximity("ct", "list", *api, "--json").stdout)] == ["guard-01"]
        assert json.loads(proximity("ct", "show", "guard-01", *api, "--json").stdout)["vmid"] == container["vmid"]
        missing = proximity("ct", "show", "nosuch-01", *api, "--json", check=False)
        assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "not_found"
        refused = proximity("ct", "destroy", "guard-01", *api, "--json", check=False)
        assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["code"] == "conflict"
        stopped = json.loads(proximity("ct", "stop", "guard-01", *api, "--json").stdout)
        assert stopped["state"] == "stopped"
        started = json.loads(proximity("ct", "start", "guard-01", *api, "--json").stdout)
        assert started["state"] == "running"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ct_rm_force_destroys_a_running_container(network, container):
    sb = network.name
    done = json.loads(proximity("ct", "rm", "guard-01", "--force", "--sandbox", sb, "--json").stdout)
    assert done["destroyed"] is True and done["vmid"] == container["vmid"]
    gone = proximity("ct", "show", "guard-01", "--sandbox", sb, "--json", check=False)
    assert gone.returncode == 2 and json.loads(gone.stdout)["error"]["code"] == "not_found"
