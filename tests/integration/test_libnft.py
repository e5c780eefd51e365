"""The ruleset applied in-process (libnftables, a thread that setns()es into the namespace), in a bare
namespace of this module's own: it lands there and nowhere else, a refused ruleset changes nothing,
kill -9 leaves the old table or the new one, and without libnftables the nft binary does the same."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from ipaddress import ip_interface
from pathlib import Path

import pytest

from proximity.errors import HostError
from proximity.host import Host
from proximity.host.dryrun import DryRunHost
from proximity.network import libnft, nft
from proximity.network.changes import Env
from proximity.network.nft_changes import ApplyRuleset, live_digest
from proximity.settings import load_settings

NS = f"nl{os.getpid() % 100000}"
pytestmark = pytest.mark.skipif(libnft.library() is None, reason="libnftables is not installed")


def spec(zones: int = 2) -> nft.FirewallSpec:
    return nft.FirewallSpec(tuple(nft.FirewallZone(f"z{i}", f"br{i}", (ip_interface(f"10.{70 + i // 250}.{i % 250}.1/24"),
                                                                         ip_interface(f"fd70:{i:x}::1/64")))
                                  for i in range(zones)), "up0")


def tables(netns: str | None) -> str:
    argv = ["nft", "list", "tables"]
    return subprocess.run(["ip", "netns", "exec", netns, *argv] if netns else argv, capture_output=True,
                          text=True, timeout=30, check=True).stdout


@pytest.fixture
def env(tmp_path: Path):
    subprocess.run(["ip", "netns", "add", NS], check=True, timeout=30)
    try:
        settings = load_settings(dnsmasq_conf=str(tmp_path / "dnsmasq.conf"), state_dir=str(tmp_path / "state"),
                                 leases_file=str(tmp_path / "leases"))
        settings.ruleset_file.parent.mkdir(parents=True, exist_ok=True)
        yield Env(Host(NS), settings, None)
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False, timeout=30)


def apply(env: Env, text: str) -> ApplyRuleset:
    change = ApplyRuleset(env.settings.ruleset_file, text, env.host.read_text(env.settings.ruleset_file))
    change.apply(env)
    return change


def test_the_table_lands_in_the_namespace_and_nowhere_else(env):
    root_before, own_ns = tables(None), os.readlink("/proc/thread-self/ns/net")
    apply(env, nft.render_table(spec()))
    assert "table inet proximity" in tables(NS)
    assert tables(None) == root_before, "the root namespace's tables changed"
    assert os.readlink("/proc/thread-self/ns/net") == own_ns  # the calling thread never switched
    recorded = env.host.read_text(env.settings.ruleset_state_file)
    # read back in-process, it digests as `nft -j list ruleset` does: a converged host plans nothing
    assert f'"live": "{live_digest(env)}"' in recorded


def test_a_refused_ruleset_changes_nothing_and_names_the_line(env):
    apply(env, nft.render_table(spec()))
    before, state = live_digest(env), env.host.read_text(env.settings.ruleset_state_file)
    bad = nft.render_table(spec(3)).replace("masquerade\n", "masqeurade\n", 1)
    line = bad.splitlines().index(next(s for s in bad.splitlines() if s.endswith("masqeurade"))) + 1
    with pytest.raises(HostError, match=rf"not changed: {env.settings.ruleset_file}:{line}:.*syntax error"):
        apply(env, bad)
    assert live_digest(env) == before
    assert env.host.read_text(env.settings.ruleset_state_file) == state
    assert env.host.read_text(env.settings.ruleset_file) == nft.render_table(spec())


def test_undo_puts_the_old_table_back(env):
    apply(env, nft.render_table(spec()))
    before = live_digest(env)
    change = apply(env, nft.render_table(spec(4)))
    assert live_digest(env) != before
    change.undo(env)
    assert live_digest(env) == before


def test_a_missing_namespace_is_an_error_not_the_root_namespace(env):
    root_before = tables(None)
    gone = Env(Host(f"{NS}-gone"), env.settings, None)
    with pytest.raises(HostError, match="does not exist"):
        apply(gone, nft.render_table(spec()))
    assert tables(None) == root_before


def test_without_libnftables_the_nft_binary_does_the_same(env, monkeypatch):
    monkeypatch.setattr(libnft, "library", lambda: None)
    apply(env, nft.render_table(spec()))
    assert "table inet proximity" in tables(NS)
    assert f'"live": "{live_digest(env)}"' in env.host.read_text(env.settings.ruleset_state_file)
    before = live_digest(env)
    with pytest.raises(HostError, match="nft refused the ruleset.*/dev/stdin:"):
        apply(env, nft.render_table(spec(3)).replace("masquerade\n", "masqeurade\n", 1))
    assert live_digest(env) == before


def test_a_dry_run_checks_and_records_nft_f_file(env):
    dry = Env(DryRunHost(netns=NS), env.settings, None)
    apply(dry, nft.render_table(spec()))
    path = str(env.settings.ruleset_file)
    assert ["ip", "netns", "exec", NS, "nft", "-f", path] in dry.host.commands
    assert "proximity" not in tables(NS) and not env.settings.ruleset_file.exists()
    with pytest.raises(HostError, match="nft refused"):
        apply(dry, nft.render_table(spec()).replace("masquerade\n", "masqeurade\n", 1))


KILLED = r"""
import sys
from proximity.network import libnft
libnft.apply(libnft.library(), sys.argv[1], sys.argv[2], {})
"""


def test_kill_9_of_an_in_process_apply_leaves_the_old_table_or_the_new_one(env, tmp_path):
    big = tmp_path / "big.nft"
    big.write_text(nft.render_table(spec(400)))
    apply(env, big.read_text())
    new = live_digest(env)
    seen, killed, rng = set(), 0, random.Random(2)
    for _ in range(12):
        apply(env, nft.render_table(spec()))
        old = live_digest(env)
        proc = subprocess.Popen([sys.executable, "-c", KILLED, str(big), NS])
        time.sleep(rng.uniform(0, 1.0))  # python starts and loads the table in 0.5-1.4 s here
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(timeout=10) == -signal.SIGKILL
        now = live_digest(env)
        assert now in (old, new), "a mix of the two tables"
        seen.add("new" if now == new else "old")
    assert killed  # which table each kill left depends on timing; either is right


def test_without_a_namespace_to_check_in_the_check_is_nft_c(env, monkeypatch):
    """unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN (a dry run as a user): the check falls back to ``nft -c``."""
    def refused(*args):
        raise libnft.NftError("unshare: Operation not permitted")
    monkeypatch.setattr(libnft, "check", refused)
    with pytest.raises(HostError, match="nft refused the ruleset.*/dev/stdin:"):
        apply(env, nft.render_table(spec()).replace("masquerade\n", "masqeurade\n", 1))
    apply(env, nft.render_table(spec()))
    assert "table inet proximity" in tables(NS)
