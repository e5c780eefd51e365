"""The CLI talking to a running `proximity serve`: submit a job, show its progress live."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from proximity.containers.base import BackendError
from proximity.settings import SettingsError


def run_job(api: str, token: str, method: str, path: str, body: dict[str, Any], console: Console) -> Any:
    """Start a long operation on the service and follow its events with a progress bar; return its result."""
    with httpx.Client(base_url=api.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SettingsError(f"cannot reach the Proximity service at {api}: {exc}; is `proximity serve` running?") from None
        if response.status_code >= 400:
            detail = response.json().get("detail") if response.headers.get("content-type", "").startswith(
                "application/json") else response.text
            raise SettingsError(f"the service refused ({response.status_code}): {detail}")
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
        final = client.get(f"/api/v1/jobs/{job['id']}").json()["data"]
    if final["status"] != "succeeded":
        raise BackendError(f"{job['kind']} {job['target']} failed: {final['error']}")
    return final["result"]
