import os

import pytest


@pytest.fixture(autouse=True)
def _no_host_config(monkeypatch, tmp_path):
    """Tests never read the machine's /etc/proximity/proximity.toml or PROXIMITY_* variables."""
    for key in list(os.environ):
        if key.startswith("PROXIMITY_") and key != "PROXIMITY_SANDBOX_ROOT":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROXIMITY_CONFIG", str(tmp_path / "absent.toml"))
