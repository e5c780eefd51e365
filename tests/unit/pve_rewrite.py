"""Proxmox's own interfaces-file writer as a test oracle (see ../shared/pve/README.md).

``pve-rewrite < interfaces`` prints the file the way Proxmox writes it back after any
network change in its GUI or API. Starting it costs ~0.3 s of module loading, so the tests
keep one perl process (``pve_rewrite.pl``) that runs the unchanged script per request.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = "PVE_REWRITE"
_REPO = Path(__file__).resolve().parents[2]
# Proxmox orders some values (OVS options) by perl's randomised hash order: fix the seed so that
# the oracle gives the same answer every time.
_PERL_ENV = {**os.environ, "PERL_HASH_SEED": "0", "PERL_PERTURB_KEYS": "0"}


def resolve_path() -> Path:
    """``$PVE_REWRITE`` if set; else ``<repo>/../shared/pve/pve-rewrite`` (where CI puts its copy of
    shared/), falling back to ``/work/shared/pve/pve-rewrite``."""
    env = os.environ.get(ENV)
    candidates = [Path(env)] if env else [
        _REPO.parent / "shared" / "pve" / "pve-rewrite",
        Path("/work/shared/pve/pve-rewrite"),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no pve-rewrite at {', '.join(map(str, candidates))} (set ${ENV})")


class PveRewriteError(Exception):
    """Proxmox's writer refused the file (for example a bridge port without a stanza)."""


class PveRewrite:
    """``rewrite(text)`` -> the text as Proxmox writes it. Call :meth:`close` when done."""

    def __init__(self, script: Path | None = None) -> None:
        self.script = script or resolve_path()
        self._proc = subprocess.Popen(
            ["perl", str(Path(__file__).with_name("pve_rewrite.pl")), str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_PERL_ENV,
        )
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if text not in self._cache:
            self._cache[text] = self._ask(text)
        return self._cache[text]

    def _ask(self, text: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        data = text.encode()
        self._proc.stdin.write(b"%d\n" % len(data) + data)
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode()
        if not header:
            raise RuntimeError(f"pve_rewrite.pl exited with {self._proc.wait()} (are perl's modules installed?)")
        status, size = header.split()
        body = self._proc.stdout.read(int(size)).decode()
        if status != "ok":
            raise PveRewriteError(body.strip())
        return body

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def run_once(text: str, script: Path | None = None) -> str:
    """One plain run of the real script as a subprocess (to check the long-lived process against)."""
    result = subprocess.run(
        [str(script or resolve_path())], input=text.encode(), capture_output=True, check=False,
        env=_PERL_ENV,
    )
    if result.returncode != 0:
        raise PveRewriteError(result.stderr.decode().strip())
    return result.stdout.decode()
