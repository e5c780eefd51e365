"""The status the API serves: a snapshot, refreshed when something changed, not per request."""

from __future__ import annotations

import threading
import time

from proximity.network.manager import NetworkManager, NetworkStatus


class StatusSnapshot:
    def __init__(self, network: NetworkManager, max_age: float = 2.0):
        self.network = network
        self.max_age = max_age
        self._status: NetworkStatus | None = None
        self._taken = 0.0
        self._lock = threading.Lock()

    def get(self) -> NetworkStatus:
        with self._lock:
            if self._status is None or time.monotonic() - self._taken > self.max_age:
                self._status = self.network.status()
                self._taken = time.monotonic()
            return self._status

    def invalidate(self) -> None:
        with self._lock:
            self._status = None

    def close(self) -> None:
        """Nothing to stop in this simple snapshot."""
