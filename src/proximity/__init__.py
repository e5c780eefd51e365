"""Proximity: a managed, isolated network for the containers of a Proxmox host."""


def version() -> str:
    """Proximity's version, from the package metadata (pyproject.toml's `version`): the one place it is kept."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("proximity")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
