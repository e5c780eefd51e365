"""The Host helpers the sandbox and the lxc backend use instead of their own runner, writer and signals."""

from __future__ import annotations

import os
import subprocess

import pytest

from proximity.errors import HostError
from proximity.host import CommandError, DryRunHost, Host, pid_alive


def test_run_raises_unless_check_is_off():
    host = Host()
    with pytest.raises(CommandError, match=r"`sh -c 'echo oops >&2; exit 3'` exited with 3: oops"):
        host.run(["sh", "-c", "echo oops >&2; exit 3"])
    result = host.run(["sh", "-c", "echo out; exit 3"], check=False)
    assert (result.returncode, result.stdout) == (3, "out\n")


def test_a_missing_program_or_a_timeout_raises_even_without_check():
    host = Host()
    with pytest.raises(CommandError, match="command not found") as missing:
        host.run(["proximity-no-such-program"], check=False)
    assert missing.value.returncode == 127
    with pytest.raises(CommandError, match="timed out") as slow:
        host.run(["sleep", "5"], timeout=0.2, check=False)
    assert slow.value.timed_out


def test_ip_runs_in_the_namespace_with_ip_n():
    dry = DryRunHost(netns="ns1")
    dry.ip("link", "set", "lo", "up")
    assert dry.commands == [["ip", "-n", "ns1", "link", "set", "lo", "up"]]
    assert Host().ip("-V").ok


def test_terminate_stops_a_process_and_reports_no_survivor():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert Host().terminate([proc.pid, os.getpid(), 1], grace=5) == []  # never itself nor init
        proc.wait(timeout=5)
        assert not pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_terminate_kills_what_ignores_sigterm():
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"  # the trap is set
        assert Host().terminate([proc.pid], grace=0.3) == []
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_mkdir_sets_the_mode_and_claims_a_name_atomically(tmp_path):
    path = tmp_path / "a" / "claim"
    old = os.umask(0o077)
    try:
        Host().mkdir(path, mode=0o755, exist_ok=False)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o755
    with pytest.raises(FileExistsError):
        Host().mkdir(path, exist_ok=False)
    Host().mkdir(path)  # exists: fine
    (tmp_path / "file").write_text("")
    with pytest.raises(HostError, match="a file of that name exists"):
        Host().mkdir(tmp_path / "file")


def test_remove_tree_removes_a_link_not_its_target(tmp_path):
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    tree = tmp_path / "tree"
    tree.mkdir()
    Host().symlink(tree / "link", target)
    Host().remove_tree(tree)
    assert not tree.exists() and (target / "sub").is_dir()
    Host().remove_tree(tree)  # gone: nothing to do


def test_copy_tree_keeps_symlinks(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    (source / "l").symlink_to("f")
    Host().copy_tree(source, tmp_path / "dst")
    assert (tmp_path / "dst/l").is_symlink() and (tmp_path / "dst/f").read_text() == "x"
    with pytest.raises(HostError, match="cannot copy"):
        Host().copy_tree(source, tmp_path / "dst")


def test_a_dry_run_touches_nothing(tmp_path):
    dry = DryRunHost()
    dry.mkdir(tmp_path / "new", mode=0o700, exist_ok=False)
    dry.copy_tree(tmp_path, tmp_path / "copy")
    dry.remove_tree(tmp_path)
    assert dry.terminate([os.getpid()]) == []
    assert list(tmp_path.iterdir()) == []
    assert dry.commands == [["cp", "-a", str(tmp_path), str(tmp_path / "copy")], ["rm", "-r", str(tmp_path)],
                            ["kill", "-TERM", str(os.getpid())]]
