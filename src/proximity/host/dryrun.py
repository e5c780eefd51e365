"""``DryRunHost``: reads like ``Host``, records every change instead of making it (``--dry-run``)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proximity.host import Host, Result


@dataclass
class DryRunHost(Host):
    """Reads from the real host; records every change instead of making it."""

    netns: str | None = None
    files: list[dict[str, str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    _written: dict[str, str | None] = field(default_factory=dict)
    dry_run = True

    def run(self, argv: list[str], timeout: float = 30, check: bool = True, input: str | None = None) -> Result:
        return self._record(self._wrap(argv))

    def ip(self, *args: str, timeout: float = 15, check: bool = True) -> Result:
        return self._record(self._ip_argv(args))

    def _record(self, full: list[str]) -> Result:
        self.commands.append(full)
        return Result(full, 0, "", "")

    def write_text(self, path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
        before = self.read_text(path)
        self._written[str(path)] = text
        self.files.append({"path": str(path), "before": before or "", "after": text})

    def remove(self, path: Path) -> None:
        before = self.read_text(path)
        if before is not None:
            self._written[str(path)] = None
            self.files.append({"path": str(path), "before": before, "after": ""})

    def read_text(self, path: Path, errors: str = "strict") -> str | None:
        if str(path) in self._written:
            return self._written[str(path)]
        return super().read_text(path, errors)

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        self.commands.append(["kill", f"-{signal.Signals(sig).name.removeprefix('SIG')}", str(pid)])

    def terminate(self, pids: Iterable[int], grace: float = 3.0) -> list[int]:
        for pid in sorted(set(pids)):
            self.kill(pid, signal.SIGTERM)
        return []

    def mkdir(self, path: Path, mode: int | None = None, exist_ok: bool = True) -> None:
        """Nothing: a dry run creates no directory."""

    def symlink(self, path: Path, target: Path) -> None:
        self.commands.append(["ln", "-s", str(target), str(path)])

    def copy_tree(self, source: Path, target: Path) -> None:
        self.commands.append(["cp", "-a", str(source), str(target)])

    def remove_tree(self, path: Path) -> None:
        if path.exists() or path.is_symlink():
            self.commands.append(["rm", "-r", str(path)])

    @contextlib.contextmanager
    def lock(self, path: Path, timeout: float = 60, what: str = "") -> Iterator[None]:
        """Nothing to lock: a dry run changes nothing."""
        yield
