"""The API's request and response models, and the errors every operation documents."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StrictBool

from proximity.settings import LABEL_RE, RESERVED_HOSTNAMES, check_hostname
from proximity.spec.naming import ZONE_NAME_RE

# Body booleans are StrictBool: JSON true or false, never 0.0 read as false (found by fuzzing).


# The hostname check's syntax for the schema: a label, not all digits, not a reserved name (any case).
def _any_case(name: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


HOSTNAME_PATTERN = (f"^(?![0-9]+$)(?!(?:{'|'.join(sorted(_any_case(n) for n in RESERVED_HOSTNAMES))})$)"
                    f"{LABEL_RE.pattern}$")


class CreateContainer(BaseModel):
    # Checked by the one hostname check (settings.check_hostname); the schema shows its syntax.
    hostname: Annotated[str, AfterValidator(check_hostname)] = Field(
        max_length=63, json_schema_extra={"pattern": HOSTNAME_PATTERN},
        description="RFC 1123 label, e.g. nginx-01; not all digits (that reads as a container id), "
                    "not a reserved name (localhost, wpad, gateway...)")
    memory: int = Field(256, ge=16, le=1048576, description="MiB")
    cores: int = Field(1, ge=1, le=8192)
    template: str | None = Field(None, max_length=255)
    start: StrictBool = True


class Migrate(BaseModel):
    dry_run: StrictBool = False
    timeout: float = Field(60, gt=0, le=3600)


class Initialize(BaseModel):
    dry_run: StrictBool = False


ZONE_PATTERN = f"^{ZONE_NAME_RE.pattern}$"
# A zone's fields: their syntax is in the schema only; `zone create`'s own checks read them, so a wrong
# value is a 400 in the CLI's words, naming the field. A value of the right syntax may still be refused
# (a range outside its subnet, an overlap with the host or another zone): no schema can say that.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _syntax(pattern: str) -> dict[str, Any]:
    return {"json_schema_extra": {"pattern": pattern}}


class CreateZone(BaseModel):
    name: str = Field(max_length=32, description="1 to 32 of a-z, 0-9 and '-', starting with a letter, e.g. web",
                      **_syntax(ZONE_PATTERN))
    subnet: str | None = Field(None, max_length=18, description="IPv4 subnet, e.g. 10.20.0.0/24 (the gateway is .1); "
                               "default: a free /24", **_syntax(rf"^{_IPV4}/(?:[0-9]|[12][0-9]|3[0-2])$"))
    domain: str | None = Field(None, max_length=253, description="DNS domain of two labels or more (default: "
                               "NAME.internal)", **_syntax("^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"))
    dhcp_range: str | None = Field(None, max_length=31, description="inside the subnet, e.g. "
                                   "10.20.0.100-10.20.0.250 (needs subnet)", **_syntax(rf"^{_IPV4}-{_IPV4}$"))
    ipv6: str | None = Field(None, max_length=43, description="auto (a /64 of the host's ULA prefix; the default), "
                             "off, or a routed /64", **_syntax("^(?:auto|off|[0-9A-Fa-f:]{2,39}/64)$"))
    host_services: StrictBool | None = Field(None, description="may the zone reach the host's own services (ssh, 8006)")
    dry_run: StrictBool = False


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {  # documented on every operation (schemathesis checks them)
    400: {"model": Problem, "description": "Refused: a setting or the request body is wrong; `detail` says why"},
    401: {"model": Problem, "description": "Missing or wrong bearer token"},
    404: {"model": Problem, "description": "No such container, job or zone"},
    409: {"model": Problem, "description": "Refused: name in use, pool full, or the backend refused"},
    413: {"model": Problem, "description": "The request body is over 1 MiB"},
    500: {"model": Problem, "description": "An operation failed on the host (a command, a full disk); `detail` says what"},
    502: {"model": Problem, "description": "Proxmox refused or failed the request; `detail` carries its words"},
}
DRY_RUN = {200: {"description": "dry run: what would be done; nothing changed"}}
