"""No traceback, ever: every command of the CLI, driven with broken inputs, says what is wrong
in one message and exits 1 or 2.

The commands are enumerated from the Typer app, so a new command is driven too. Broken inputs:
bad settings in the environment and in the config file, bad arguments, a missing sandbox, a
damaged interfaces file (a lone END marker, as Proxmox's writer leaves it), and an --api that
cannot be used. Everything acts on a sandbox host, or is refused before touching anything: the
only --api reached is a closed port on loopback.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor

import typer
from typer.testing import CliRunner

from proximity.cli import app
from proximity.network.interfaces import LEGACY_END_MARKER as END_MARKER
from tests.integration.tools import proximity

KNOWN = {"up", "down", "status", "leases", "doctor", "migrate", "serve", "sandbox create", "sandbox destroy",
         "sandbox attach", "sandbox exec", "ct create", "ct list", "ct start", "ct stop", "ct destroy", "ct exec",
         "token show", "token rotate", "token create", "ct show", "sandbox list", "sandbox apply"}
BAD_SETTINGS = {
    "PROXIMITY_LEASE_TIME": "12h\n",
    "PROXIMITY_DOMAIN": "com",
    "PROXIMITY_DHCP_START": "10.99.0.5",  # (a sandbox sets upstream_dns itself: tested in the unit tests)
    "PROXIMITY_BRIDGE": "prox net",
    "PROXIMITY_GATEWAY": "10.10.0.0/24",
    "PROXIMITY_PROXMOX_PORT": "eighty",
}


def commands() -> dict[str, object]:
    """Every leaf command of the CLI, by its words (``ct create``); not the hidden aliases (``ct rm``)."""
    found = {}

    def walk(group, words):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*words, name])
            elif not command.hidden:
                found[" ".join([*words, name])] = command

    walk(typer.main.get_command(app), [])
    return found


def options(command) -> set[str]:
    return {opt for p in command.params if p.param_type_name == "option" for opt in p.opts}


def arguments(command) -> list[str]:
    return [p.name for p in command.params if p.param_type_name == "argument"]


def argv(words: str, command, sandbox: str, values: dict[str, str] | None = None) -> list[str]:
    """The command with a plausible value for each argument (``values`` override), on ``sandbox``."""
    plausible = {"name": sandbox, "hostname": "web-01", "ref": "web-01", "vmid": "100", "command": "true"}
    plausible.update(values or {})
    args = [*words.split(), *(plausible.get(name, "x") for name in arguments(command))]
    if "--sandbox" in options(command):
        args += ["--sandbox", sandbox]
    return args


def check(failures: list[str], args: list[str], env: dict | None = None, codes=(1, 2)) -> None:
    """The real command, as a user runs it: no traceback, an expected exit code, and a message."""
    result = proximity(*args, check=False, env=env, timeout=60)
    _judge(failures, args, env, codes, result.returncode, result.stdout + result.stderr)


def _judge(failures: list[str], args: list[str], env: dict | None, codes, code: int, shown: str) -> None:
    if "Traceback" in shown or code not in codes:
        failures.append(f"proximity {' '.join(map(repr, args))} (env {env}) exited {code}:\n{shown}")
    elif code and not shown.strip():
        failures.append(f"proximity {' '.join(map(repr, args))} (env {env}) failed with no message")


def check_all(runs: list[tuple]) -> list[str]:
    """Every (args, env, codes) through the command's own entry point (``proximity.cli:app``), in this
    process: a refusal costs no interpreter start (0.5 s each, hundreds of them). The first run of each
    command also goes through a real process, so the console script itself is covered too."""
    failures: list[str] = []
    runner = CliRunner()
    first = {}
    for args, env, codes in runs:
        first.setdefault(args[0] if args[0] not in ("ct", "sandbox", "token") else " ".join(args[:2]), (args, env, codes))
        result = runner.invoke(app, args, env=env, prog_name="proximity")
        shown = result.output + (result.stderr if result.stderr_bytes else "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            shown += "\nTraceback (in process):\n" + "".join(traceback.format_exception(result.exception))
        _judge(failures, args, env, codes, result.exit_code, shown)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in pool.map(lambda run: check(failures, *run), first.values()):
            pass
    return failures


def test_every_command_is_enumerated_and_can_act_on_a_sandbox():
    """The other tests rely on --sandbox to keep every command off the machine itself."""
    assert KNOWN <= set(commands()), sorted(commands())
    for words, command in commands().items():
        assert words.startswith("sandbox ") or "--sandbox" in options(command), words


def test_bad_settings_in_the_environment_and_the_config_file(sandbox, tmp_path):
    bad_toml = tmp_path / "proximity.toml"
    bad_toml.write_text("bridge = \n")
    wrong_type = tmp_path / "wrong-type.toml"
    wrong_type.write_text('upstream_dns = 5\nlease_time = 12\n')
    bad = [*({key: value} for key, value in BAD_SETTINGS.items()), {"PROXIMITY_CONFIG": str(wrong_type)}]
    runs = []
    for i, (words, command) in enumerate(commands().items()):
        if words.startswith("sandbox "):  # they do not read Proximity's settings
            continue
        # Each command with a malformed file and one bad value (taken in turn: each value meets
        # several commands, and the run stays short).
        for env in ({"PROXIMITY_CONFIG": str(bad_toml)}, bad[i % len(bad)]):
            runs.append((argv(words, command, sandbox.name), env, (2,)))
    failures = check_all(runs)
    assert not failures, "\n\n".join(failures)


def test_a_missing_sandbox(sandbox):
    runs = []
    for words, command in commands().items():
        if words == "sandbox create":
            runs += [(argv(words, command, name), None, (1, 2)) for name in ("Bad/Name", "x" * 40, "-x")]
        elif words != "sandbox list":  # it names no sandbox
            runs.append((argv(words, command, "nosuch1"), None, (1, 2)))
    failures = check_all(runs)
    assert not failures, "\n\n".join(failures)


BAD_ARGUMENTS = {
    "hostname": ["101", "localhost", "wpad", "app\n", "web.example.com", "-web", "x" * 64, "", "web 01"],
    "ref": ["nosuch", "²", "99999999999999999999", "", "0"],
    "vmid": ["abc", "99999", "-1", "1e3"],
    "name": ["nosuch1", "Bad/Name"],
}

BAD_CLIENT_NAMES = {"app\n", "-web", "x" * 64, "", "web 01", "web.example.com"}


def test_bad_arguments(sandbox):
    runs = []
    for words, command in commands().items():
        for name in arguments(command):
            for value in BAD_ARGUMENTS.get(name, []):
                if words in ("sandbox create", "zone create") and value == "nosuch1":
                    continue  # creating it would make it
                if words.startswith("sandbox ") and name == "hostname" and value not in BAD_CLIENT_NAMES:
                    continue  # a client, not a container: any RFC 1123 label will do
                runs.append((argv(words, command, sandbox.name, {name: value}), None, (1, 2)))
    for args in (["up", "--uplink", "eth0\n"], ["up", "--interfaces-file", "/nonexistent/interfaces"],
                 ["down", "--interfaces-file", "/nonexistent/interfaces"], ["serve", "--port", "0"],
                 ["serve", "--host", "0.0.0.0", "--cert", "/nonexistent.pem", "--key", "/nonexistent.key"],
                 ["serve", "--host", "0.0.0.0", "--cert", "/etc/hostname"], ["ct", "create", "web-01", "--memory", "1"],
                 ["ct", "create", "web-01", "--cores", "0"], ["migrate", "100", "--timeout", "x"]):
        runs.append(([*args, "--sandbox", sandbox.name], None, (1, 2)))
    failures = check_all(runs)
    assert not failures, "\n\n".join(failures)


def test_a_damaged_interfaces_file(sandbox):
    """A lone END marker: what Proxmox's writer leaves of the managed block."""
    path = sandbox.interfaces_file
    original = path.read_text()
    path.write_text(original + f"\n{END_MARKER}\n")
    failures: list[str] = []
    try:
        for args in (["up"], ["up", "--dry-run"], ["down"], ["down", "--dry-run"]):
            check(failures, [*args, "--sandbox", sandbox.name], codes=(0, 1, 2))
        for args in (["status"], ["doctor"], ["leases"], ["ct", "list"]):  # status: 3 is down as requested
            check(failures, [*args, "--sandbox", sandbox.name], codes=(0, 1, 2, 3))
    finally:
        proximity("down", "--sandbox", sandbox.name, check=False)
        path.write_text(original)
    assert not failures, "\n\n".join(failures)


def test_an_api_that_cannot_be_used(sandbox):
    runs = []
    for words, command in commands().items():
        if "--api" not in options(command):
            continue
        base = argv(words, command, sandbox.name) + ["--token", "not-the-token"]
        for api in ("http://127.0.0.1:1", "https://127.0.0.1:1", "nonsense", "ftp://127.0.0.1/", "http://",
                    "http://198.51.100.7:8080"):  # plain http to the LAN: refused before connecting
            runs.append(([*base, "--api", api], None, (1, 2)))
        runs.append(([*base, "--api", "https://127.0.0.1:1", "--api-ca", "/nonexistent.pem"], None, (1, 2)))
    failures = check_all(runs)
    assert not failures, "\n\n".join(failures)
