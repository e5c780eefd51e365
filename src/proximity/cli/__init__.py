"""The `proximity` command: Rich tables for people, --json for scripts; one module per command group."""

# Imported in the order `--help` lists them; each module registers its commands on `app`.
from proximity.cli import network  # noqa: F401, I001
from proximity.cli import containers, zones, service, sandbox  # noqa: F401
from proximity.cli.common import app

__all__ = ["app"]
