"""One revert mechanism for everything that changes more than one thing.

The shape of Incus's ``revert`` package: register the undo of each change as it is made; on the way out, ``fail()`` runs the undos in
reverse, ``success()`` drops them. Used as a context manager, an exception that leaves the block
(kill -9 aside) runs ``fail()``, and an undo that fails too is noted on that exception::

    with Reverter() as revert:
        write(path, new)
        revert.add(f"restore {path}", lambda: write(path, old))
        reload()
        revert.success()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Reverter:
    def __init__(self) -> None:
        self._undos: list[tuple[str, Callable[[], object]]] = []
        self.failures: list[str] = []  # undos that raised, as "description: error"

    def add(self, description: str, undo: Callable[[], object]) -> None:
        """Register how to undo the change just made."""
        self._undos.append((description, undo))

    def fail(self) -> list[str]:
        """Run every undo, newest first, even when one raises; return those that failed."""
        while self._undos:
            description, undo = self._undos.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                self.failures.append(f"{description}: {exc}")
        return self.failures

    def success(self) -> None:
        """Keep every change: forget the undos."""
        self._undos.clear()

    @property
    def pending(self) -> list[str]:
        """Descriptions of the undos that would run, oldest first."""
        return [description for description, _ in self._undos]

    def __enter__(self) -> Reverter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leaving without success() undoes everything; an undo that failed is noted on the error."""
        if self._undos:
            self.fail()
            if exc is not None:
                for failure in self.failures:
                    exc.add_note(f"undoing also failed: {failure}")


@contextlib.contextmanager
def reverting(what: str) -> Iterator[Reverter]:
    """A Reverter whose undo problems are not lost: they join the error (a HostError then)."""
    from proximity.errors import HostError

    with Reverter() as revert:
        try:
            yield revert
        except Exception as exc:
            if revert.fail():
                raise HostError(f"{exc}; undoing {what} also failed: {'; '.join(revert.failures)} "
                                "(`proximity gc` removes what is left)") from exc
            raise
        revert.success()
