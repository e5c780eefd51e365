"""The CLI talking to a running `proximity serve`: submit a job, show its progress live."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from proximity.errors import ConflictError, HostError, InputError, NotFoundError, ProximityError, ProxmoxError

# The service's HTTP status, back to the kind of error it came from (the inverse of errors.http_status).
STATUS_ERRORS: dict[int, type[ProximityError]] = {404: NotFoundError, 409: ConflictError, 502: ProxmoxError}


def check_url(api: str, insecure_http: bool) -> str | None:
    """Refuse a URL that would send the token in clear text over the network; a warning if allowed."""
    from proximity.api.tls import is_loopback  # noqa: PLC0415

    url = httpx.URL(api) if "://" in api else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"--api {api!r} is not an http:// or https:// URL: give one such as https://pve1:8080")
    if url.scheme == "http" and not is_loopback(url.host):
        if not insecure_http:
            raise InputError(
                f"--api {api}: plain http:// to {url.host} would send the API token across the network in clear "
                f"text; use https://{url.host}:{url.port or 80} (`proximity serve` speaks HTTPS on any address "
                "but loopback), or pass --insecure-http if this network is trusted"
            )
        return (f"--insecure-http: the API token goes to {url.host} in clear text; anyone on the path can read it "
                "and use the API. Use https:// instead.")
    return None


def call(api: str, token: str, method: str, path: str, verify: ssl.SSLContext | bool = True,
         whole: bool = False) -> Any:
    """One request that is not a job (a read, start, stop, destroy); return the answer's ``data`` (or all of it)."""
    with httpx.Client(base_url=api.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      verify=verify) as client, _answers(api):
        response = client.request(method, path)
        _raise_for(response)
        return response.json() if whole else response.json()["data"]


def run_job(api: str, token: str, method: str, path: str, body: dict[str, Any], console: Console,
            verify: ssl.SSLContext | bool = True) -> Any:
    """Start a long operation on the service and follow its events with a progress bar; return its result."""
    with httpx.Client(base_url=api.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30,
                      verify=verify) as client:
        with _answers(api):
            response = client.request(method, path, json=body)
            _raise_for(response)
            if response.status_code == 200:  # a dry run answers at once
                return response.json()["data"]
            job = response.json()["job"]
            with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console) as bar:
                task = bar.add_task(f"{job['kind']} {job['target']}", total=100)
                with client.stream("GET", f"/api/v1/jobs/{job['id']}/events", timeout=None) as stream:
                    event = None
                    for line in stream.iter_lines():
                        if line.startswith("event: "):
                            event = line.removeprefix("event: ")
                        elif line.startswith("data: "):
                            data = json.loads(line.removeprefix("data: "))
                            if event == "step":
                                bar.console.print(f"[green]✓[/] {data['text']}", highlight=False)
                                bar.update(task, completed=data["progress"])
                            elif event == "done":
                                bar.update(task, completed=data["progress"])
                                break
            final = client.get(f"/api/v1/jobs/{job['id']}")
            _raise_for(final)
            final = final.json()["data"]
    if final["status"] != "succeeded":
        raise HostError(f"{job['kind']} {job['target']} failed: {final['error']}")
    return final["result"]


@contextmanager
def _answers(api: str) -> Iterator[None]:
    """The service's failures to answer, as Proximity's errors that say what to do."""
    try:
        yield
    except ProximityError:
        raise
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise HostError(
                f"the service at {api} presented a certificate this machine does not trust ({exc}): pass "
                "--api-ca with the service's certificate (its fingerprint: `proximity token show --json` "
                "on the service's host)") from None
        raise HostError(f"cannot reach the Proximity service at {api}: {exc}; is `proximity serve` running?") from None
    except httpx.HTTPError as exc:
        raise HostError(f"the Proximity service at {api} failed to answer: {exc!r}") from None
    except (ValueError, KeyError) as exc:
        raise HostError(f"the service at {api} gave an answer that is not Proximity's ({exc!r}): "
                        "is --api the URL of `proximity serve`?") from None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail = response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        detail = response.json().get("detail", detail)
        if isinstance(detail, list):  # the 422: [{"loc": [...], "msg": a sentence that names its field}]
            detail = " ".join(str(item.get("msg")) for item in detail)
    status = response.status_code
    kind = STATUS_ERRORS.get(status) or (InputError if status < 500 else HostError)
    raise kind(f"the service refused ({status}): {detail}")
