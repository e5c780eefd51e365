"""Where settings come from (the config file, ``PROXIMITY_*`` variables) and their raw values as types."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from proximity.errors import SettingsError

ENV_PREFIX = "PROXIMITY_"
DEFAULT_CONFIG_FILE = Path("/etc/proximity/proximity.toml")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def convert(value: Any, hint: Any, name: str) -> Any:
    """A raw value as the field's type; ValueError with the reason."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return convert(value, hint, name)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        return value  # upstream_dns, zones: their own checks take what the file or the caller gives
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string: write it in quotes")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{value!r} is not true or false")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r} is not a number")
        try:
            number = hint(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"{value!r} is not {'a whole' if hint is int else 'a'} number") from None
        if hint is int and not isinstance(value, str) and number != value:
            raise ValueError(f"{value!r} is not a whole number")
        return number
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ValueError(f"{value!r} is not a path")
        return Path(value)
    if hint in (ipaddress.IPv4Interface, ipaddress.IPv4Address):
        what = "an IPv4 address with a prefix, such as 10.10.0.1/24" if hint is ipaddress.IPv4Interface \
            else "an IPv4 address, such as 10.10.0.100"
        if isinstance(value, hint):
            return value
        try:
            if not isinstance(value, str):
                raise ValueError
            return hint(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
    raise TypeError(f"no conversion for setting {name} of type {hint!r}")  # a programming error


def config_file() -> Path:
    return Path(os.environ.get("PROXIMITY_CONFIG", DEFAULT_CONFIG_FILE))


def config_file_values() -> dict[str, Any]:
    try:
        with open(config_file(), "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise SettingsError(f"cannot read {config_file()}: {exc}; fix the file or set PROXIMITY_CONFIG") from None


def environment_values(hints: dict[str, Any]) -> dict[str, Any]:
    """``PROXIMITY_<SETTING>`` variables. A list takes JSON (``["1.1.1.1"]``) or commas."""
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if get_origin(hint) is list:
            try:
                raw = json.loads(raw) if raw.lstrip().startswith("[") else [v for v in re.split(r"[\s,]+", raw) if v]
            except ValueError as exc:
                raise SettingsError(
                    f"setting {name!r} (env {ENV_PREFIX}{name.upper()}): not a JSON list ({exc}); "
                    'write it as ["1.1.1.1", "8.8.8.8"] or 1.1.1.1,8.8.8.8'
                ) from None
        values[name] = raw
    return values
