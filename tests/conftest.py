import os
import signal

import pytest

from hypothesis import settings as hypothesis_settings

# "ci", the default, draws the same examples every run, so a submission passes or fails for its
# code, not for a lucky draw; HYPOTHESIS_PROFILE=explore draws new ones (and keeps failures found).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile("explore", deadline=None, max_examples=500)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def pytest_collection_modifyitems(config, items):
    """Mark every test that makes network namespaces `root`, so `-m "not root"` is the fast tier.

    Everything under tests/integration makes namespaces unless it says otherwise with
    `@pytest.mark.no_namespaces`; a test elsewhere that makes them says so with `@pytest.mark.root`.
    (A `pytestmark` in a conftest.py applies to nothing, which is how this went wrong before.)
    """
    for item in items:
        in_integration = "integration" in item.path.parts
        if item.get_closest_marker("root") or (in_integration and not item.get_closest_marker("no_namespaces")):
            item.add_marker(pytest.mark.root)
            item.add_marker(NEEDS_ROOT)


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
