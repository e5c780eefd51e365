"""A test double of the Proxmox VE REST API, checked against the official API schema.

``schema.Schema`` validates requests the way Proxmox's ``PVE::JSONSchema`` does;
``server.PveDouble`` serves ``/api2/json`` over plain HTTP and hands the actual work on
containers to a ``Realizer`` (``server.MemoryRealizer`` for tests without containers).
"""

from .schema import Schema
from .server import MemoryRealizer, PveDouble, Realizer

__all__ = ["MemoryRealizer", "PveDouble", "Realizer", "Schema"]
