"""The final attack on state files (issue 14): every file Proximity reads, damaged in turn.

Each state file is made empty, truncated, non-UTF-8, of the wrong shape, deeply nested and huge; then
every command that reads it runs, as an admin would (status, doctor, leases, ct list, gc, up, down and
the API's status). Each must answer with a clear message or heal: never a traceback, never a crash,
never a damaged reservations file written over. The read-only commands of a case run at once, to keep
the module quick; `up` runs after them (it heals or refuses), `down` for the files it reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from proximity.api.app import Context, create_app
from proximity.errors import HostError
from proximity.host import Host
from proximity.network import intent as intents
from proximity.network.reservations import Reservations
from proximity.settings import load_settings
from tests.integration.tools import proximity

READERS = [("status",), ("doctor",), ("leases",), ("ct", "list"), ("gc", "--dry-run"), ("up", "--dry-run"),
           ("down", "--dry-run")]
HUGE = 4 * 1024 * 1024  # over every cap a reader might have


def files(s) -> dict[str, object]:
    return {
        "reservations": s.reservations_db, "reservations-bak": s.reservations_db.with_name("reservations.json.bak"),
        "leases": s.leases_file, "daemon-record": s.run_dir / f"{s.service_name}.state", "probe": s.probe_file,
        "intent": intents.intent_file(s), "token": s.api_token_file, "config": s.state_dir.parent / "attack.toml",
        "interfaces": s.interfaces_file, "interfaces-new": s.pending_interfaces_file,
    }


WRONG_SHAPE = {
    "reservations": b'{"hostname": "web-01"}', "reservations-bak": b"[1, 2]", "leases": b"not a lease line\n",
    "daemon-record": b'["pid", 5]', "probe": b'{"ok": "maybe", "checked": []}', "intent": b'{"state": "sideways"}',
    "token": b"tok en\nwith\x00nul", "config": b'bridge = 5\nsubnet = ["x"]\n',
    "interfaces": b"iface prox-net inet static\n\taddress nonsense\n\tbridge-ports\n",
    "interfaces-new": b"auto\niface\n",
}


def damages(name: str, original: bytes | None) -> dict[str, bytes]:
    text = original or b'[{"hostname": "x", "ip": "10.10.0.9"}]\n'
    return {
        "empty": b"",
        "truncated": text[: max(1, len(text) // 2)],
        "non-utf8": text[: len(text) // 2] + b"\xff\xfe\xc3(" + text[len(text) // 2:],
        "wrong-shape": WRONG_SHAPE[name],
        "nested": b"[" * 200_000,
        "huge": b"x" * HUGE,
    }


@pytest.fixture(scope="module")
def box(network, tmp_path_factory):
    """The sandbox with its network up, one reservation (web-01) and a token; a config file of its own."""
    s = load_settings(**network.settings_overrides())
    reservations = Reservations(s, Host(network.name))
    with reservations.locked():
        reservations.reserve("web-01", [])
        reservations.reserve("web-02", [])  # the second write keeps a .bak
    proximity("token", "create", "--sandbox", network.name)
    files(s)["config"].write_text("# proximity.toml for the attack\n")
    env = {"PROXIMITY_CONFIG": str(files(s)["config"])}
    yield network, s, env
    proximity("up", "--sandbox", network.name, check=False, env=env)


def clear(result, args) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, (args, out[-3000:])
    assert result.returncode in (0, 1, 2, 3), (args, result.returncode, out[-2000:])
    if result.returncode != 0:  # doctor and status say what is wrong on stdout
        assert out.strip(), (args, "failed without a word")


# Each command in a child forked from one process that has imported the CLI already: a fresh process each
# time, as a user's command is, without paying for the import every time.
FORKER = r"""
import json, os, sys, tempfile, traceback
from proximity.cli import app
results = []
for args in json.loads(sys.argv[1]):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        sys.argv = ["proximity", *args]
        try:
            app(args=args, prog_name="proximity")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc(); code = 99
        sys.stdout.flush(); sys.stderr.flush(); os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    out.seek(0); err.seek(0)
    results.append([code, out.read().decode(errors="replace"), err.read().decode(errors="replace")])
print(json.dumps(results))
"""


def run_all(sb, env, commands):
    argv = [[*args, "--sandbox", sb.name] for args in commands]
    done = subprocess.run([sys.executable, "-c", FORKER, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return [(args, subprocess.CompletedProcess(args, code, out, err))
            for args, (code, out, err) in zip(commands, json.loads(done.stdout))]


def api_status(s) -> tuple[int, str]:
    context = Context(s)
    try:
        with TestClient(create_app(context, start_background=False), raise_server_exceptions=False) as client:
            answer = client.get("/api/v1/system/network/status",
                                headers={"Authorization": f"Bearer {context.tokens.read() or 'x'}"})
            return answer.status_code, answer.text
    except HostError as exc:  # a damaged token file: the service will not start, and names the file
        assert "api-token" in str(exc) and "token rotate" in str(exc), exc
        return 503, str(exc)


CASES = [(f, d) for f in WRONG_SHAPE for d in ("empty", "truncated", "non-utf8", "wrong-shape", "nested", "huge")]
REAL_UP = ("empty", "nested")  # the others are read by `up --dry-run` only, to keep the module quick
DOWN_READS = {"intent", "interfaces", "reservations", "daemon-record", "config", "interfaces-new"}


@pytest.mark.parametrize("name,damage", CASES, ids=[f"{f}-{d}" for f, d in CASES])
def test_a_damaged_state_file_gets_a_clear_message_or_heals(box, name, damage):
    sb, s, env = box
    path = files(s)[name]
    original = path.read_bytes() if path.exists() else None
    bad = damages(name, original)[damage]
    path.write_bytes(bad)
    try:
        # Every reader for the kinds that differ most; status and the planner for the rest (time).
        readers = READERS if damage in ("empty", "wrong-shape", "nested") else [("status",), ("up", "--dry-run")]
        for args, result in run_all(sb, env, readers):
            clear(result, args)
        if name != "config":  # the API is built from settings the caller passes: the file is not read
            status, body = api_status(s)
            assert status in (200, 401, 503), (status, body[:500])
        if name == "reservations":
            assert path.read_bytes() == bad, "a damaged reservations file was written over"
        if damage not in REAL_UP:
            return
        up = proximity("up", "--sandbox", sb.name, check=False, env=env)
        clear(up, ("up",))
        if name == "reservations":
            assert path.read_bytes() == bad, "a damaged reservations file was written over"
            assert up.returncode != 0 and "is damaged" in up.stderr, up.stderr
        if name in DOWN_READS and up.returncode == 0:
            down = proximity("down", "--sandbox", sb.name, check=False, env=env)
            clear(down, ("down",))
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(original)
    if name in DOWN_READS or name in ("daemon-record", "leases"):
        healed = proximity("up", "--sandbox", sb.name, check=False, env=env)
        clear(healed, ("up",))
    route = subprocess.run(["ip", "-n", sb.name, "route", "show", "default"], capture_output=True, text=True)
    assert "default" in route.stdout, "the host lost its default route: cut off"


def test_after_the_attack_nothing_was_lost(box):
    sb, s, env = box
    up = proximity("up", "--sandbox", sb.name, check=False, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(proximity("status", "--json", "--sandbox", sb.name, env=env).stdout)
    assert status["health_status"] == "healthy", status
    names = {r.hostname for r in Reservations(s, Host(sb.name)).all()}
    assert {"web-01", "web-02"} <= names, names
