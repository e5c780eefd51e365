"""Jobs: long operations (create, migrate, initialize) run in the background with steps and progress.

A job records every event; readers poll ``GET /jobs/{id}`` or follow ``/jobs/{id}/events``
(server-sent events), which replays what happened so far and then streams the rest. A stream
waits on the event loop, never in a worker thread (a thread held per stream starved every other
request), and the runner bounds how many are open at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set, repr=False)

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
        with self._lock:
            self._events.append({"event": event, "data": {"job": self.id, **data}})
            waiters = list(self._waiters)
        for loop, wake in waiters:  # the work runs in a thread; each stream waits on its own event loop
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # that loop is closed: its stream is gone
                pass

    def step(self, text: str, progress: int | None = None) -> None:
        """Called by the work itself: one more step done."""
        if progress is not None:
            self.progress = max(self.progress, min(progress, 99))
        self.steps.append({"time": time.time(), "text": text})
        self._emit("step", text=text, progress=self.progress)

    async def events(self, timeout: float = 300, ping: float = 15) -> AsyncIterator[dict[str, Any]]:
        """Every event so far, then new ones as they come, until the job ends (a ``ping`` when quiet)."""
        loop = asyncio.get_running_loop()
        waiter = (loop, asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            seen, deadline = 0, loop.time() + timeout
            while True:
                waiter[1].clear()  # before reading: an event emitted after the read wakes the wait below
                with self._lock:
                    pending, seen = self._events[seen:], len(self._events)
                for event in pending:
                    yield event
                    if event["event"] == "done":
                        return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(waiter[1].wait(), min(ping, remaining))
                except TimeoutError:
                    yield {"event": "ping", "data": {"job": self.id}}
        finally:
            with self._lock:
                self._waiters.discard(waiter)


class StreamsFull(Exception):
    """As many job streams are open as the service serves at once."""


class JobRunner:
    def __init__(self, workers: int = 2, keep: int = 200, max_streams: int = 256):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="proximity-job")
        self._jobs: dict[str, Job] = {}
        self._keep = keep
        self._lock = threading.Lock()
        self.max_streams = max_streams  # below the server's connection cap, so other requests still get in
        self.streams = 0  # open now (touched on the event loop only)

    def stream(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """``job.events()``, counted against ``max_streams``: raises StreamsFull now, before any answer is sent."""
        if self.streams >= self.max_streams:
            raise StreamsFull(f"{self.streams} job streams are open, the most the service serves at once; "
                              f"poll GET /api/v1/jobs/{job.id} instead, or retry when one ends")
        return self._counted(job)

    async def _counted(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        self.streams += 1  # counted once started: a stream whose client left before it began never counts
        try:
            async for event in job.events():
                yield event
        finally:
            self.streams -= 1

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
