"""Jobs: long operations (create, migrate, initialize) run in the background with steps and progress.

A job records every event; readers poll ``GET /jobs/{id}`` or follow ``/jobs/{id}/events``
(server-sent events), which replays what happened so far and then streams the rest.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    id: str
    kind: str
    target: str
    status: str = "queued"  # queued, running, succeeded, failed
    progress: int = 0  # percent
    steps: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    _events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "target": self.target, "status": self.status,
            "progress": self.progress, "steps": self.steps, "result": self.result, "error": self.error,
            "created": self.created, "finished": self.finished,
        }

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")

    def _emit(self, event: str, **data: Any) -> None:
        with self._changed:
            self._events.append({"event": event, "data": {"job": self.id, **data}})
            self._changed.notify_all()

    def step(self, text: str, progress: int | None = None) -> None:
        """Called by the work itself: one more step done."""
        if progress is not None:
            self.progress = max(self.progress, min(progress, 99))
        self.steps.append({"time": time.time(), "text": text})
        self._emit("step", text=text, progress=self.progress)

    def events(self, timeout: float = 300) -> Iterator[dict[str, Any]]:
        """Every event so far, then new ones as they come, until the job ends."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                while seen == len(self._events) and not self.done:
                    if not self._changed.wait(timeout=min(15.0, max(0.0, deadline - time.monotonic()))):
                        break
                pending, seen = self._events[seen:], len(self._events)
            yield from pending
            if self.done and seen == len(self._events):
                return
            if time.monotonic() > deadline:
                return
            if not pending:
                yield {"event": "ping", "data": {"job": self.id}}


class JobRunner:
    def __init__(self, workers: int = 2, keep: int = 200):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="proximity-job")
        self._jobs: dict[str, Job] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def submit(self, kind: str, target: str, work: Callable[[Job], Any]) -> Job:
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, target=target)
        with self._lock:
            self._jobs[job.id] = job
            for old in list(self._jobs)[: max(0, len(self._jobs) - self._keep)]:
                if self._jobs[old].done:
                    del self._jobs[old]
        job._emit("queued", kind=kind, target=target)
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def touching(self, *targets: str) -> list[Job]:
        """The jobs kept whose target is one of ``targets`` (a container's hostname or id), newest first."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.target in targets]
        return sorted(jobs, key=lambda job: job.created, reverse=True)

    def _run(self, job: Job, work: Callable[[Job], Any]) -> None:
        job.status = "running"
        job._emit("running")
        try:
            job.result = work(job)
            job.status, job.progress = "succeeded", 100
        except Exception as exc:  # the job reports it; the service keeps running
            job.status, job.error = "failed", str(exc)
        job.finished = time.time()
        job._emit("done", status=job.status, progress=job.progress, result=job.result, error=job.error)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
