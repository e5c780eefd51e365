import os
import signal

import pytest


@pytest.fixture(autouse=True)
def _no_host_config(monkeypatch, tmp_path):
    """Tests never read the machine's /etc/proximity/proximity.toml or PROXIMITY_* variables."""
    for key in list(os.environ):
        if key.startswith("PROXIMITY_") and key != "PROXIMITY_SANDBOX_ROOT":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROXIMITY_CONFIG", str(tmp_path / "absent.toml"))


def pytest_configure(config):
    """A terminated test run still tears down its namespaces and daemons."""

    main = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != main:  # a forked helper (pyroute2 forks some) must just die
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
