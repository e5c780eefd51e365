"""Integration fixtures: a real sandbox host (network namespaces), torn down even on failure."""

from __future__ import annotations

import os

import pytest

from proximity import sandbox as sandboxes
from tests.integration.tools import proximity


def unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}"


@pytest.fixture(scope="module")
def sandbox():
    name = unique_name("pn")
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    try:
        yield sb
    finally:
        sandboxes.destroy(name)


@pytest.fixture(scope="module")
def network(sandbox):
    """The sandbox host with Proximity's network up (`proximity up`), taken down with --purge after
    (--force: a test that failed may leave a container on the bridge)."""
    proximity("up", "--sandbox", sandbox.name)
    yield sandbox
    proximity("down", "--purge", "--force", "--sandbox", sandbox.name, check=False)
